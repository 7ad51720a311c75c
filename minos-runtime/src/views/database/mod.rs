//! The view database: SQLite (a file, or memory) or PostgreSQL, behind one small transaction port.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::store::StoreError;

use super::positions;
use super::sql::{self, SqlValue};
use super::ViewDef;

/// Which SQL the database speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// A connection inside a transaction (or, for reads, in autocommit).
#[async_trait]
pub(crate) trait Tx: Send {
    fn dialect(&self) -> Dialect;

    /// Runs a statement; the number of rows it changed.
    async fn execute(&mut self, sql: &str, params: &[SqlValue]) -> Result<u64, StoreError>;

    /// Runs a query; its rows.
    async fn query(
        &mut self,
        sql: &str,
        params: &[SqlValue],
    ) -> Result<Vec<Vec<SqlValue>>, StoreError>;

    /// Runs a query; its rows as JSON objects by column name.
    async fn query_json(
        &mut self,
        sql: &str,
        params: &[SqlValue],
    ) -> Result<Vec<Map<String, Value>>, StoreError>;

    /// Commits (a no-op for a read connection).
    async fn commit(self: Box<Self>) -> Result<(), StoreError>;

    /// Runs `writes` (with the view rows still waiting in a [`Buffered`] transaction first), then the
    /// statement `sql`, and commits when it changed `expected` rows; otherwise rolls back and answers
    /// `false`. PostgreSQL sends them all with the commit, pipelined (one round trip once their
    /// statements are prepared); a write that fails leaves nothing committed, and the failure names
    /// its view.
    async fn commit_after(
        mut self: Box<Self>,
        writes: Vec<Write>,
        sql: &str,
        params: &[SqlValue],
        expected: u64,
    ) -> Result<bool, CommitFailed> {
        execute_all(self.as_mut(), writes).await?;
        if self.execute(sql, params).await? != expected {
            // Dropped: rolled back.
            return Ok(false);
        }
        self.commit().await?;
        Ok(true)
    }

    /// The view rows waiting to be written and the transaction under them, for a projection's
    /// transaction ([`Buffered`]); `None` for others.
    fn buffered(&mut self) -> Option<(&mut Pending, &mut dyn Tx)> {
        None
    }

