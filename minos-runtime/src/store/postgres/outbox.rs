//! [`OutboxStore`] and [`InboxStore`] for PostgreSQL: the messages waiting to be published, the relay
//! lease, and which messages a consumer has handled.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{DomainMessage, Event};
use crate::store::{
    FeedTicket, InboxEntry, InboxStore, OutboxRecord, OutboxStore, RelayLease, StoreError,
};

use super::writer::Written;
use super::{db_error, prepared, PostgresStore};

impl PostgresStore {
    /// The relay's feed ticket for a transaction that writes `appends`, when they have messages: taken
    /// before their outbox rows take their ids, completed with them once committed, dropped when the
    /// commit fails (the relay then reads the table).
    pub(super) fn outbox_ticket(
        &self,
        appends: &[(Event, Vec<DomainMessage>)],
    ) -> Option<FeedTicket<'_>> {
        appends
            .iter()
            .any(|(_, messages)| !messages.is_empty())
            .then(|| self.feed.ticket())
    }
}

/// [`fed_rows`] for a transaction's `appends` when it holds a ticket (their messages copied).
pub(super) fn fed_copy(
    ticket: Option<&FeedTicket<'_>>,
    appends: &[(Event, Vec<DomainMessage>)],
    written: &Written,
) -> Option<Vec<OutboxRecord>> {
    ticket?;
    fed_rows(
        appends.iter().map(|(e, m)| (e.created_at, m.clone())),
        written,
    )
}

/// The outbox rows `written` committed, as the table holds them (the relay's feed): the messages of
/// each append (with its event's time) that was written, each with its event's log position. `None`
/// when one is missing (the relay then reads the table).
pub(super) fn fed_rows(
    appends: impl IntoIterator<Item = (DateTime<Utc>, Vec<DomainMessage>)>,
    written: &Written,
) -> Option<Vec<OutboxRecord>> {
    use chrono::SubsecRound;
    let ids: HashMap<Uuid, i64> = written
        .outbox
        .iter()
        .map(|&(id, identifier)| (identifier, id))
        .collect();
    let mut rows = Vec::with_capacity(ids.len());
    for ((created_at, messages), result) in appends.into_iter().zip(&written.results) {
        let Ok(stored) = result else {
            continue;
        };
        let position = format!("{}.{}", stored.commit, stored.id);
        for mut message in messages {
            let id = *ids.get(&message.identifier)?;
            message.headers.insert("position".into(), position.clone());
            rows.push(OutboxRecord {
                id,
                message,
                created_at: created_at.trunc_subsecs(6),
            });
        }
    }
    (rows.len() == written.outbox.len()).then_some(rows)
}

#[async_trait]
impl OutboxStore for PostgresStore {
    async fn pending_in(
        &self,
        ids: std::ops::Range<i64>,
        limit: usize,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let client = self.client().await?;
        let statement = prepared(
            &client,
            "SELECT id, identifier, topic, key, payload, created_at, headers FROM outbox \
                 WHERE sent_at IS NULL AND id >= $2 AND id < $3 ORDER BY id LIMIT $1",
        )
        .await?;
        let limit = limit.min(i64::MAX as usize) as i64;
        let rows = client
            .query(&statement, &[&limit, &ids.start, &ids.end])
            .await
            .map_err(db_error)?;
        Ok(rows
            .iter()
            .map(|row| OutboxRecord {
                id: row.get("id"),
                message: DomainMessage {
                    identifier: row.get("identifier"),
                    topic: row.get("topic"),
                    key: row.get("key"),
                    content: row.get("payload"),
                    headers: row
                        .get::<_, Option<serde_json::Value>>("headers")
                        .and_then(|h| serde_json::from_value(h).ok())
                        .unwrap_or_default(),
                },
                created_at: row.get("created_at"),
            })
            .collect())
    }

    async fn backlog(&self) -> Result<(u64, Option<chrono::DateTime<chrono::Utc>>), StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                &prepared(
                    &client,
                    "SELECT count(*), min(created_at) FROM outbox WHERE sent_at IS NULL",
                )
                .await?,
                &[],
            )
            .await
            .map_err(db_error)?;
        Ok((row.get::<_, i64>(0).max(0) as u64, row.get(1)))
    }

    fn feed(&self) -> Option<std::sync::Arc<crate::store::CommitFeed>> {
        Some(std::sync::Arc::clone(&self.feed))
    }

    async fn relay_lease(&self) -> Result<Option<RelayLease>, StoreError> {
        let Some(lock) = self.try_relay_lock().await? else {
            return Ok(None);
        };
        // Read once the lock is held (on its connection): whatever a relay before this one published
        // was committed by then.
        let last = match lock.client() {
            Some(client) => client
                .query_one("SELECT COALESCE(max(id), 0) FROM outbox", &[])
                .await
                .map_err(db_error)?
                .get(0),
            None => return Ok(Some(RelayLease::guarded(lock))),
        };
        Ok(Some(RelayLease::guarded(lock).after(last)))
    }

    async fn mark_sent(&self, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        // One prepared statement, without waiting for the WAL flush (`synchronous_commit` off for its
        // own transaction only): a mark lost to a database crash only has the message published again,
        // and consumers skip it by their inbox.
        client
            .execute(
                &prepared(
                    &client,
                    "UPDATE outbox SET sent_at = now() \
                     FROM (SELECT set_config('synchronous_commit', 'off', true)) AS relaxed \
                     WHERE id = ANY($1) AND sent_at IS NULL",
                )
                .await?,
                &[&ids],
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }
}

#[async_trait]
impl InboxStore for PostgresStore {
    async fn is_processed(&self, entry: &InboxEntry) -> Result<bool, StoreError> {
        let key = (entry.consumer.clone(), entry.identifier);
        if self.inbox.deferred.holds(&key) {
            return Ok(true);
        }
        // With the look-ups waiting beside it, in one statement.
        self.inbox.found.call(key).await
    }

    async fn settle(&self) -> Result<(), StoreError> {
        self.inbox.deferred.settle().await
    }

    async fn recorded_reply(
        &self,
        entry: &InboxEntry,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &prepared(
                    &client,
                    "SELECT reply FROM inbox WHERE consumer = $1 AND identifier = $2",
                )
                .await?,
                &[&entry.consumer, &entry.identifier],
            )
            .await
            .map_err(db_error)?;
        Ok(row
            .and_then(|row| row.get::<_, Option<String>>(0))
            .and_then(|text| serde_json::from_str(&text).ok()))
    }
}
