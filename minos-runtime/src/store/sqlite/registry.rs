//! [`RegistryStore`] for SQLite: one row per service instance, and the registry's version.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, Transaction};

use crate::store::{format_time, InstanceRecord, RegistryStore, StoreError};

use super::{from_text, parse_time, sql_err, to_text, SqliteStore};

const COLUMNS: &str =
    "service, instance, address, port, endpoints, status, healthy, registered_at, last_seen";

type InstanceRow = (
    String,
    String,
    String,
    i64,
    String,
    bool,
    bool,
    String,
    String,
);

fn instance_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<InstanceRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
        row.get(8)?,
    ))
}

fn decode(row: InstanceRow) -> Result<InstanceRecord, StoreError> {
    let (service, instance, address, port, endpoints, status, healthy, registered_at, last_seen) =
        row;
    Ok(InstanceRecord {
        service,
        instance,
        address,
        port: u16::try_from(port).unwrap_or_default(),
        endpoints: from_text(&endpoints)?,
        status,
        healthy,
        registered_at: parse_time(&registered_at)?,
        last_seen: parse_time(&last_seen)?,
    })
}

/// Bumps the registry's version inside `tx` and returns it.
fn bump(tx: &Transaction<'_>) -> Result<u64, StoreError> {
    tx.query_row(
        "UPDATE registry_version SET version = version + 1 WHERE id = 1 RETURNING version",
        [],
        |row| row.get::<_, i64>(0),
    )
    .map(|version| version as u64)
    .map_err(sql_err)
}

fn select(
    conn: &Connection,
    filter: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<InstanceRecord>, StoreError> {
    let mut statement = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM registry_instances {filter} ORDER BY service, instance"
        ))
        .map_err(sql_err)?;
    let rows = statement.query_map(args, instance_row).map_err(sql_err)?;
    rows.map(|row| decode(row.map_err(sql_err)?)).collect()
}

#[async_trait]
impl RegistryStore for SqliteStore {
    async fn register_instance(&self, record: &InstanceRecord) -> Result<u64, StoreError> {
        let record = record.clone();
        let endpoints = to_text(&record.endpoints)?;
        self.with(move |conn| {
            let tx = conn.transaction().map_err(sql_err)?;
            tx.execute(
                &format!(
                    "INSERT INTO registry_instances ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                     ON CONFLICT (service, instance) DO UPDATE SET address = excluded.address, \
                     port = excluded.port, endpoints = excluded.endpoints, status = excluded.status, \
                     healthy = excluded.healthy, registered_at = excluded.registered_at, \
                     last_seen = excluded.last_seen"
                ),
                params![
                    record.service,
                    record.instance,
                    record.address,
                    i64::from(record.port),
                    endpoints,
                    record.status,
                    record.healthy,
                    format_time(record.registered_at),
                    format_time(record.last_seen)
                ],
            )
            .map_err(sql_err)?;
            let version = bump(&tx)?;
            tx.commit().map_err(sql_err)?;
            Ok(version)
        })
        .await
    }

    async fn touch_instance(
        &self,
        service: &str,
        instance: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let (service, instance) = (service.to_owned(), instance.to_owned());
        self.with(move |conn| {
            let changed = conn
                .execute(
                    "UPDATE registry_instances SET last_seen = ?3 WHERE service = ?1 AND instance = ?2",
                    params![service, instance, format_time(at)],
                )
                .map_err(sql_err)?;
            Ok(changed > 0)
        })
        .await
    }

    async fn set_instance_health(
        &self,
        service: &str,
        instance: &str,
        healthy: bool,
    ) -> Result<bool, StoreError> {
        let (service, instance) = (service.to_owned(), instance.to_owned());
        self.with(move |conn| {
            let tx = conn.transaction().map_err(sql_err)?;
            let current: Option<bool> = tx
                .query_row(
                    "SELECT healthy FROM registry_instances WHERE service = ?1 AND instance = ?2",
                    params![service, instance],
                    |row| row.get(0),
                )
                .ok();
            let Some(current) = current else {
                return Ok(false);
            };
            if current != healthy {
                tx.execute(
                    "UPDATE registry_instances SET healthy = ?3 WHERE service = ?1 AND instance = ?2",
                    params![service, instance, healthy],
                )
                .map_err(sql_err)?;
                bump(&tx)?;
            }
            tx.commit().map_err(sql_err)?;
            Ok(true)
        })
        .await
    }

    async fn remove_instances(
        &self,
        service: &str,
        instance: Option<&str>,
    ) -> Result<usize, StoreError> {
        let (service, instance) = (service.to_owned(), instance.map(str::to_owned));
        self.with(move |conn| {
            let tx = conn.transaction().map_err(sql_err)?;
            let removed = tx
                .execute(
                    "DELETE FROM registry_instances WHERE service = ?1 AND (?2 IS NULL OR instance = ?2)",
                    params![service, instance],
                )
                .map_err(sql_err)?;
            if removed > 0 {
                bump(&tx)?;
            }
            tx.commit().map_err(sql_err)?;
            Ok(removed)
        })
        .await
    }

    async fn expire_instances(
        &self,
        before: DateTime<Utc>,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        self.with(move |conn| {
            let tx = conn.transaction().map_err(sql_err)?;
            let before = format_time(before);
            let expired = select(&tx, "WHERE last_seen < ?1", &[&before])?;
            if !expired.is_empty() {
                tx.execute(
                    "DELETE FROM registry_instances WHERE last_seen < ?1",
                    params![before],
                )
                .map_err(sql_err)?;
                bump(&tx)?;
            }
            tx.commit().map_err(sql_err)?;
            Ok(expired)
        })
        .await
    }

    async fn registry(&self) -> Result<(u64, Vec<InstanceRecord>), StoreError> {
        self.with(move |conn| {
            let tx = conn.transaction().map_err(sql_err)?;
            let version: i64 = tx
                .query_row(
                    "SELECT version FROM registry_version WHERE id = 1",
                    [],
                    |row| row.get(0),
                )
                .map_err(sql_err)?;
            let instances = select(&tx, "", &[])?;
            tx.commit().map_err(sql_err)?;
            Ok((version as u64, instances))
        })
        .await
    }
}
