//! [`SagaStore`] for SQLite: saga executions, one row each.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};
use uuid::Uuid;

use crate::domain::ExecutionStatus;
use crate::store::{format_time, ExecutionRecord, SagaStore, StoreError};

use super::{from_text, parse_time, parse_uuid, sql_err, to_text, SqliteStore, BACKEND};

type ExecutionRow = (String, String, String, String, String, String);

fn execution_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ExecutionRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
    ))
}

fn decode_execution(row: ExecutionRow) -> Result<ExecutionRecord, StoreError> {
    let (uuid, saga, status, data, created_at, updated_at) = row;
    Ok(ExecutionRecord {
        uuid: parse_uuid(&uuid)?,
        saga,
        status: ExecutionStatus::parse(&status).ok_or_else(|| {
            StoreError::backend(BACKEND, format!("unknown saga execution status `{status}`"))
        })?,
        data: from_text(&data)?,
        created_at: parse_time(&created_at)?,
        updated_at: parse_time(&updated_at)?,
    })
}

#[async_trait]
impl SagaStore for SqliteStore {
    async fn save_execution(&self, record: &ExecutionRecord) -> Result<(), StoreError> {
        let record = record.clone();
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO saga_executions (uuid, saga, status, data, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (uuid) DO UPDATE SET saga = excluded.saga, \
                 status = excluded.status, data = excluded.data, updated_at = excluded.updated_at",
            )
            .map_err(sql_err)?
            .execute(params![
                record.uuid.to_string(),
                record.saga,
                record.status.as_str(),
                to_text(&record.data)?,
                format_time(record.created_at),
                format_time(record.updated_at)
            ])
            .map_err(sql_err)?;
            Ok(())
        })
        .await
    }

    async fn execution(&self, uuid: Uuid) -> Result<Option<ExecutionRecord>, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT uuid, saga, status, data, created_at, updated_at FROM saga_executions WHERE uuid = ?1",
            )
            .map_err(sql_err)?
            .query_row([uuid.to_string()], execution_row)
            .optional()
            .map_err(sql_err)?
            .map(decode_execution)
            .transpose()
        })
        .await
    }

    async fn executions(
        &self,
        status: Option<ExecutionStatus>,
        limit: usize,
    ) -> Result<Vec<ExecutionRecord>, StoreError> {
        let status = status.map(ExecutionStatus::as_str);
        self.read(move |conn| {
            let mut statement = conn
                .prepare_cached(
                    "SELECT uuid, saga, status, data, created_at, updated_at FROM saga_executions \
                     WHERE (?1 IS NULL OR status = ?1) ORDER BY updated_at DESC, uuid DESC LIMIT ?2",
                )
                .map_err(sql_err)?;
            let rows = statement
                .query_map(params![status, limit.min(i64::MAX as usize) as i64], execution_row)
                .map_err(sql_err)?;
            rows.map(|row| decode_execution(row.map_err(sql_err)?))
                .collect()
        })
        .await
    }

    async fn stale_executions(
        &self,
        status: ExecutionStatus,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ExecutionRecord>, StoreError> {
        let status = status.as_str();
        self.read(move |conn| {
            let mut statement = conn
                .prepare_cached(
                    "SELECT uuid, saga, status, data, created_at, updated_at FROM saga_executions \
                     WHERE status = ?1 AND updated_at < ?2 ORDER BY updated_at, uuid LIMIT ?3",
                )
                .map_err(sql_err)?;
            let rows = statement
                .query_map(
                    params![
                        status,
                        format_time(before),
                        limit.min(i64::MAX as usize) as i64
                    ],
                    execution_row,
                )
                .map_err(sql_err)?;
            rows.map(|row| decode_execution(row.map_err(sql_err)?))
                .collect()
        })
        .await
    }
}
