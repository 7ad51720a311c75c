//! The group-commit writer: every hot write (appends, units of work, outbox marks, transaction and saga
//! records) goes to one writer thread, which commits those waiting together, each in a savepoint of its
//! own; and the append itself ([`append_tx`]).

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, ErrorCode};
use tokio::sync::oneshot;

use crate::domain::{DomainMessage, Event};
use crate::store::{check_applies, format_time, Snapshot, StoreError, StoredEvent};

use super::snapshots::load_snapshot;
use super::{sql_err, to_text, BACKEND};

/// One write waiting for the writer thread.
pub(super) trait Job: Send {
    /// Runs the write inside its savepoint; `false` when it failed (its savepoint is rolled back).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Whether it needs a savepoint: `false` for a write that can only fail before its first change
    /// (an append checks its version first). A savepoint copies each page the write touches to the
    /// statement journal first: 5% of the embedded default's CPU went there.
    fn savepoint(&self) -> bool {
        true
    }
    /// Answers the caller once the batch's transaction committed (`Ok`) or failed.
    fn answer(self: Box<Self>, commit: Result<(), String>);
}

/// A write closure and where to send its result.
pub(super) struct Task<R, F> {
    work: Option<F>,
    result: Option<Result<R, StoreError>>,
    reply: oneshot::Sender<Result<R, StoreError>>,
    savepoint: bool,
}

impl<R, F> Task<R, F>
where
    R: Send + 'static,
    F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
{
    pub(super) fn queued(work: F) -> (Box<dyn Job>, oneshot::Receiver<Result<R, StoreError>>) {
        Self::queued_with(work, true)
    }

    /// A write that fails only before its first change: it runs without a savepoint of its own (were
    /// it to fail after a change, the whole batch is rolled back and every write in it fails).
    pub(super) fn queued_checked(
        work: F,
    ) -> (Box<dyn Job>, oneshot::Receiver<Result<R, StoreError>>) {
        Self::queued_with(work, false)
    }

    fn queued_with(
        work: F,
        savepoint: bool,
    ) -> (Box<dyn Job>, oneshot::Receiver<Result<R, StoreError>>) {
        let (reply, answer) = oneshot::channel();
        let task = Task {
            work: Some(work),
            result: None,
            reply,
            savepoint,
        };
        (Box::new(task), answer)
    }
}

impl<R, F> Job for Task<R, F>
where
    R: Send + 'static,
    F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        // A panicking write fails alone: the writer thread goes on with the others.
        let result =
            std::panic::catch_unwind(AssertUnwindSafe(|| work(conn))).unwrap_or_else(|_| {
                Err(StoreError::backend(
                    BACKEND,
                    "a write panicked; it was rolled back",
                ))
            });
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn savepoint(&self) -> bool {
        self.savepoint
    }

    fn answer(self: Box<Self>, commit: Result<(), String>) {
        let result = match (commit, self.result) {
            (_, Some(Err(own))) => Err(own),
            (Ok(()), Some(Ok(value))) => Ok(value),
            (Err(error), _) => Err(StoreError::backend(BACKEND, error)),
            (Ok(()), None) => Err(StoreError::backend(BACKEND, "the write did not run")),
        };
        let _ = self.reply.send(result);
    }
}

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 256;

/// Starts the writer thread on `conn`; writes are sent to it through the returned channel.
pub(super) fn spawn(conn: Arc<Mutex<Connection>>) -> Result<Sender<Box<dyn Job>>, StoreError> {
    let (jobs_in, jobs) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("minos-sqlite-writer".into())
        .spawn(move || writer(conn, jobs))
        .map_err(|e| StoreError::backend(BACKEND, e))?;
    Ok(jobs_in)
}

fn writer(conn: Arc<Mutex<Connection>>, jobs: Receiver<Box<dyn Job>>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let commit = {
            let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            run_batch(&mut guard, &mut batch)
        };
        for job in batch {
            job.answer(commit.clone());
        }
    }
}

/// Runs a batch in one transaction, each write in a savepoint of its own: a failing write (a conflict)
/// is rolled back alone and answered with its error; the others commit together. The transaction and
/// savepoint statements are prepared once (cached), like every other statement of the writer.
fn run_batch(conn: &mut Connection, batch: &mut [Box<dyn Job>]) -> Result<(), String> {
    let result = run_statements(conn, batch);
    if result.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    result
}

fn run_statements(conn: &Connection, batch: &mut [Box<dyn Job>]) -> Result<(), String> {
    let run = |sql: &str| {
        conn.prepare_cached(sql)
            .and_then(|mut s| s.execute([]))
            .map_err(|e| e.to_string())
    };
    run("BEGIN IMMEDIATE")?;
    for job in batch.iter_mut() {
        if !job.savepoint() {
            let before = conn.total_changes();
            if !job.run(conn) && conn.total_changes() != before {
                return Err(
                    "a write failed after changing rows; its batch was rolled back: try again"
                        .into(),
                );
            }
            continue;
        }
        run("SAVEPOINT minos_write")?;
        if !job.run(conn) {
            run("ROLLBACK TO minos_write")?;
        }
        run("RELEASE minos_write")?;
    }
    run("COMMIT")?;
    Ok(())
}

