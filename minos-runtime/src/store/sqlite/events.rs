//! [`EventStore`] for SQLite: appends go to the writer thread, units of work commit in a transaction of
//! their own, and events are read in global order.

use async_trait::async_trait;
use rusqlite::types::Value as SqlValue;
use rusqlite::Connection;

use crate::domain::{Action, DomainMessage, Event};
use crate::store::{EventFilter, EventStore, InboxEntry, StoreError, StoredEvent};

use super::outbox::record_inbox;
use super::writer::{append_tx, Append};
use super::{from_text, parse_time, parse_uuid, sql_err, SqliteStore, BACKEND};

/// Appends every event and records the inbox entry, inside the writer's savepoint: all or nothing.
fn commit_unit_in(
    tx: &Connection,
    appends: Vec<Append>,
    inbox: Option<&InboxEntry>,
) -> Result<Vec<StoredEvent>, StoreError> {
    if let Some(entry) = inbox {
        record_inbox(tx, entry)?;
    }
    let mut stored = Vec::with_capacity(appends.len());
    for append in appends {
        // An error rolls the savepoint, so everything here, back.
        let id = append_tx(tx, &append)?;
        stored.push(append.stored(id));
    }
    Ok(stored)
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn append(
        &self,
        event: &Event,
        messages: &[DomainMessage],
    ) -> Result<StoredEvent, StoreError> {
        let append = Append::new(event.clone(), messages)?;
        // It reads the snapshot and checks the version before it writes anything.
        self.write_checked(move |tx| {
            let id = append_tx(tx, &append)?;
            Ok(append.stored(id))
        })
        .await
    }

    async fn commit_unit(
        &self,
        appends: &[(Event, Vec<DomainMessage>)],
        inbox: Option<&InboxEntry>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let appends = appends
            .iter()
            .map(|(event, messages)| Append::new(event.clone(), messages))
            .collect::<Result<Vec<_>, _>>()?;
        // A lone inbox entry, or a lone append, fails before it changes anything: no savepoint.
        let checked = appends.len() + usize::from(inbox.is_some()) <= 1;
        let inbox = inbox.cloned();
        let work = move |tx: &Connection| commit_unit_in(tx, appends, inbox.as_ref());
        match checked {
            true => self.write_checked(work).await,
            false => self.write(work).await,
        }
    }

    async fn events(&self, filter: &EventFilter) -> Result<Vec<StoredEvent>, StoreError> {
        let (sql, args) = select_events(filter.clone());
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(&sql).map_err(sql_err)?;
            let rows = statement
                .query_map(rusqlite::params_from_iter(args), |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, i64>(3)?,
                        row.get::<_, String>(4)?,
                        row.get::<_, String>(5)?,
                        row.get::<_, String>(6)?,
                    ))
                })
                .map_err(sql_err)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(decode_event(row.map_err(sql_err)?)?);
            }
            Ok(out)
        })
        .await
    }

    async fn log_behind(
        &self,
        name: &str,
        after: crate::store::Position,
    ) -> Result<u64, StoreError> {
        let name = name.to_owned();
        self.read(move |conn| {
            conn.prepare_cached("SELECT COUNT(*) FROM events WHERE name = ?1 AND id > ?2")
                .and_then(|mut s| {
                    s.query_row(rusqlite::params![name, after.id], |r| r.get::<_, i64>(0))
                })
                .map(|n| n as u64)
                .map_err(sql_err)
        })
        .await
    }
}

/// The query reading the events `filter` selects, and its parameters.
fn select_events(filter: EventFilter) -> (String, Vec<SqlValue>) {
    let mut sql = String::from(
        "SELECT id, uuid, name, version, action, data, created_at FROM events WHERE 1 = 1",
    );
    let mut args: Vec<SqlValue> = Vec::new();
    if let Some(uuid) = filter.uuid {
        args.push(SqlValue::Text(uuid.to_string()));
        sql.push_str(&format!(" AND uuid = ?{}", args.len()));
    }
    if let Some(name) = filter.name {
        args.push(SqlValue::Text(name));
        sql.push_str(&format!(" AND name = ?{}", args.len()));
    }
    if let Some(after) = filter.after_id {
        args.push(SqlValue::Integer(after));
        sql.push_str(&format!(" AND id > ?{}", args.len()));
    }
    sql.push_str(" ORDER BY id");
    if let Some(limit) = filter.limit {
        // A literal, not a parameter: SQLite prepares a statement with a bound LIMIT again on every
        // run. An integer is safe to write into the statement.
        sql.push_str(&format!(" LIMIT {}", limit.min(i64::MAX as usize)));
    }
    (sql, args)
}

type EventRow = (i64, String, String, i64, String, String, String);

fn decode_event(row: EventRow) -> Result<StoredEvent, StoreError> {
    let (id, uuid, name, version, action, data, created_at) = row;
    let action = Action::parse(&action)
        .ok_or_else(|| StoreError::backend(BACKEND, format!("unknown action `{action}`")))?;
    Ok(StoredEvent {
        id,
        commit: 0,
        event: Event {
            uuid: parse_uuid(&uuid)?,
            name,
            version: version as u64,
            action,
            created_at: parse_time(&created_at)?,
            fields_diff: from_text(&data)?,
        },
    })
}