    /// Writes what waits in memory (the rows of a [`Buffered`] transaction); nothing for others.
    async fn flush(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Waits for the transaction-scoped lock named `name`, between processes sharing the database
    /// (PostgreSQL; an SQLite database has one writer at a time already).
    async fn lock(&mut self, name: &str) -> Result<(), StoreError> {
        if self.dialect() == Dialect::Postgres {
            self.execute(
                "SELECT pg_advisory_xact_lock($1)",
                &[SqlValue::Integer(lock_key(name))],
            )
            .await?;
        }
        Ok(())
    }
}

/// A view row write waiting in a [`Buffered`] transaction.
pub(crate) enum PendingWrite {
    /// The row (replacing the one with its key).
    Upsert(sql::Row),
    /// No row with this key.
    Delete(SqlValue),
}

/// The view rows a projection's handlers wrote, the last write per key, in the order each key was
/// first written.
#[derive(Default)]
pub(crate) struct Pending {
    order: Vec<(&'static ViewDef, String)>,
    writes: HashMap<(&'static str, String), PendingWrite>,
}

impl Pending {
    /// The identity of a row: its view and its key.
    fn id(def: &ViewDef, key: &SqlValue) -> (&'static str, String) {
        (def.name, format!("{key:?}"))
    }

    /// The write waiting for the row with `key`, if any.
    pub(crate) fn get(&self, def: &ViewDef, key: &SqlValue) -> Option<&PendingWrite> {
        self.writes.get(&Self::id(def, key))
    }

    /// Records `write` for the row with `key`, replacing the one waiting.
    pub(crate) fn put(&mut self, def: &'static ViewDef, key: &SqlValue, write: PendingWrite) {
        let id = Self::id(def, key);
        if !self.writes.contains_key(&id) {
            self.order.push((def, id.1.clone()));
        }
        self.writes.insert(id, write);
    }
}

/// A projection's transaction: the rows its handlers upsert and delete wait in memory (the last write
/// per row) and reach the database before any other statement runs in it, and before it commits. A
/// page of events that changes one row many times (a counter) writes it once; a handler reads its own
/// writes as before.
pub(crate) struct Buffered {
    inner: Box<dyn Tx>,
    pending: Pending,
    /// Why writing the waiting rows failed, once it did, and whose rows they were: every later
    /// statement and the commit fail too, so a page never commits without some of its rows.
    failed: Option<(String, &'static str)>,
}

impl Buffered {
    pub(crate) fn new(inner: Box<dyn Tx>) -> Self {
        Buffered {
            inner,
            pending: Pending::default(),
            failed: None,
        }
    }

    /// The statements writing the waiting rows (which then wait no more); after a failure, fails
    /// again.
    fn writes(&mut self) -> Result<Vec<Write>, StoreError> {
        if let Some((failed, _)) = &self.failed {
            return Err(StoreError::backend(
                "view database",
                format!("an earlier view row write of this page failed: {failed}"),
            ));
        }
        let mut pending = std::mem::take(&mut self.pending);
        // Runs of rows of one view with one kind of write, in the order they were first written:
        // each run goes out in a few multi-row statements.
        let mut runs: Vec<(&'static ViewDef, Vec<String>, Run)> = Vec::new();
        for (def, key) in pending.order.drain(..) {
            let Some(write) = pending.writes.remove(&(def.name, key.clone())) else {
                continue;
            };
            match (runs.last_mut(), write) {
                (Some((last, keys, Run::Upserts(rows))), PendingWrite::Upsert(row))
                    if last.name == def.name =>
                {
                    keys.push(key);
                    rows.push(row);
                }
                (Some((last, keys, Run::Deletes(deleted))), PendingWrite::Delete(gone))
                    if last.name == def.name =>
                {
                    keys.push(key);
                    deleted.push(gone);
                }
                (_, PendingWrite::Upsert(row)) => {
                    runs.push((def, vec![key], Run::Upserts(vec![row])))
                }
                (_, PendingWrite::Delete(gone)) => {
                    runs.push((def, vec![key], Run::Deletes(vec![gone])))
                }
            }
        }
        let dialect = self.inner.dialect();
        let mut writes = Vec::new();
        for (def, keys, run) in runs {
            let statements = match run {
                Run::Upserts(rows) => sql::upsert_statements(def, dialect, rows),
                Run::Deletes(gone) => sql::delete_statements(def, dialect, gone),
            };
            // Each statement's own keys, chunk by chunk as the statements were made.
            let mut keys = keys.into_iter();
            let sizes = sql::chunk_sizes(keys.len());
            writes.extend(
                statements
                    .into_iter()
                    .zip(sizes)
                    .map(|((sql, params), size)| Write {
                        sql,
                        params,
                        view: def.name,
                        keys: keys.by_ref().take(size).collect(),
                    }),
            );
        }
        Ok(writes)
    }

    /// Writes the waiting rows; after a failure, fails again.
    async fn flush(&mut self) -> Result<(), StoreError> {
        for write in self.writes()? {
            if let Err(error) = self.inner.execute(&write.sql, &write.params).await {
                let error = write.failed(error);
                self.failed = Some((error.to_string(), write.view));
                return Err(error);
            }
        }
        Ok(())
    }
}

/// A statement writing view rows, and which rows (for its error).
pub(crate) struct Write {
    pub(crate) sql: String,
    pub(crate) params: Vec<SqlValue>,
    view: &'static str,
    keys: Vec<String>,
}

impl Write {
    /// `error`, saying which rows it failed to write.
    pub(crate) fn failed(&self, error: StoreError) -> StoreError {
        in_context(error, &self.context())
    }

    /// `error` as this write's view's failure, unless the database was out of reach (no row's
    /// fault).
    pub(crate) fn refused(&self, error: StoreError) -> CommitFailed {
        let unreachable = matches!(error, StoreError::Unavailable { .. });
        CommitFailed {
            view: (!unreachable).then_some(self.view),
            error: self.failed(error),
        }
    }

    fn context(&self) -> String {
        match self.keys.as_slice() {
            [key] => format!("view {} row {key}", self.view),
            keys => format!("view {} rows {}", self.view, keys.join(", ")),
        }
    }
}

/// Why a commit after writes failed: the error, and the view whose rows could not be written when
/// a write failed.
#[derive(Debug)]
pub(crate) struct CommitFailed {
    pub(crate) view: Option<&'static str>,
    pub(crate) error: StoreError,
}

impl From<StoreError> for CommitFailed {
    fn from(error: StoreError) -> Self {
        CommitFailed { view: None, error }
    }
}

/// Runs `writes` one after the other; the first failure, saying which rows it failed to write.
pub(crate) async fn execute_all<T: Tx + ?Sized>(
    tx: &mut T,
    writes: Vec<Write>,
) -> Result<(), CommitFailed> {
    for write in writes {
        if let Err(error) = tx.execute(&write.sql, &write.params).await {
            return Err(write.refused(error));
        }
    }
    Ok(())
}

/// Rows of one view waiting together: written, or deleted by key.
enum Run {
    Upserts(Vec<sql::Row>),
    Deletes(Vec<SqlValue>),
}

/// `error` with `context` in front of what the backend said (with the causes it gave), of the same
/// kind (unavailable stays unavailable).
fn in_context(error: StoreError, context: &str) -> StoreError {
    // Each cause's first line (PostgreSQL's `DETAIL` line would show the failing row's values),
    // once (an error whose cause says the same is said once).
    let said = |source: &(dyn std::error::Error + 'static)| {
        let mut said = context.to_owned();
        let mut last = String::new();
        let mut cause = Some(source);
        while let Some(inner) = cause {
            let text = inner.to_string();
            let line = text.lines().next().unwrap_or_default();
            if line != last {
                said.push_str(": ");
                said.push_str(line);
                last = line.to_owned();
            }
            cause = inner.source();
        }
        said
    };
    match error {
        StoreError::Unavailable { backend, source } => StoreError::Unavailable {
            backend,
            source: said(source.as_ref()).into(),
        },
        StoreError::Backend { backend, source } => StoreError::Backend {
            backend,
            source: said(source.as_ref()).into(),
        },
        other => other,
    }
}

#[async_trait]
impl Tx for Buffered {
    fn dialect(&self) -> Dialect {
        self.inner.dialect()
    }

    async fn execute(&mut self, sql: &str, params: &[SqlValue]) -> Result<u64, StoreError> {
        self.flush().await?;
        self.inner.execute(sql, params).await
    }

    async fn query(
        &mut self,
        sql: &str,
        params: &[SqlValue],
    ) -> Result<Vec<Vec<SqlValue>>, StoreError> {
        self.flush().await?;
        self.inner.query(sql, params).await
    }

    async fn query_json(
        &mut self,
        sql: &str,
        params: &[SqlValue],
    ) -> Result<Vec<Map<String, Value>>, StoreError> {
        self.flush().await?;
        self.inner.query_json(sql, params).await
    }

    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        self.flush().await?;
        self.inner.commit().await
    }

    /// The rows waiting go out with `writes`, the statement and the commit.
    async fn commit_after(
        mut self: Box<Self>,
        writes: Vec<Write>,
        sql: &str,
        params: &[SqlValue],
        expected: u64,
    ) -> Result<bool, CommitFailed> {
        let mut all = match self.writes() {
            Ok(all) => all,
            // A row write failed before: the failure of that write's view.
            Err(error) => {
                return Err(CommitFailed {
                    view: self.failed.as_ref().map(|(_, view)| *view),
                    error,
                })
            }
        };
        all.extend(writes);
        self.inner.commit_after(all, sql, params, expected).await
    }

    async fn flush(&mut self) -> Result<(), StoreError> {
        Buffered::flush(self).await
    }

    async fn lock(&mut self, name: &str) -> Result<(), StoreError> {
        Buffered::flush(self).await?;
        self.inner.lock(name).await
    }

    fn buffered(&mut self) -> Option<(&mut Pending, &mut dyn Tx)> {
        Some((&mut self.pending, self.inner.as_mut()))
    }
}

/// The key of PostgreSQL's advisory lock named `name`.
fn lock_key(name: &str) -> i64 {
    crate::hash::stable_hash(name) as i64
}

#[async_trait]
trait Backend: Send + Sync {
    fn describe(&self) -> String;
    async fn begin(&self) -> Result<Box<dyn Tx>, StoreError>;

    /// A transaction holding the transaction-scoped lock named `names[0]` (between processes
    /// sharing the database), or `None` when another holds it; with it, whether it also took each of
    /// the others (the first answer is the first lock's). An SQLite database has one writer at a
    /// time already: its transaction is every lock.
    async fn begin_locked(
        &self,
        names: &[String],
    ) -> Result<Option<(Box<dyn Tx>, Vec<bool>)>, StoreError> {
        Ok(Some((self.begin().await?, vec![true; names.len()])))
    }
    async fn read(&self) -> Result<Box<dyn Tx>, StoreError>;
}

tokio::task_local! {
    static CURRENT: Views;
}

/// A view database: `views:` of a service's configuration (by default a SQLite file beside the
/// store's, memory with a memory store, the same database with a PostgreSQL store).
#[derive(Clone)]
pub struct Views {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Box<dyn Backend>,
    prepared: RwLock<BTreeSet<&'static str>>,
}

impl fmt::Debug for Views {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Views")
            .field("database", &self.inner.backend.describe())
            .finish()
    }
}

impl Views {
    /// Opens the view database `url` names: `memory`, `sqlite://PATH` (its folder is created) or
    /// `postgres://USER@HOST/DB` (`?schema=name` for a schema of its own), and creates the tables of
    /// every view of the program that it lacks.
    #[cfg_attr(
        not(any(feature = "sqlite", feature = "postgres")),
        allow(unreachable_code, unused_variables)
    )]
    pub async fn open(url: &str) -> Result<Views> {
        let backend: Box<dyn Backend> = if url == "memory" {
            #[cfg(feature = "sqlite")]
            {
                Box::new(sqlite::SqliteViews::memory()?)
            }
            #[cfg(not(feature = "sqlite"))]
            {
                return Err(Error::Config(
                    "views: `memory` needs the `sqlite` feature".into(),
                ));
            }
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            #[cfg(feature = "sqlite")]
            {
                Box::new(sqlite::SqliteViews::open(path)?)
            }
            #[cfg(not(feature = "sqlite"))]
            {
                let _ = path;
                return Err(Error::Config(
                    "views: `sqlite://` needs the `sqlite` feature".into(),
                ));
            }
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            #[cfg(feature = "postgres")]
            {
                Box::new(postgres::PostgresViews::connect(url).await?)
            }
            #[cfg(not(feature = "postgres"))]
            {
                return Err(Error::Config(
                    "views: `postgres://` needs the `postgres` feature".into(),
                ));
            }
        } else {
            return Err(Error::Config(format!(
                "unsupported view database `{url}`: use `sqlite://PATH`, `postgres://USER@HOST/DB` or `memory`"
            )));
        };
        let views = Views {
            inner: Arc::new(Inner {
                backend,
                prepared: RwLock::default(),
            }),
        };
        let mut tx = views.begin().await?;
        for statement in positions::bookkeeping(tx.dialect()) {
            tx.execute(&statement, &[]).await?;
        }
        tx.commit().await?;
        Ok(views)
    }

