//! [`OutboxStore`] and [`InboxStore`] for SQLite: the messages waiting to be published, and which
//! messages a consumer has handled (recorded by [`record_inbox`] in the transaction of its writes).

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};

use crate::domain::DomainMessage;
use crate::store::{format_time, InboxEntry, InboxStore, OutboxRecord, OutboxStore, StoreError};

use super::{from_text, parse_time, parse_uuid, sql_err, SqliteStore};

#[async_trait]
impl OutboxStore for SqliteStore {
    async fn pending_in(
        &self,
        ids: std::ops::Range<i64>,
        limit: usize,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let limit = limit.min(i64::MAX as usize) as i64;
        self.read(move |conn| {
            // The limit is written into the statement (a bound LIMIT is prepared again each run).
            let mut statement = conn
                .prepare_cached(&format!(
                    "SELECT id, identifier, topic, key, payload, created_at, headers FROM outbox WHERE sent_at IS NULL AND id >= ?1 AND id < ?2 ORDER BY id LIMIT {limit}"
                ))
                .map_err(sql_err)?;
            let rows = statement
                .query_map(params![ids.start, ids.end], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, String>(3)?,
                        row.get::<_, String>(4)?,
                        row.get::<_, String>(5)?,
                        row.get::<_, Option<String>>(6)?,
                    ))
                })
                .map_err(sql_err)?;
            let mut out = Vec::new();
            for row in rows {
                let (id, identifier, topic, key, payload, created_at, headers) =
                    row.map_err(sql_err)?;
                out.push(OutboxRecord {
                    id,
                    message: DomainMessage {
                        identifier: parse_uuid(&identifier)?,
                        topic,
                        key,
                        content: from_text(&payload)?,
                        headers: headers
                            .and_then(|h| serde_json::from_str(&h).ok())
                            .unwrap_or_default(),
                    },
                    created_at: parse_time(&created_at)?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn backlog(&self) -> Result<(u64, Option<chrono::DateTime<chrono::Utc>>), StoreError> {
        self.read(move |conn| {
            let (count, oldest): (i64, Option<String>) = conn
                .query_row(
                    "SELECT count(*), min(created_at) FROM outbox WHERE sent_at IS NULL",
                    [],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .map_err(sql_err)?;
            Ok((
                count.max(0) as u64,
                oldest.as_deref().map(parse_time).transpose()?,
            ))
        })
        .await
    }

    async fn mark_sent(&self, ids: &[i64]) -> Result<(), StoreError> {
        let ids = ids.to_vec();
        self.write(move |tx| {
            let now = format_time(crate::store::now());
            let mut update = tx
                .prepare_cached("UPDATE outbox SET sent_at = ?1 WHERE id = ?2 AND sent_at IS NULL")
                .map_err(sql_err)?;
            for id in ids {
                update.execute(params![now, id]).map_err(sql_err)?;
            }
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl InboxStore for SqliteStore {
    async fn is_processed(&self, entry: &InboxEntry) -> Result<bool, StoreError> {
        let entry = entry.clone();
        self.read(move |conn| {
            conn.prepare_cached("SELECT 1 FROM inbox WHERE consumer = ?1 AND identifier = ?2")
                .map_err(sql_err)?
                .query_row(
                    params![entry.consumer, entry.identifier.to_string()],
                    |_| Ok(()),
                )
                .optional()
                .map(|found| found.is_some())
                .map_err(sql_err)
        })
        .await
    }

    async fn recorded_reply(
        &self,
        entry: &InboxEntry,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let entry = entry.clone();
        let text: Option<Option<String>> = self
            .read(move |conn| {
                conn.prepare_cached(
                    "SELECT reply FROM inbox WHERE consumer = ?1 AND identifier = ?2",
                )
                .map_err(sql_err)?
                .query_row(
                    params![entry.consumer, entry.identifier.to_string()],
                    |row| row.get(0),
                )
                .optional()
                .map_err(sql_err)
            })
            .await?;
        Ok(text
            .flatten()
            .and_then(|text| serde_json::from_str(&text).ok()))
    }
}

/// Records that `entry`'s message was handled; [`StoreError::AlreadyProcessed`] if it already was.
pub(super) fn record_inbox(
    tx: &rusqlite::Connection,
    entry: &InboxEntry,
) -> Result<(), StoreError> {
    let inserted = tx
        .prepare_cached(
            "INSERT INTO inbox (consumer, identifier, processed_at, reply) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (consumer, identifier) DO NOTHING",
        )
        .map_err(sql_err)?
        .execute(params![
            entry.consumer,
            entry.identifier.to_string(),
            format_time(crate::store::now()),
            crate::store::stored_reply_text(entry)
        ])
        .map_err(sql_err)?;
    if inserted == 0 {
        return Err(StoreError::AlreadyProcessed {
            consumer: entry.consumer.clone(),
            identifier: entry.identifier,
        });
    }
    Ok(())
}
