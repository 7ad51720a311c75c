//! [`SagaStore`] for PostgreSQL: saga executions, one row each.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;

use crate::domain::ExecutionStatus;
use crate::store::{ExecutionRecord, SagaStore, StoreError};

use super::{db_error, prepared, PostgresStore, BACKEND};

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
        let client = self.client().await?;
        client
            .execute(
                &prepared(&client, "INSERT INTO saga_executions (uuid, saga, status, data, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (uuid) DO UPDATE SET saga = EXCLUDED.saga, \
                 status = EXCLUDED.status, data = EXCLUDED.data, updated_at = EXCLUDED.updated_at").await?,
                &[
                    &record.uuid,
                    &record.saga,
                    &record.status.as_str(),
                    &record.data,
                    &record.created_at,
                    &record.updated_at,
                ],
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn execution(&self, uuid: Uuid) -> Result<Option<ExecutionRecord>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &prepared(&client, "SELECT uuid, saga, status, data, created_at, updated_at FROM saga_executions WHERE uuid = $1").await?,
                &[&uuid],
            )
            .await
            .map_err(db_error)?;
        row.as_ref().map(decode_execution).transpose()
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
