//! [`RegistryStore`] for PostgreSQL: one row per service instance and the registry's version, shared
//! by every registry replica on the database.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use crate::store::{InstanceRecord, RegistryStore, StoreError};

use super::{db_error, PostgresStore};

const COLUMNS: &str =
    "service, instance, address, port, endpoints, status, healthy, registered_at, last_seen";

fn decode(row: &Row) -> InstanceRecord {
    InstanceRecord {
        service: row.get("service"),
        instance: row.get("instance"),
        address: row.get("address"),
        port: u16::try_from(row.get::<_, i32>("port")).unwrap_or_default(),
        endpoints: row.get("endpoints"),
        status: row.get("status"),
        healthy: row.get("healthy"),
        registered_at: row.get("registered_at"),
        last_seen: row.get("last_seen"),
    }
}

/// Bumps the registry's version in the transaction `client` runs and returns it.
async fn bump<C: GenericClient + Sync>(client: &C) -> Result<u64, StoreError> {
    let row = client
        .query_one(
            "UPDATE registry_version SET version = version + 1 WHERE id = 1 RETURNING version",
            &[],
        )
        .await
        .map_err(db_error)?;
    Ok(row.get::<_, i64>(0) as u64)
}

#[async_trait]
impl RegistryStore for PostgresStore {
    async fn register_instance(&self, record: &InstanceRecord) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        tx.execute(
            &format!(
                "INSERT INTO registry_instances ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (service, instance) DO UPDATE SET address = EXCLUDED.address, \
                 port = EXCLUDED.port, endpoints = EXCLUDED.endpoints, status = EXCLUDED.status, \
                 healthy = EXCLUDED.healthy, registered_at = EXCLUDED.registered_at, \
                 last_seen = EXCLUDED.last_seen"
            ),
            &[
                &record.service,
                &record.instance,
                &record.address,
                &i32::from(record.port),
                &record.endpoints,
                &record.status,
                &record.healthy,
                &record.registered_at,
                &record.last_seen,
            ],
        )
        .await
        .map_err(db_error)?;
        let version = bump(&tx).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(version)
    }

    async fn touch_instance(
        &self,
        service: &str,
        instance: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let changed = client
            .execute(
                "UPDATE registry_instances SET last_seen = $3 WHERE service = $1 AND instance = $2",
                &[&service, &instance, &at],
            )
            .await
            .map_err(db_error)?;
        Ok(changed > 0)
    }

    async fn set_instance_health(
        &self,
        service: &str,
        instance: &str,
        healthy: bool,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let current = tx
            .query_opt(
                "SELECT healthy FROM registry_instances WHERE service = $1 AND instance = $2 FOR UPDATE",
                &[&service, &instance],
            )
            .await
            .map_err(db_error)?;
        let Some(current) = current else {
            return Ok(false);
        };
        if current.get::<_, bool>(0) != healthy {
            tx.execute(
                "UPDATE registry_instances SET healthy = $3 WHERE service = $1 AND instance = $2",
                &[&service, &instance, &healthy],
            )
            .await
            .map_err(db_error)?;
            bump(&tx).await?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(true)
    }

    async fn remove_instances(
        &self,
        service: &str,
        instance: Option<&str>,
    ) -> Result<usize, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let removed = tx
            .execute(
                "DELETE FROM registry_instances WHERE service = $1 AND ($2::TEXT IS NULL OR instance = $2)",
                &[&service, &instance],
            )
            .await
            .map_err(db_error)?;
        if removed > 0 {
            bump(&tx).await?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(removed as usize)
    }

    async fn expire_instances(
        &self,
        before: DateTime<Utc>,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let rows = tx
            .query(
                &format!("DELETE FROM registry_instances WHERE last_seen < $1 RETURNING {COLUMNS}"),
                &[&before],
            )
            .await
            .map_err(db_error)?;
        if !rows.is_empty() {
            bump(&tx).await?;
        }
        tx.commit().await.map_err(db_error)?;
        let mut expired: Vec<InstanceRecord> = rows.iter().map(decode).collect();
        expired.sort_by(|a, b| (&a.service, &a.instance).cmp(&(&b.service, &b.instance)));
        Ok(expired)
    }

    async fn registry(&self) -> Result<(u64, Vec<InstanceRecord>), StoreError> {
        let mut client = self.client().await?;
        // One snapshot of the version and the rows.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(db_error)?;
        let version: i64 = tx
            .query_one("SELECT version FROM registry_version WHERE id = 1", &[])
            .await
            .map_err(db_error)?
            .get(0);
        let rows = tx
            .query(
                &format!("SELECT {COLUMNS} FROM registry_instances ORDER BY service, instance"),
                &[],
            )
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok((version as u64, rows.iter().map(decode).collect()))
    }
}
