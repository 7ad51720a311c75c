//! The PostgreSQL backend: tokio-postgres on a deadpool pool. Appends of concurrent requests are committed
//! together (one transaction, a few statements for the whole batch), so throughput grows with load while
//! every append keeps its own version check and its own answer.
//!
//! The store, its options, connecting and the helpers every port shares are here; the rest is one
//! module per concern: `migrate` (schema migrations), `lock` (advisory locks, the relay lease),
//! `writer` (the batch append writer), `inbox` (the batched inbox look-ups and records), `events`,
//! `snapshots`, `query` (conditions and orderings as SQL), `outbox` (outbox and inbox), `transactions`
//! and `sagas`.

mod deferred;
mod events;
#[cfg(test)]
mod feed_tests;
mod inbox;
mod lock;
mod migrate;
mod outbox;
mod query;
mod registry;
mod retention;
mod sagas;
mod snapshots;
mod tls;
mod transactions;
mod writer;

pub(crate) use lock::lock_key;
pub use lock::AdvisoryLock;

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime,
};
use tokio::sync::mpsc;
use tokio_postgres::NoTls;

use crate::store::StoreError;

const BACKEND: &str = "postgres";

/// Connection settings beyond the URL.
#[derive(Clone, Debug)]
pub struct PostgresOptions {
    /// Most connections in the pool.
    pub pool_size: usize,
    /// How long to wait for a connection (pool checkout and connect).
    pub timeout: Duration,
    /// Most appends committed in one transaction.
    pub max_batch: usize,
    /// Concurrent append transactions.
    pub writers: usize,
    /// Longest a statement may run before the server cancels it.
    pub statement_timeout: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            pool_size: 16,
            timeout: Duration::from_secs(5),
            max_batch: 128,
            writers: 2,
            statement_timeout: Duration::from_secs(30),
        }
    }
}

/// PostgreSQL store. `postgres://user@host:port/db?schema=name` keeps its tables in schema `name`.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    appends: mpsc::UnboundedSender<writer::AppendRequest>,
    inbox: inbox::InboxBatchers,
    /// The outbox rows the append writers commit, on their way to this process's relay.
    feed: std::sync::Arc<crate::store::CommitFeed>,
    schema: Option<String>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.schema)
            .finish()
    }
}

/// Unavailable (503: try again later) only when the server cannot be reached or refuses connections;
/// a statement it cannot run is the service's failure (500), never "unavailable".
pub(crate) fn db_error(error: tokio_postgres::Error) -> StoreError {
    if is_unreachable(&error) {
        StoreError::Unavailable {
            backend: BACKEND,
            source: Box::new(error),
        }
    } else {
        StoreError::backend(BACKEND, error)
    }
}

fn is_unreachable(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    if let Some(db) = error.as_db_error() {
        // Class 08: connection exception; 57P01–57P03: shutting down or not accepting connections;
        // 53300: too many connections.
        let code = db.code().code();
        return code.starts_with("08") || code.starts_with("57P0") || code == "53300";
    }
    // Without a server answer: an I/O failure is the connection; anything else (a parameter the
    // statement does not use, a value that does not encode) is ours.
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// `sql` from the connection's statement cache: parsed and planned once per connection, then run in one
/// round trip (an unprepared statement takes two: parse and describe, then bind and execute). Only for
/// statements of a bounded number of shapes: the cache keeps every text it is given.
pub(crate) async fn prepared<C: GenericClient>(
    client: &C,
    sql: &str,
) -> Result<tokio_postgres::Statement, StoreError> {
    client.prepare_cached(sql).await.map_err(db_error)
}

/// The pool could not hand out a connection. The message carries every cause (a refused TLS
/// certificate says why, not only that the handshake failed).
pub(crate) fn pool_error(error: deadpool_postgres::PoolError) -> StoreError {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    StoreError::Unavailable {
        backend: BACKEND,
        source: message.into(),
    }
}

/// Splits our `schema=` parameter off a connection URL.
fn split_schema(url: &str) -> Result<(String, Option<String>, tls::TlsSettings), StoreError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), None, tls::TlsSettings::default()));
    };
    let mut schema = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("schema", value)) => schema = Some(value.to_owned()),
            _ => rest.push(pair),
        }
    }
    let tls = tls::TlsSettings::take(&mut rest)?;
    if let Some(name) = &schema {
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(StoreError::backend(
                BACKEND,
                format!("schema `{name}`: use lower-case letters, digits and `_`"),
            ));
        }
    }
    let base = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((base, schema, tls))
}

impl PostgresStore {
    /// Connects with default options, creates the schema if named, and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, PostgresOptions::default()).await
    }

    /// Connects with `options`.
    pub async fn connect_with(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        let (pool, schema) = pool_with(url, &options)?;
        let (appends, receiver) = mpsc::unbounded_channel();
        let store = PostgresStore {
            pool: pool.clone(),
            appends,
            inbox: inbox::InboxBatchers::spawn(&pool),
            feed: Default::default(),
            schema,
        };
        store.migrate().await?;
        writer::spawn(&pool, receiver, &store.feed, &options);
        Ok(store)
    }

    /// The connection pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }
}

/// A pool on `url` with default options, its `schema=` created when named (the view database).
pub(crate) async fn pool_for(url: &str) -> Result<(Pool, Option<String>), StoreError> {
    let (pool, schema) = pool_with(url, &PostgresOptions::default())?;
    if let Some(schema) = &schema {
        let client = pool.get().await.map_err(pool_error)?;
        // The name is validated (lower-case letters, digits, `_`): safe to quote into DDL.
        client
            .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
            .await
            .map_err(db_error)?;
    }
    Ok((pool, schema))
}

/// A pool on `url` (its `schema=` as the search path), and the schema.
fn pool_with(url: &str, options: &PostgresOptions) -> Result<(Pool, Option<String>), StoreError> {
    {
        let (url, schema, tls) = split_schema(url)?;
        let mut config = tokio_postgres::Config::from_str(&url)
            .map_err(|e| StoreError::backend(BACKEND, format!("invalid connection URL: {e}")))?;
        config.ssl_mode(tls.ssl_mode());
        config.connect_timeout(options.timeout);
        let mut server_options = config
            .get_options()
            .map(|o| format!("{o} "))
            .unwrap_or_default();
        server_options.push_str(&format!(
            "-c statement_timeout={}",
            options.statement_timeout.as_millis().max(1)
        ));
        if let Some(schema) = &schema {
            server_options.push_str(&format!(" -c search_path={schema}"));
        }
        config.options(server_options);
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match tls.enabled() {
            true => Manager::from_config(config, tls.connector()?, manager_config),
            false => Manager::from_config(config, NoTls, manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(2))
            .wait_timeout(Some(options.timeout))
            .create_timeout(Some(options.timeout))
            .recycle_timeout(Some(options.timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::backend(BACKEND, e))?;
        Ok((pool, schema))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_parameter_is_ours() {
        let (url, schema, _) =
            split_schema("postgres://u@h/db?schema=t_1&connect_timeout=3").unwrap();
        assert_eq!(url, "postgres://u@h/db?connect_timeout=3");
        assert_eq!(schema.as_deref(), Some("t_1"));
        assert!(split_schema("postgres://u@h/db?schema=Bad;DROP").is_err());
        assert_eq!(split_schema("postgres://u@h/db").unwrap().1, None);
    }
}
