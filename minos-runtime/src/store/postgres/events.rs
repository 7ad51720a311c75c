//! [`EventStore`] for PostgreSQL: appends go to the batch writer, units of work commit in a transaction of
//! their own, and events are read in global order.

use async_trait::async_trait;
use tokio::sync::oneshot;

use crate::domain::{Action, DomainMessage, Event};
use crate::store::{EventFilter, EventStore, InboxEntry, Position, StoreError, StoredEvent};

use super::inbox::record_request;
use super::outbox::fed_copy;
use super::writer::{commit_written, AppendRequest};
use super::{db_error, prepared, query, PostgresStore, BACKEND};

/// An inbox insert that changed no row found the message handled already.
fn recorded(inserted: u64, entry: &InboxEntry) -> Result<(), StoreError> {
    match inserted {
        0 => Err(StoreError::AlreadyProcessed {
            consumer: entry.consumer.clone(),
            identifier: entry.identifier,
        }),
        _ => Ok(()),
    }
}

#[async_trait]
impl EventStore for PostgresStore {
    async fn append(
        &self,
        event: &Event,
        messages: &[DomainMessage],
    ) -> Result<StoredEvent, StoreError> {
        let (reply, answer) = oneshot::channel();
        let request = AppendRequest {
            event: event.clone(),
            messages: messages.to_vec(),
            reply,
        };
        self.appends
            .send(request)
            .map_err(|_| StoreError::backend(BACKEND, "the append writers stopped"))?;
        answer
            .await
            .map_err(|_| StoreError::backend(BACKEND, "the append writer dropped the request"))?
    }

    async fn commit_unit(
        &self,
        appends: &[(Event, Vec<DomainMessage>)],
        inbox: Option<&InboxEntry>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        if let ([(event, messages)], None) = (appends, inbox) {
            // One event and no inbox entry (a create or save over HTTP) is an append: it joins the
            // batch writers' next statement with the appends waiting beside it.
            return Ok(vec![self.append(event, messages).await?]);
        }
        if let (true, Some(entry @ InboxEntry { reply: None, .. })) = (appends.is_empty(), inbox) {
            // Only an inbox entry, without a reply (a handler of an event that wrote nothing): held,
            // and recorded with the others of the next few milliseconds in one statement.
            return self.inbox.deferred.hold(entry).map(|()| Vec::new());
        }
        // A copy of a message whose entry is held (not in the inbox yet) is refused here.
        self.inbox.deferred.refuse_held(inbox)?;
        if let (true, Some(entry)) = (appends.is_empty(), inbox) {
            // Only an inbox entry (a handler that wrote nothing, a refused or parked message): it
            // joins the entries waiting beside it in one statement, whose own transaction does not
            // wait for the WAL flush. Lost to a database crash, the message is handled again, as
            // at-least-once delivery allows; no write can be lost or doubled.
            let inserted = self.inbox.record.call(record_request(entry)).await?;
            return recorded(u64::from(inserted), entry).map(|()| Vec::new());
        }
        let mut client = self.client().await?;
        // Dropping `tx` on an early return rolls everything back.
        let tx = client.transaction().await.map_err(db_error)?;
        if let Some(entry) = inbox {
            let inserted = tx
                .execute(
                    &prepared(&tx, "INSERT INTO inbox (consumer, identifier, reply) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING").await?,
                    &[&entry.consumer, &entry.identifier, &crate::store::stored_reply_text(entry)],
                )
                .await
                .map_err(db_error)?;
            recorded(inserted, entry)?;
        }
        let ticket = self.outbox_ticket(appends);
        let mut stored = Vec::with_capacity(appends.len());
        let mut fed = None;
        if !appends.is_empty() {
            let items: Vec<(&Event, &[DomainMessage])> =
                appends.iter().map(|(e, m)| (e, m.as_slice())).collect();
            let written = commit_written(&tx, &items).await?;
            fed = fed_copy(ticket.as_ref(), appends, &written);
            for result in written.results {
                stored.push(result?);
            }
        }
        tx.commit().await.map_err(db_error)?;
        if let (Some(ticket), Some(rows)) = (ticket, fed) {
            ticket.complete(rows);
        }
        Ok(stored)
    }

    async fn events(&self, filter: &EventFilter) -> Result<Vec<StoredEvent>, StoreError> {
        let client = self.client().await?;
        let mut sql = String::from(
            "SELECT id, xact, uuid, name, version, action, data, created_at FROM events WHERE TRUE",
        );
        let mut builder = query::Builder::default();
        if let Some(uuid) = filter.uuid {
            sql.push_str(&format!(" AND uuid = {}", builder.bind(uuid)));
        }
        if let Some(name) = &filter.name {
            sql.push_str(&format!(" AND name = {}", builder.bind(name.clone())));
        }
        if let Some(after) = filter.after_id {
            sql.push_str(&format!(" AND id > {}", builder.bind(after)));
        }
        sql.push_str(" ORDER BY id");
        if let Some(limit) = filter.limit {
            sql.push_str(&format!(
                " LIMIT {}",
                builder.bind(limit.min(i64::MAX as usize) as i64)
            ));
        }
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            builder.params.iter().map(|p| p.as_ref() as _).collect();
        // At most 16 shapes of this statement, each cached once per connection.
        let rows = client
            .query(&prepared(&client, &sql).await?, &params)
            .await
            .map_err(db_error)?;
        rows.iter().map(decode_event).collect()
    }

    async fn log(
        &self,
        name: &str,
        after: Position,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let client = self.client().await?;
        let limit = limit.min(i64::MAX as usize) as i64;
        let rows = client
            .query(
                &prepared(
                    &client,
                    "SELECT id, xact, uuid, name, version, action, data, created_at FROM events \
                 WHERE name = $1 AND (xact, id) > ($2, $3) \
                   AND xact < pg_snapshot_xmin(pg_current_snapshot())::text::bigint \
                 ORDER BY xact, id LIMIT $4",
                )
                .await?,
                &[&name, &after.commit, &after.id, &limit],
            )
            .await
            .map_err(db_error)?;
        rows.iter().map(decode_event).collect()
    }

    async fn log_behind(&self, name: &str, after: Position) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                &prepared(
                    &client,
                    "SELECT COUNT(*) FROM events WHERE name = $1 AND (xact, id) > ($2, $3)",
                )
                .await?,
                &[&name, &after.commit, &after.id],
            )
            .await
            .map_err(db_error)?;
        Ok(row.get::<_, i64>(0) as u64)
    }
}

fn decode_event(row: &tokio_postgres::Row) -> Result<StoredEvent, StoreError> {
    let action: String = row.get("action");
    Ok(StoredEvent {
        id: row.get("id"),
        commit: row.get("xact"),
        event: Event {
            uuid: row.get("uuid"),
            name: row.get("name"),
            version: row.get::<_, i64>("version") as u64,
            action: Action::parse(&action).ok_or_else(|| {
                StoreError::backend(BACKEND, format!("unknown action `{action}`"))
            })?,
            created_at: row.get("created_at"),
            fields_diff: serde_json::from_value(row.get("data"))
                .map_err(|e| StoreError::Domain(crate::domain::DomainError::Json(e)))?,
        },
    })
}
