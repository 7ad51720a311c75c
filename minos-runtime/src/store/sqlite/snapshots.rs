//! [`SnapshotStore`] for SQLite, and the snapshot reading the writer shares.

use async_trait::async_trait;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::store::{Query, Snapshot, SnapshotStore, StoreError};

use super::{from_text, parse_time, parse_uuid, query, sql_err, SqliteStore};

type SnapshotRow = (String, String, i64, Option<String>, String, String);

const SNAPSHOT_COLUMNS: &str = "uuid, name, version, data, created_at, updated_at";

fn snapshot_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<SnapshotRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
    ))
}

fn decode_snapshot(row: SnapshotRow) -> Result<Snapshot, StoreError> {
    let (uuid, name, version, data, created_at, updated_at) = row;
    Ok(Snapshot {
        uuid: parse_uuid(&uuid)?,
        name,
        version: version as u64,
        created_at: parse_time(&created_at)?,
        updated_at: parse_time(&updated_at)?,
        data: data
            .map(|d| from_text::<Map<String, Value>>(&d))
            .transpose()?,
    })
}

/// The snapshot of the root `uuid`, whatever its type.
pub(super) fn load_snapshot(conn: &Connection, uuid: &str) -> Result<Option<Snapshot>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE uuid = ?1"
    ))
    .map_err(sql_err)?
    .query_row([uuid], snapshot_row)
    .optional()
    .map_err(sql_err)?
    .map(decode_snapshot)
    .transpose()
}

#[async_trait]
impl SnapshotStore for SqliteStore {
    async fn snapshot(&self, name: &str, uuid: Uuid) -> Result<Option<Snapshot>, StoreError> {
        let name = name.to_owned();
        self.read(
            move |conn| Ok(load_snapshot(conn, &uuid.to_string())?.filter(|s| s.name == name)),
        )
        .await
    }

    async fn find(&self, name: &str, query: &Query) -> Result<Vec<Snapshot>, StoreError> {
        query.validate()?;
        let mut builder = query::Builder::default();
        let name_param = builder.bind(SqlValue::Text(name.to_owned()));
        let filter = builder.condition(&query.condition);
        let mut sql = format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE name = {name_param} AND data IS NOT NULL AND {filter} ORDER BY "
        );
        if let Some(ordering) = &query.ordering {
            sql.push_str(&builder.ordering(ordering));
        }
        sql.push_str("rowid");
        if let Some(limit) = query.limit {
            // A literal: a bound LIMIT makes SQLite prepare the statement again on every run.
            sql.push_str(&format!(" LIMIT {}", limit.min(i64::MAX as usize)));
        }
        let args = builder.args;
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(&sql).map_err(sql_err)?;
            let rows = statement
                .query_map(rusqlite::params_from_iter(args), snapshot_row)
                .map_err(sql_err)?;
            rows.map(|row| decode_snapshot(row.map_err(sql_err)?))
                .collect()
        })
        .await
    }
}