/// An append made ready on the caller's thread: the event's and its messages' JSON written out, so that
/// the writer thread, which every write of the database waits for, only runs the statements.
pub(super) struct Append {
    event: Event,
    data: String,
    messages: Vec<OutboxRow>,
}

/// A domain message as its outbox row stores it.
struct OutboxRow {
    identifier: String,
    topic: String,
    key: String,
    payload: String,
    headers: Option<String>,
}

impl Append {
    pub(super) fn new(event: Event, messages: &[DomainMessage]) -> Result<Self, StoreError> {
        let messages = messages
            .iter()
            .map(|message| {
                Ok(OutboxRow {
                    identifier: message.identifier.to_string(),
                    topic: message.topic.clone(),
                    key: message.key.clone(),
                    payload: to_text(&message.content)?,
                    headers: match message.headers.is_empty() {
                        true => None,
                        false => Some(to_text(&message.headers)?),
                    },
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(Append {
            data: to_text(&event.fields_diff)?,
            event,
            messages,
        })
    }

    /// The event as stored with `id` (its commit is numbered when the batch commits).
    pub(super) fn stored(self, id: i64) -> StoredEvent {
        StoredEvent {
            id,
            commit: 0,
            event: self.event,
        }
    }
}

/// Appends `append`'s event inside the caller's transaction: checks it against the stored snapshot,
/// then writes the event, the next snapshot and the outbox rows; the event's id, its global position.
pub(super) fn append_tx(tx: &Connection, append: &Append) -> Result<i64, StoreError> {
    let event = &append.event;
    let uuid = event.uuid.to_string();
    let current = load_snapshot(tx, &uuid)?;
    check_applies(current.as_ref(), event)?;
    let snapshot = Snapshot::next(current.as_ref(), event)?;
    let created_at = format_time(event.created_at);
    let id = insert_event(tx, &uuid, append, &created_at, current.as_ref())?;
    save_snapshot(tx, &uuid, &snapshot)?;
    insert_messages(tx, &append.messages, &created_at, id)?;
    Ok(id)
}

/// Inserts the event row; its id, the event's global position.
fn insert_event(
    tx: &Connection,
    uuid: &str,
    append: &Append,
    created_at: &str,
    current: Option<&Snapshot>,
) -> Result<i64, StoreError> {
    let event = &append.event;
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
            append.data,
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

/// Inserts the outbox rows of the event stored with `id`, each with the event's log position (header
/// `position`, `0.ID`).
fn insert_messages(
    tx: &Connection,
    messages: &[OutboxRow],
    created_at: &str,
    id: i64,
) -> Result<(), StoreError> {
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO outbox (identifier, topic, key, payload, created_at, headers) \
             VALUES (?1, ?2, ?3, ?4, ?5, json_set(COALESCE(?6, '{}'), '$.position', ?7))",
        )
        .map_err(sql_err)?;
    let position = crate::store::Position { commit: 0, id }.to_string();
    for message in messages {
        insert
            .execute(params![
                message.identifier,
                message.topic,
                message.key,
                message.payload,
                created_at,
                message.headers,
                position
            ])
            .map_err(sql_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(x: i64) -> impl FnOnce(&Connection) -> Result<(), StoreError> + Send + 'static {
        move |conn| {
            conn.execute("INSERT INTO t (x) VALUES (?1)", [x])
                .map(|_| ())
                .map_err(sql_err)
        }
    }

    fn rows(conn: &Connection) -> Vec<i64> {
        let mut statement = conn.prepare("SELECT x FROM t ORDER BY x").unwrap();
        let rows = statement.query_map([], |row| row.get(0)).unwrap();
        rows.map(Result::unwrap).collect()
    }

    #[test]
    fn a_write_without_a_savepoint_fails_alone_before_a_change_and_fails_its_batch_after_one() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER UNIQUE)")
            .unwrap();
        // Refused before any change (a duplicate): the others commit.
        let (first, mut answers) = Task::queued_checked(insert(1));
        let (duplicate, refused) = Task::queued_checked(insert(1));
        let (third, third_answer) = Task::queued(insert(2));
        let mut batch = vec![first, duplicate, third];
        let commit = run_batch(&mut conn, &mut batch);
        assert!(commit.is_ok());
        for job in batch {
            job.answer(commit.clone());
        }
        assert!(answers.try_recv().unwrap().is_ok());
        assert!(refused.blocking_recv().unwrap().is_err());
        assert!(third_answer.blocking_recv().unwrap().is_ok());
        assert_eq!(rows(&conn), [1, 2]);
        // Failing after a change it made: nothing else could undo it, so the batch rolls back.
        let (before, before_answer) = Task::queued(insert(3));
        let (half, half_answer) = Task::queued_checked(|conn: &Connection| {
            insert(4)(conn)?;
            insert(1)(conn)
        });
        let mut batch = vec![before, half];
        let commit = run_batch(&mut conn, &mut batch);
        assert!(commit.is_err());
        for job in batch {
            job.answer(commit.clone());
        }
        assert!(before_answer.blocking_recv().unwrap().is_err());
        assert!(half_answer.blocking_recv().unwrap().is_err());
        assert_eq!(rows(&conn), [1, 2], "rolled back");
        assert!(conn.is_autocommit());
    }
}