    /// A fresh in-memory view database (tests, scripts).
    pub async fn memory() -> Result<Views> {
        Self::open("memory").await
    }

    /// The view database of the running handler (its service's), or of the enclosing
    /// [`scope`](Self::scope).
    pub fn current() -> Result<Views> {
        if let Ok(views) = CURRENT.try_with(Views::clone) {
            return Ok(views);
        }
        crate::routing::Context::current()
            .ok()
            .and_then(|context| context.views().cloned())
            .ok_or_else(|| {
                Error::Config(
                    "no view database here: views are read in a service's handlers, or inside \
                     `Views::scope`"
                        .into(),
                )
            })
    }

    /// Runs `future` with this view database as the current one.
    pub fn scope<F: Future>(self, future: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, future)
    }

    /// Creates the tables of `def` if its fingerprint is new (dropping an older table of the same
    /// name, and setting its positions back to the start: it is rebuilt), and starts a position for
    /// each source. Returns whether the view starts empty.
    pub(crate) async fn prepare(
        &self,
        def: &'static ViewDef,
        fingerprint: &str,
        sources: &[String],
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        tx.lock(&format!("minos:view:{}", def.name)).await?;
        let stored = positions::stored_fingerprint(tx.as_mut(), def.name).await?;
        let rebuilt = stored.as_deref() != Some(fingerprint);
        if rebuilt {
            if let Some(stored) = stored {
                tracing::info!(view = def.name, old = %stored, new = %fingerprint, "view definition changed: rebuilding it from history");
            }
            positions::reset(tx.as_mut(), def, fingerprint).await?;
        }
        for source in sources {
            positions::start_position(tx.as_mut(), def.name, source).await?;
        }
        tx.commit().await?;
        self.mark_ready(def);
        Ok(rebuilt)
    }

