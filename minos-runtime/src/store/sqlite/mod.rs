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

/// SQLite store. One connection serialises writers, which SQLite does anyway.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    path: Option<PathBuf>,
    // Appends go to one writer thread, which commits those waiting together (group commit).
    appends: std::sync::mpsc::Sender<writer::AppendJob>,
}

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
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
        )
        .map_err(sql_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sql_err)?;
        migrate::migrate(&mut conn)?;
        let conn = Arc::new(Mutex::new(conn));
        let appends = writer::spawn(Arc::clone(&conn))?;
        Ok(SqliteStore {
            conn,
            path,
            appends,
        })
    }

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
