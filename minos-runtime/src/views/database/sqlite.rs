//! The SQLite view database: a file (a writer connection and a reader, WAL) or memory (one connection).

use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::Connection;
use serde_json::{Map, Value};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::{Backend, Dialect, Tx};
use crate::store::{StoreError, READER_CACHE, WRITER_CACHE};
use crate::views::sql::SqlValue;

const BACKEND: &str = "sqlite views";

fn err(error: rusqlite::Error) -> StoreError {
    StoreError::backend(BACKEND, error)
}

pub(super) struct SqliteViews {
    writer: Arc<Mutex<Connection>>,
    reader: Option<Arc<Mutex<Connection>>>,
    path: String,
}

/// Prepared statements kept per connection: every view's statements stay prepared.
const STATEMENT_CACHE: usize = 256;

fn setup(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
        .map_err(err)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(err)
}

impl SqliteViews {
    pub(super) fn open(path: &str) -> Result<Self, StoreError> {
        let file = std::path::Path::new(path);
        if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::backend(BACKEND, e))?;
        }
        let writer = Connection::open(file).map_err(err)?;
        setup(&writer)?;
        writer.execute_batch(WRITER_CACHE).map_err(err)?;
        let reader = Connection::open(file).map_err(err)?;
        setup(&reader)?;
        reader.execute_batch(READER_CACHE).map_err(err)?;
        Ok(SqliteViews {
            writer: Arc::new(Mutex::new(writer)),
            reader: Some(Arc::new(Mutex::new(reader))),
            path: format!("sqlite://{path}"),
        })
    }

    pub(super) fn memory() -> Result<Self, StoreError> {
        Ok(SqliteViews {
            writer: Arc::new(Mutex::new({
                let conn = Connection::open_in_memory().map_err(err)?;
                conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
                conn
            })),
            reader: None,
            path: "memory".into(),
        })
    }
}

#[async_trait]
impl Backend for SqliteViews {
    fn describe(&self) -> String {
        self.path.clone()
    }

    async fn begin(&self) -> Result<Box<dyn Tx>, StoreError> {
        let conn = Arc::clone(&self.writer).lock_owned().await;
        run(&conn, "BEGIN IMMEDIATE")?;
        Ok(Box::new(SqliteTx { conn, open: true }))
    }

    async fn read(&self) -> Result<Box<dyn Tx>, StoreError> {
        let conn = Arc::clone(self.reader.as_ref().unwrap_or(&self.writer))
            .lock_owned()
            .await;
        Ok(Box::new(SqliteTx { conn, open: false }))
    }
}

struct SqliteTx {
    conn: OwnedMutexGuard<Connection>,
    open: bool,
}

impl Drop for SqliteTx {
    fn drop(&mut self) {
        if self.open {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

/// Runs a statement without parameters or rows, prepared once.
fn run(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut statement| statement.execute([]))
        .map(|_| ())
        .map_err(err)
}

/// Binds a value without copying its text.
impl rusqlite::ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            SqlValue::Null => ValueRef::Null,
            SqlValue::Integer(i) => ValueRef::Integer(*i),
            SqlValue::Real(f) => ValueRef::Real(*f),
            SqlValue::Text(t) => ValueRef::Text(t.as_bytes()),
            SqlValue::Bool(b) => ValueRef::Integer(i64::from(*b)),
        }))
    }
}

fn ours(value: ValueRef<'_>) -> SqlValue {
    match value {
        ValueRef::Null => SqlValue::Null,
        ValueRef::Integer(i) => SqlValue::Integer(i),
        ValueRef::Real(f) => SqlValue::Real(f),
        ValueRef::Text(t) => SqlValue::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => SqlValue::Text(String::from_utf8_lossy(b).into_owned()),
    }
}

impl SqliteTx {
    fn rows(
        &mut self,
        sql: &str,
        params: &[SqlValue],
    ) -> Result<(Vec<String>, Vec<Vec<SqlValue>>), StoreError> {
        let mut statement = self.conn.prepare_cached(sql).map_err(err)?;
        let names: Vec<String> = statement
            .column_names()
            .iter()
            .map(|n| n.to_string())
            .collect();
        let width = names.len();
        let mut rows = statement
            .query(rusqlite::params_from_iter(params))
            .map_err(err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(err)? {
            let mut values = Vec::with_capacity(width);
            for i in 0..width {
                values.push(ours(row.get_ref(i).map_err(err)?));
            }
            out.push(values);
        }
        Ok((names, out))
    }
}

#[async_trait]
impl Tx for SqliteTx {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn execute(&mut self, sql: &str, params: &[SqlValue]) -> Result<u64, StoreError> {
        let mut statement = self.conn.prepare_cached(sql).map_err(err)?;
        if statement.column_count() > 0 {
            drop(statement);
            return self.rows(sql, params).map(|(_, rows)| rows.len() as u64);
        }
        statement
            .execute(rusqlite::params_from_iter(params))
            .map(|n| n as u64)
            .map_err(err)
    }

    async fn query(
        &mut self,
        sql: &str,
        params: &[SqlValue],
    ) -> Result<Vec<Vec<SqlValue>>, StoreError> {
        self.rows(sql, params).map(|(_, rows)| rows)
    }

    async fn query_json(
        &mut self,
        sql: &str,
        params: &[SqlValue],
    ) -> Result<Vec<Map<String, Value>>, StoreError> {
        let (names, rows) = self.rows(sql, params)?;
        Ok(rows
            .into_iter()
            .map(|row| {
                names
                    .iter()
                    .cloned()
                    .zip(row.iter().map(SqlValue::to_json))
                    .collect()
            })
            .collect())
    }

    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        if self.open {
            self.open = false;
            run(&self.conn, "COMMIT")?;
        }
        Ok(())
    }
}
