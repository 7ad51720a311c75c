//! The view database: SQLite (a file, or memory) or PostgreSQL, behind one small transaction port.

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::store::StoreError;

use super::sql::{self, SqlValue};
use super::ViewDef;

/// Which SQL the database speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
}

#[async_trait]
trait Backend: Send + Sync {
    fn describe(&self) -> String;
    async fn begin(&self) -> Result<Box<dyn Tx>, StoreError>;
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
        for statement in sql::bookkeeping(tx.dialect()) {
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
    pub async fn scope<F: Future>(self, future: F) -> F::Output {
        CURRENT.scope(self, future).await
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
        tx.lock(def.name).await?;
        let stored = sql::stored_fingerprint(tx.as_mut(), def.name).await?;
        let rebuilt = stored.as_deref() != Some(fingerprint);
        if rebuilt {
            if let Some(stored) = stored {
                tracing::info!(view = def.name, old = %stored, new = %fingerprint, "view definition changed: rebuilding it from history");
            }
            sql::reset(tx.as_mut(), def, fingerprint).await?;
        }
        for source in sources {
            sql::start_position(tx.as_mut(), def.name, source).await?;
        }
        tx.commit().await?;
        self.mark_ready(def);
        Ok(rebuilt)
    }

    /// Empties the view and sets its positions back to the start: it is rebuilt from history.
    pub(crate) async fn reset(&self, def: &'static ViewDef, fingerprint: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        tx.lock(def.name).await?;
        sql::reset(tx.as_mut(), def, fingerprint).await?;
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

    pub(crate) async fn read(&self) -> Result<Box<dyn Tx>, StoreError> {
        self.inner.backend.read().await
    }

    /// Where the database is (for logs).
    pub fn describe(&self) -> String {
        self.inner.backend.describe()
    }
}

/// Transaction-scoped locks between processes sharing the database (PostgreSQL; an SQLite database
/// has one writer at a time already).
#[async_trait]
pub(crate) trait Lock {
    /// Waits for the lock named `name` (the preparation of one view).
    async fn lock(&mut self, name: &str) -> Result<(), StoreError>;
    /// Takes the lock named `key` if no one holds it.
    async fn try_lock(&mut self, key: &str) -> Result<bool, StoreError>;
}

#[async_trait]
impl Lock for Box<dyn Tx> {
    async fn lock(&mut self, name: &str) -> Result<(), StoreError> {
        if self.dialect() == Dialect::Postgres {
            let key = crate::hash::stable_hash(&format!("minos:view:{name}")) as i64;
            self.execute(
                "SELECT pg_advisory_xact_lock($1)",
                &[SqlValue::Integer(key)],
            )
            .await?;
        }
        Ok(())
    }

    async fn try_lock(&mut self, key: &str) -> Result<bool, StoreError> {
        if self.dialect() != Dialect::Postgres {
            return Ok(true);
        }
        let key = crate::hash::stable_hash(key) as i64;
        let rows = self
            .query(
                "SELECT pg_try_advisory_xact_lock($1)",
                &[SqlValue::Integer(key)],
            )
            .await?;
        Ok(matches!(
            rows.first().and_then(|r| r.first()),
            Some(SqlValue::Bool(true))
        ))
    }
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use std::sync::Arc;

    use async_trait::async_trait;
    use rusqlite::types::{Value as Native, ValueRef};
    use rusqlite::Connection;
    use serde_json::{Map, Value};
    use tokio::sync::{Mutex, OwnedMutexGuard};

    use super::{Backend, Dialect, Tx};
    use crate::store::StoreError;
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

    fn setup(conn: &Connection) -> Result<(), StoreError> {
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
            .map_err(err)?;
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
            let reader = Connection::open(file).map_err(err)?;
            setup(&reader)?;
            Ok(SqliteViews {
                writer: Arc::new(Mutex::new(writer)),
                reader: Some(Arc::new(Mutex::new(reader))),
                path: format!("sqlite://{path}"),
            })
        }

        pub(super) fn memory() -> Result<Self, StoreError> {
            Ok(SqliteViews {
                writer: Arc::new(Mutex::new(Connection::open_in_memory().map_err(err)?)),
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
            conn.execute_batch("BEGIN IMMEDIATE").map_err(err)?;
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

    fn native(value: &SqlValue) -> Native {
        match value {
            SqlValue::Null => Native::Null,
            SqlValue::Integer(i) => Native::Integer(*i),
            SqlValue::Real(f) => Native::Real(*f),
            SqlValue::Text(t) => Native::Text(t.clone()),
            SqlValue::Bool(b) => Native::Integer(i64::from(*b)),
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
                .query(rusqlite::params_from_iter(params.iter().map(native)))
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
                .execute(rusqlite::params_from_iter(params.iter().map(native)))
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
                self.conn.execute_batch("COMMIT").map_err(err)?;
            }
            Ok(())
        }
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use std::error::Error as StdError;

    use async_trait::async_trait;
    use bytes::BytesMut;
    use deadpool_postgres::{Object, Pool};
    use serde_json::{Map, Value};
    use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};

    use super::{Backend, Dialect, Tx};
    use crate::store::StoreError;
    use crate::views::sql::SqlValue;

    pub(super) struct PostgresViews {
        pool: Pool,
        describe: String,
    }

    impl PostgresViews {
        pub(super) async fn connect(url: &str) -> Result<Self, StoreError> {
            let (pool, schema) = crate::store::postgres::pool_for(url).await?;
            Ok(PostgresViews {
                pool,
                describe: match schema {
                    Some(schema) => format!("postgres (schema {schema})"),
                    None => "postgres".into(),
                },
            })
        }
    }

    fn err(error: tokio_postgres::Error) -> StoreError {
        crate::store::postgres::db_error(error)
    }

    #[async_trait]
    impl Backend for PostgresViews {
        fn describe(&self) -> String {
            self.describe.clone()
        }

        async fn begin(&self) -> Result<Box<dyn Tx>, StoreError> {
            let client = self
                .pool
                .get()
                .await
                .map_err(crate::store::postgres::pool_error)?;
            client.batch_execute("BEGIN").await.map_err(err)?;
            Ok(Box::new(PostgresTx {
                client: Some(client),
                open: true,
            }))
        }

        async fn read(&self) -> Result<Box<dyn Tx>, StoreError> {
            let client = self
                .pool
                .get()
                .await
                .map_err(crate::store::postgres::pool_error)?;
            Ok(Box::new(PostgresTx {
                client: Some(client),
                open: false,
            }))
        }
    }

    struct PostgresTx {
        client: Option<Object>,
        open: bool,
    }

    impl Drop for PostgresTx {
        fn drop(&mut self) {
            let Some(client) = self.client.take().filter(|_| self.open) else {
                return;
            };
            // Pooled connections are recycled as they are: end the transaction before it goes back,
            // or, without a runtime to do it on, take the connection out of the pool.
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(async move {
                        if client.batch_execute("ROLLBACK").await.is_err() {
                            let _ = Object::take(client);
                        }
                    });
                }
                Err(_) => {
                    let _ = Object::take(client);
                }
            }
        }
    }

    #[derive(Debug)]
    struct Param<'a>(&'a SqlValue);

    impl ToSql for Param<'_> {
        fn to_sql(
            &self,
            ty: &Type,
            out: &mut BytesMut,
        ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
            match self.0 {
                SqlValue::Null => Ok(IsNull::Yes),
                SqlValue::Integer(i) => match *ty {
                    Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                    Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                    Type::FLOAT4 | Type::FLOAT8 => (*i as f64).to_sql(&Type::FLOAT8, out),
                    Type::BOOL => (*i != 0).to_sql(ty, out),
                    Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
                        i.to_string().to_sql(ty, out)
                    }
                    _ => i.to_sql(ty, out),
                },
                SqlValue::Real(f) => match *ty {
                    Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                    _ => f.to_sql(ty, out),
                },
                SqlValue::Bool(b) => b.to_sql(ty, out),
                SqlValue::Text(t) => match *ty {
                    Type::JSON | Type::JSONB => serde_json::from_str::<Value>(t)?.to_sql(ty, out),
                    Type::UUID => t.parse::<uuid::Uuid>()?.to_sql(ty, out),
                    _ => t.as_str().to_sql(ty, out),
                },
            }
        }

