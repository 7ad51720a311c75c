//! The embedded backend: SQLite on disk (or in memory), the default store of a service with no database
//! configured. Queries run in SQL over the JSON snapshot column.
//!
//! The store, opening it and the helpers every port shares are here; the rest is one module per concern:
//! `migrate` (schema migrations), `writer` (the group-commit writer thread and the append itself),
//! `events`, `snapshots`, `query` (conditions and orderings as SQL), `outbox` (outbox and inbox),
//! `transactions` and `sagas`.

mod events;
mod migrate;
mod outbox;
mod query;
mod registry;
mod retention;
mod sagas;
mod snapshots;
mod transactions;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use uuid::Uuid;

use crate::store::StoreError;

const BACKEND: &str = "sqlite";

/// SQLite store. One connection writes, in one writer thread that commits the writes waiting together
/// (group commit); reads run on reader connections of their own (WAL lets them run beside the writer),
/// or on the one connection of an in-memory database.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    path: Option<PathBuf>,
    writes: std::sync::mpsc::Sender<Box<dyn writer::Job>>,
    // The queue of the reader threads (a file database only).
    readers: Option<std::sync::mpsc::Sender<ReadJob>>,
}

/// Prepared statements kept per connection (every statement the store runs fits).
const STATEMENT_CACHE: usize = 128;

/// Reader threads (and connections) of a database file, one per core from 2 to 4: reads beyond these
/// wait their turn. Each keeps a connection (its schema, statements and page cache) and a thread's
/// stack; more readers than cores only queue on the cores instead (measured on 2 cores: 4 readers held
/// 0.8 MB more after a burst than 2, at the same throughput).
fn readers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4))
}

/// Page cache of a writing connection (the store's writer, a view database's writer). Appends and
/// upserts touch the right-hand edge of each B-tree (row ids and UUIDv7 keys are time-ordered): a few
/// dozen pages; a miss is read from the operating system's file cache. SQLite's default, 2 MiB per
/// connection, was filled by any burst and kept for the life of the process, and the allocator's
/// fragmentation around those pages doubled it (about 9 MB of a service's 34 MB after a burst),
/// with no measurable gain in throughput.
pub(crate) const WRITER_CACHE: &str = "PRAGMA cache_size = -512;";

/// Page cache of a reading connection: the writer's commits invalidate it anyway.
pub(crate) const READER_CACHE: &str = "PRAGMA cache_size = -128;";

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

fn sql_err(error: rusqlite::Error) -> StoreError {
    StoreError::backend(BACKEND, error)
}

impl SqliteStore {
    /// Opens (creating it and its folder when missing) the database file at `path` and migrates it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::backend(BACKEND, e))?;
        }
        let conn = Connection::open(path).map_err(sql_err)?;
        Self::setup(conn, Some(path.to_owned()))
    }

    /// A private in-memory database.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::setup(Connection::open_in_memory().map_err(sql_err)?, None)
    }

    /// The database file, if on disk.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn setup(mut conn: Connection, path: Option<PathBuf>) -> Result<Self, StoreError> {
        // WAL with NORMAL sync: a commit survives a process crash; only an OS crash may lose the last
        // transactions, never corrupt the file.
        // Most writes of a group commit run in a savepoint, whose undo journal stays in memory.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
             PRAGMA temp_store = MEMORY;",
        )
        .map_err(sql_err)?;
        conn.execute_batch(WRITER_CACHE).map_err(sql_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sql_err)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        migrate::migrate(&mut conn)?;
        let conn = Arc::new(Mutex::new(conn));
        let writes = writer::spawn(Arc::clone(&conn))?;
        Ok(SqliteStore {
            conn,
            readers: path.as_deref().map(spawn_readers).transpose()?,
            path,
            writes,
        })
    }

    /// Runs `f` in the writer thread, in a savepoint of the transaction it commits with the writes
    /// waiting beside it: an error rolls back `f`'s writes alone.
    async fn write<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let (job, answer) = writer::Task::queued(f);
        queued(&self.writes, job, answer, "writer thread").await
    }

    /// [`write`](Self::write) for an `f` that fails only before its first change: no savepoint.
    async fn write_checked<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let (job, answer) = writer::Task::queued_checked(f);
        queued(&self.writes, job, answer, "writer thread").await
    }

    /// Runs the read `f` on a reader connection (the writer's for an in-memory database): it sees every
    /// write committed before it started.
    async fn read<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let Some(readers) = &self.readers else {
            return self.with(f).await;
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            let _ = reply.send(f(conn));
        });
        queued(readers, job, answer, "reader threads").await
    }

    /// Runs `f` on the writer's connection, outside the writer thread (rare writes: the registry).
    async fn with<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::backend(BACKEND, e))?
    }
}

/// Sends `job` to the `threads` of the store that take it and waits for its `answer`.
async fn queued<J, R>(
    queue: &std::sync::mpsc::Sender<J>,
    job: J,
    answer: tokio::sync::oneshot::Receiver<Result<R, StoreError>>,
    threads: &str,
) -> Result<R, StoreError> {
    queue
        .send(job)
        .map_err(|_| StoreError::backend(BACKEND, format!("the {threads} stopped")))?;
    answer
        .await
        .map_err(|_| StoreError::backend(BACKEND, format!("the {threads} dropped an operation")))?
}

/// A read waiting for a reader thread.
type ReadJob = Box<dyn FnOnce(&mut Connection) + Send>;

/// Starts the reader threads, each with a connection of its own, taking reads from one queue; they
/// stop when the store is dropped.
fn spawn_readers(path: &Path) -> Result<std::sync::mpsc::Sender<ReadJob>, StoreError> {
    let (reads, queue) = std::sync::mpsc::channel::<ReadJob>();
    let queue = Arc::new(Mutex::new(queue));
    for n in 0..readers() {
        let conn = open_reader(path)?;
        let queue = Arc::clone(&queue);
        std::thread::Builder::new()
            .name(format!("minos-sqlite-r{n}"))
            .spawn(move || reader(conn, &queue))
            .map_err(|e| StoreError::backend(BACKEND, e))?;
    }
    Ok(reads)
}

fn reader(mut conn: Connection, queue: &Mutex<std::sync::mpsc::Receiver<ReadJob>>) {
    loop {
        let job = {
            let queue = queue
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match queue.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        // A panicking read fails alone (its caller sees the reply dropped); the thread goes on.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut conn)));
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
}

/// A read-only connection on the database file, with a small page cache (the operating system caches
/// the file).
fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(sql_err)?;
    conn.execute_batch(READER_CACHE).map_err(sql_err)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

fn parse_uuid(text: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text).map_err(|e| StoreError::backend(BACKEND, e))
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::backend(BACKEND, e))
}

fn to_text<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Domain(crate::domain::DomainError::Json(e)))
}

fn from_text<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Domain(crate::domain::DomainError::Json(e)))
}
