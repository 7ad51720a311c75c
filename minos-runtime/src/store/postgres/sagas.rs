//! [`SagaStore`] for PostgreSQL: saga executions, one row each.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde_json::Value;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::domain::ExecutionStatus;
use crate::store::{ExecutionRecord, SagaStore, StoreError};

use super::batch::Batcher;
use super::{db_error, pool_error, prepared, PostgresStore, BACKEND};

/// Saves the executions `$1..$6`, one row per uuid, in one statement (inserted or replaced).
const SAVE: &str =
    "INSERT INTO saga_executions (uuid, saga, status, data, created_at, updated_at) \
     SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::timestamptz[], \
         $6::timestamptz[]) \
     ON CONFLICT (uuid) DO UPDATE SET saga = EXCLUDED.saga, status = EXCLUDED.status, \
         data = EXCLUDED.data, updated_at = EXCLUDED.updated_at";

/// The executions whose uuids are in `$1`.
const FIND: &str = "SELECT uuid, saga, status, data, created_at, updated_at FROM saga_executions \
     WHERE uuid = ANY($1)";

/// Concurrent executions' saves and look-ups, each kind a batch at a time (see [`Batcher`]).
#[derive(Clone)]
pub(super) struct ExecutionBatchers {
    save: Batcher<ExecutionRecord, ()>,
    find: Batcher<Uuid, Option<ExecutionRecord>>,
}

impl ExecutionBatchers {
    pub(super) fn spawn(pool: &Pool) -> Self {
        let pool = Arc::new(pool.clone());
        let save = {
            let pool = Arc::clone(&pool);
            Batcher::spawn(move |records: Vec<ExecutionRecord>| {
                let pool = Arc::clone(&pool);
                async move {
                    // One row per execution, its latest save (a statement cannot change a row
                    // twice): the saves of one execution come one after the other anyway.
                    let mut latest: HashMap<Uuid, usize> = HashMap::new();
                    for (i, record) in records.iter().enumerate() {
                        latest.insert(record.uuid, i);
                    }
                    let mut rows: Vec<&ExecutionRecord> =
                        latest.values().map(|&i| &records[i]).collect();
                    // One order for every writer: two batches never wait on each other in a cycle.
                    rows.sort_by_key(|r| r.uuid);
                    let uuids: Vec<Uuid> = rows.iter().map(|r| r.uuid).collect();
                    let sagas: Vec<&str> = rows.iter().map(|r| r.saga.as_str()).collect();
                    let statuses: Vec<&str> = rows.iter().map(|r| r.status.as_str()).collect();
                    let data: Vec<&Value> = rows.iter().map(|r| &r.data).collect();
                    let created: Vec<DateTime<Utc>> = rows.iter().map(|r| r.created_at).collect();
                    let updated: Vec<DateTime<Utc>> = rows.iter().map(|r| r.updated_at).collect();
                    let client = pool.get().await.map_err(pool_error)?;
                    client
                        .execute(
                            &prepared(&client, SAVE).await?,
                            &[&uuids, &sagas, &statuses, &data, &created, &updated],
                        )
                        .await
                        .map_err(db_error)?;
                    Ok(vec![(); records.len()])
                }
            })
        };
        let find = Batcher::spawn(move |uuids: Vec<Uuid>| {
            let pool = Arc::clone(&pool);
            async move {
                let client = pool.get().await.map_err(pool_error)?;
                let rows = client
                    .query(&prepared(&client, FIND).await?, &[&uuids])
                    .await
                    .map_err(db_error)?;
                let mut found: HashMap<Uuid, ExecutionRecord> = HashMap::new();
                for row in &rows {
                    let record = decode_execution(row)?;
                    found.insert(record.uuid, record);
                }
                Ok(uuids.iter().map(|uuid| found.get(uuid).cloned()).collect())
            }
        });
        ExecutionBatchers { save, find }
    }
}

fn decode_execution(row: &Row) -> Result<ExecutionRecord, StoreError> {
    let status: String = row.get("status");
    Ok(ExecutionRecord {
        uuid: row.get("uuid"),
        saga: row.get("saga"),
        status: ExecutionStatus::parse(&status).ok_or_else(|| {
            StoreError::backend(BACKEND, format!("unknown saga execution status `{status}`"))
        })?,
        data: row.get("data"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    })
}

#[async_trait]
impl SagaStore for PostgresStore {
    async fn save_execution(&self, record: &ExecutionRecord) -> Result<(), StoreError> {
        // With the saves waiting beside it, in one statement.
        self.sagas.save.call(record.clone()).await
    }

    async fn execution(&self, uuid: Uuid) -> Result<Option<ExecutionRecord>, StoreError> {
        self.sagas.find.call(uuid).await
    }

    async fn executions(
        &self,
        status: Option<ExecutionStatus>,
        limit: usize,
    ) -> Result<Vec<ExecutionRecord>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &prepared(&client, "SELECT uuid, saga, status, data, created_at, updated_at FROM saga_executions \
                 WHERE ($1::TEXT IS NULL OR status = $1) ORDER BY updated_at DESC, uuid DESC LIMIT $2").await?,
                &[&status.map(ExecutionStatus::as_str), &(limit.min(i64::MAX as usize) as i64)],
            )
            .await
            .map_err(db_error)?;
        rows.iter().map(decode_execution).collect()
    }

    async fn stale_executions(
        &self,
        status: ExecutionStatus,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ExecutionRecord>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &prepared(
                    &client,
                    "SELECT uuid, saga, status, data, created_at, updated_at FROM saga_executions \
                 WHERE status = $1 AND updated_at < $2 ORDER BY updated_at, uuid LIMIT $3",
                )
                .await?,
                &[
                    &status.as_str(),
                    &before,
                    &(limit.min(i64::MAX as usize) as i64),
                ],
            )
            .await
            .map_err(db_error)?;
        rows.iter().map(decode_execution).collect()
    }
}
