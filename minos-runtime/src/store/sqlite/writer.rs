//! The group-commit writer: appends go to one writer thread, which commits those waiting together, and
//! the append itself ([`append_tx`], also the path of `commit_unit`).

use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, ErrorCode, TransactionBehavior};
use tokio::sync::oneshot;

use crate::domain::{DomainMessage, Event};
use crate::store::{check_applies, format_time, Snapshot, StoreError, StoredEvent};

use super::snapshots::load_snapshot;
use super::{sql_err, to_text, BACKEND};

/// One append waiting for the writer thread, with where to send its answer.
pub(super) struct AppendJob {
    pub(super) event: Event,
    pub(super) messages: Vec<DomainMessage>,
    pub(super) reply: oneshot::Sender<Result<StoredEvent, StoreError>>,
}

/// Most appends committed in one transaction.
const MAX_BATCH: usize = 256;

/// Starts the writer thread on `conn`; appends are sent to it through the returned channel.
pub(super) fn spawn(conn: Arc<Mutex<Connection>>) -> Result<Sender<AppendJob>, StoreError> {
    let (appends, jobs) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("minos-sqlite-writer".into())
        .spawn(move || writer(conn, jobs))
        .map_err(|e| StoreError::backend(BACKEND, e))?;
    Ok(appends)
}

fn writer(conn: Arc<Mutex<Connection>>, jobs: Receiver<AppendJob>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let results = {
            let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            append_batch(&mut guard, &batch)
        };
        for (job, result) in batch.into_iter().zip(results) {
            let _ = job.reply.send(result);
        }
    }
}

/// Appends a batch in one transaction, each append in a savepoint of its own: a failing append (a
/// conflict) is rolled back alone and answered with its error; the others commit together.
fn append_batch(
    conn: &mut Connection,
    batch: &[AppendJob],
) -> Vec<Result<StoredEvent, StoreError>> {
    let all_failed = |error: &dyn std::fmt::Display| {
        let text = error.to_string();
        batch
            .iter()
            .map(|_| Err(StoreError::backend(BACKEND, text.clone())))
            .collect()
    };
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(error) => return all_failed(&error),
    };
    let mut results = Vec::with_capacity(batch.len());
    for job in batch {
        let result = tx.savepoint().map_err(sql_err).and_then(|savepoint| {
            // Dropping the savepoint on an error rolls this append back.
            let stored = append_tx(&savepoint, &job.event, &job.messages)?;
            savepoint.commit().map_err(sql_err)?;
            Ok(stored)
        });
        results.push(result);
    }
    match tx.commit() {
        Ok(()) => results,
        Err(error) => all_failed(&error),
    }
}

/// Appends `event` inside the caller's transaction: checks it against the stored snapshot, then writes
/// the event, the next snapshot and the outbox rows of `messages`.
pub(super) fn append_tx(
    tx: &Connection,
    event: &Event,
    messages: &[DomainMessage],
) -> Result<StoredEvent, StoreError> {
    let uuid = event.uuid.to_string();
    let current = load_snapshot(tx, &uuid)?;
    check_applies(current.as_ref(), event)?;
    let snapshot = Snapshot::next(current.as_ref(), event)?;
    let created_at = format_time(event.created_at);
    let id = insert_event(tx, &uuid, event, &created_at, current.as_ref())?;
    save_snapshot(tx, &uuid, &snapshot)?;
    insert_messages(tx, messages, &created_at)?;
    Ok(StoredEvent {
        id,
        commit: 0,
        event: event.clone(),
    })
}

/// Inserts the event row; its id, the event's global position.
fn insert_event(
    tx: &Connection,
    uuid: &str,
    event: &Event,
    created_at: &str,
    current: Option<&Snapshot>,
) -> Result<i64, StoreError> {
    let inserted = tx
        .prepare_cached(
            "INSERT INTO events (uuid, name, version, action, data, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(sql_err)?
        .execute(params![
            uuid,
            event.name,
            event.version as i64,
            event.action.as_str(),
            to_text(&event.fields_diff)?,
            created_at
        ]);
    if let Err(rusqlite::Error::SqliteFailure(e, _)) = &inserted {
        if e.code == ErrorCode::ConstraintViolation {
            return Err(StoreError::Conflict {
                name: event.name.clone(),
                uuid: event.uuid,
                expected: event.version.saturating_sub(1),
                actual: current.map_or(0, |s| s.version),
            });
        }
    }
    inserted.map_err(sql_err)?;
    Ok(tx.last_insert_rowid())
}

fn save_snapshot(tx: &Connection, uuid: &str, snapshot: &Snapshot) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO snapshots (uuid, name, version, data, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT (uuid) DO UPDATE SET version = excluded.version, data = excluded.data, updated_at = excluded.updated_at",
    )
    .map_err(sql_err)?
    .execute(params![
        uuid,
        snapshot.name,
        snapshot.version as i64,
        snapshot.data.as_ref().map(to_text).transpose()?,
        format_time(snapshot.created_at),
        format_time(snapshot.updated_at)
    ])
    .map_err(sql_err)?;
    Ok(())
}

fn insert_messages(
    tx: &Connection,
    messages: &[DomainMessage],
    created_at: &str,
) -> Result<(), StoreError> {
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO outbox (identifier, topic, key, payload, created_at, headers) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(sql_err)?;
    for message in messages {
        insert
            .execute(params![
                message.identifier.to_string(),
                message.topic,
                message.key,
                to_text(&message.content)?,
                created_at,
                (!message.headers.is_empty())
                    .then(|| serde_json::to_string(&message.headers).unwrap_or_default())
            ])
            .map_err(sql_err)?;
    }
    Ok(())
}
