//! [`SnapshotStore`] for PostgreSQL, and the snapshot row decoding the batch writer shares.

use async_trait::async_trait;
use serde_json::Value;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::store::{Query, Snapshot, SnapshotStore, StoreError};

use super::{db_error, prepared, query, PostgresStore, BACKEND};

/// The columns [`decode_snapshot`] reads.
pub(super) const SNAPSHOT_COLUMNS: &str = "uuid, name, version, data, created_at, updated_at";

pub(super) fn decode_snapshot(row: &Row) -> Result<Snapshot, StoreError> {
    let data: Option<Value> = row.get("data");
    let data = match data {
        None => None,
        Some(Value::Object(map)) => Some(map),
        Some(_) => {
            return Err(StoreError::backend(
                BACKEND,
                "a snapshot is not a JSON object",
            ))
        }
    };
    Ok(Snapshot {
        uuid: row.get("uuid"),
        name: row.get("name"),
        version: row.get::<_, i64>("version") as u64,
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
        data,
    })
}

#[async_trait]
impl SnapshotStore for PostgresStore {
    async fn snapshot(&self, name: &str, uuid: Uuid) -> Result<Option<Snapshot>, StoreError> {
        let client = self.client().await?;
        let statement = prepared(
            &client,
            &format!("SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE uuid = $1 AND name = $2"),
        )
        .await?;
        let row = client
            .query_opt(&statement, &[&uuid, &name])
            .await
            .map_err(db_error)?;
        row.as_ref().map(decode_snapshot).transpose()
    }

    async fn find(&self, name: &str, query: &Query) -> Result<Vec<Snapshot>, StoreError> {
        query.validate()?;
        let mut builder = query::Builder::default();
        let name_param = builder.bind(name.to_owned());
        let condition = builder.condition(&query.condition);
        let mut sql = format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE name = {name_param} AND data IS NOT NULL AND {condition} ORDER BY "
        );
        if let Some(ordering) = &query.ordering {
            sql.push_str(&builder.ordering(ordering));
        }
        sql.push_str("seq");
        if let Some(limit) = query.limit {
            sql.push_str(&format!(
                " LIMIT {}",
                builder.bind(limit.min(i64::MAX as usize) as i64)
            ));
        }
        let client = self.client().await?;
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            builder.params.iter().map(|p| p.as_ref() as _).collect();
        let rows = client.query(&sql, &params).await.map_err(db_error)?;
        rows.iter().map(decode_snapshot).collect()
    }
}