        fn accepts(_: &Type) -> bool {
            true
        }

        to_sql_checked!();
    }

    fn value(row: &tokio_postgres::Row, i: usize) -> Result<SqlValue, StoreError> {
        let ty = row.columns()[i].type_().clone();
        let decode = |e: tokio_postgres::Error| err(e);
        Ok(match ty {
            Type::INT2 => row
                .try_get::<_, Option<i16>>(i)
                .map_err(decode)?
                .map_or(SqlValue::Null, |v| SqlValue::Integer(v.into())),
            Type::INT4 => row
                .try_get::<_, Option<i32>>(i)
                .map_err(decode)?
                .map_or(SqlValue::Null, |v| SqlValue::Integer(v.into())),
            Type::INT8 => row
                .try_get::<_, Option<i64>>(i)
                .map_err(decode)?
                .map_or(SqlValue::Null, SqlValue::Integer),
            Type::FLOAT4 => row
                .try_get::<_, Option<f32>>(i)
                .map_err(decode)?
                .map_or(SqlValue::Null, |v| SqlValue::Real(v.into())),
            Type::FLOAT8 => row
                .try_get::<_, Option<f64>>(i)
                .map_err(decode)?
                .map_or(SqlValue::Null, SqlValue::Real),
            Type::BOOL => row
                .try_get::<_, Option<bool>>(i)
                .map_err(decode)?
                .map_or(SqlValue::Null, SqlValue::Bool),
            Type::JSON | Type::JSONB => row
                .try_get::<_, Option<Value>>(i)
                .map_err(decode)?
                .map_or(SqlValue::Null, |v| SqlValue::Text(v.to_string())),
            Type::UUID => row
                .try_get::<_, Option<uuid::Uuid>>(i)
                .map_err(decode)?
                .map_or(SqlValue::Null, |v| SqlValue::Text(v.to_string())),
            Type::TIMESTAMPTZ => row
                .try_get::<_, Option<chrono::DateTime<chrono::Utc>>>(i)
                .map_err(decode)?
                .map_or(SqlValue::Null, |v| {
                    SqlValue::Text(crate::store::format_time(v))
                }),
            _ => match row.try_get::<_, Option<String>>(i) {
                Ok(v) => v.map_or(SqlValue::Null, SqlValue::Text),
                Err(_) => {
                    return Err(StoreError::InvalidQuery(format!(
                        "column `{}` has type {ty}, which views cannot read: cast it to text",
                        row.columns()[i].name()
                    )))
                }
            },
        })
    }

    impl PostgresTx {
        fn client(&self) -> &Object {
            self.client
                .as_ref()
                .expect("the connection is kept until the transaction is dropped")
        }

        async fn rows(
            &mut self,
            sql: &str,
            params: &[SqlValue],
        ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
            let params: Vec<Param<'_>> = params.iter().map(Param).collect();
            let refs: Vec<&(dyn ToSql + Sync)> =
                params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            let statement = self.client().prepare_cached(sql).await.map_err(err)?;
            self.client().query(&statement, &refs).await.map_err(err)
        }
    }

    #[async_trait]
    impl Tx for PostgresTx {
        fn dialect(&self) -> Dialect {
            Dialect::Postgres
        }

        async fn execute(&mut self, sql: &str, params: &[SqlValue]) -> Result<u64, StoreError> {
            let params: Vec<Param<'_>> = params.iter().map(Param).collect();
            let refs: Vec<&(dyn ToSql + Sync)> =
                params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            if refs.is_empty() && !sql.trim_start().to_ascii_uppercase().starts_with("SELECT") {
                // DDL: no statement to prepare and cache.
                self.client().batch_execute(sql).await.map_err(err)?;
                return Ok(0);
            }
            let statement = self.client().prepare_cached(sql).await.map_err(err)?;
            self.client().execute(&statement, &refs).await.map_err(err)
        }

        async fn query(
            &mut self,
            sql: &str,
            params: &[SqlValue],
        ) -> Result<Vec<Vec<SqlValue>>, StoreError> {
            let rows = self.rows(sql, params).await?;
            rows.iter()
                .map(|row| (0..row.len()).map(|i| value(row, i)).collect())
                .collect()
        }

        async fn query_json(
            &mut self,
            sql: &str,
            params: &[SqlValue],
        ) -> Result<Vec<Map<String, Value>>, StoreError> {
            let rows = self.rows(sql, params).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                let mut object = Map::new();
                for (i, column) in row.columns().iter().enumerate() {
                    let json = match column.type_() {
                        &Type::JSON | &Type::JSONB => row
                            .try_get::<_, Option<Value>>(i)
                            .map_err(err)?
                            .unwrap_or(Value::Null),
                        _ => value(row, i)?.to_json(),
                    };
                    object.insert(column.name().to_owned(), json);
                }
                out.push(object);
            }
            Ok(out)
        }

        async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
            if self.open {
                self.open = false;
                self.client().batch_execute("COMMIT").await.map_err(err)?;
            }
            Ok(())
        }
    }
}