    /// Empties the view and sets its positions back to the start: it is rebuilt from history.
    pub(crate) async fn reset(&self, def: &'static ViewDef, fingerprint: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        tx.lock(&format!("minos:view:{}", def.name)).await?;
        positions::reset(tx.as_mut(), def, fingerprint).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Creates the tables of every view of the program (tests and scripts; a service prepares its
    /// views with their handlers when it starts).
    pub async fn create_all(&self) -> Result<()> {
        self.create_missing(&[]).await
    }

    /// Creates the tables of the program's views except `except`, when missing.
    pub(crate) async fn create_missing(&self, except: &[&str]) -> Result<()> {
        for def in super::registered().filter(|d| !except.contains(&d.name)) {
            let mut tx = self.begin().await?;
            for statement in sql::create_table(tx.dialect(), def) {
                tx.execute(&statement, &[]).await?;
            }
            tx.commit().await?;
            self.mark_ready(def);
        }
        Ok(())
    }

    fn mark_ready(&self, def: &'static ViewDef) {
        self.inner
            .prepared
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(def.name);
    }

    /// Checks that the view's tables exist here.
    pub(crate) fn ready(&self, def: &ViewDef) -> Result<()> {
        let prepared = self
            .inner
            .prepared
            .read()
            .unwrap_or_else(|p| p.into_inner());
        if prepared.contains(def.name) {
            return Ok(());
        }
        Err(Error::Config(format!(
            "view {} is not in this view database: a service keeps the views its handlers declare \
             (`view = {}`); elsewhere call `Views::create_all`",
            def.name, def.name
        )))
    }

    pub(crate) async fn begin(&self) -> Result<Box<dyn Tx>, StoreError> {
        self.inner.backend.begin().await
    }

    /// A transaction holding the lock named `names[0]`, or `None` when another process holds it;
    /// with it, which of the locks named it took (see `Backend::begin_locked`).
    pub(crate) async fn begin_locked(
        &self,
        names: &[String],
    ) -> Result<Option<(Box<dyn Tx>, Vec<bool>)>, StoreError> {
        self.inner.backend.begin_locked(names).await
    }

    pub(crate) async fn read(&self) -> Result<Box<dyn Tx>, StoreError> {
        self.inner.backend.read().await
    }

    /// Where the database is (for logs).
    pub fn describe(&self) -> String {
        self.inner.backend.describe()
    }
}

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(test)]
mod tests;
