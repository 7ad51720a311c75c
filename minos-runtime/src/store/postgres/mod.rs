//! The PostgreSQL backend: tokio-postgres on a deadpool pool. Appends of concurrent requests are committed
//! together (one transaction, a few statements for the whole batch), so throughput grows with load while
//! every append keeps its own version check and its own answer.

mod query;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime,
};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, Row};
use uuid::Uuid;

use super::check_applies;
use super::{
    EventFilter, EventStore, OutboxRecord, OutboxStore, Query, Snapshot, SnapshotStore, StoreError,
    StoredEvent,
};
use super::{ExecutionRecord, InboxEntry, InboxStore, SagaStore, TransactionStore};
use crate::domain::{Action, DomainMessage, Event};
use crate::domain::{ExecutionStatus, TransactionEntry, TransactionStatus};

const BACKEND: &str = "postgres";

/// Versioned schema migrations, applied in order and recorded in `schema_migrations`.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("sql/0001_init.sql")),
    (2, include_str!("sql/0002_inbox.sql")),
    (3, include_str!("sql/0003_transactions.sql")),
    (4, include_str!("sql/0004_saga_executions.sql")),
    (5, include_str!("sql/0005_transaction_claims.sql")),
];

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

struct AppendRequest {
    event: Event,
    messages: Vec<DomainMessage>,
    reply: oneshot::Sender<Result<StoredEvent, StoreError>>,
}

/// PostgreSQL store. `postgres://user@host:port/db?schema=name` keeps its tables in schema `name`.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    appends: mpsc::UnboundedSender<AppendRequest>,
    schema: Option<String>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.schema)
            .finish()
    }
}

fn db_error(error: tokio_postgres::Error) -> StoreError {
    if error.is_closed() || error.as_db_error().is_none() {
        StoreError::Unavailable {
            backend: BACKEND,
            source: Box::new(error),
        }
    } else {
        StoreError::backend(BACKEND, error)
    }
}

fn pool_error(error: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Unavailable {
        backend: BACKEND,
        source: Box::new(error),
    }
}

/// The PostgreSQL advisory lock key of `key`: the same in every process and release.
pub fn lock_key(key: &str) -> i64 {
    crate::hash::stable_hash(key) as i64
}

/// Splits our `schema=` parameter off a connection URL.
fn split_schema(url: &str) -> Result<(String, Option<String>), StoreError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), None));
    };
    let mut schema = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("schema", value)) => schema = Some(value.to_owned()),
            _ => rest.push(pair),
        }
    }
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
    Ok((base, schema))
}

impl PostgresStore {
    /// Connects with default options, creates the schema if named, and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, PostgresOptions::default()).await
    }

    /// Connects with `options`.
    pub async fn connect_with(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        let (url, schema) = split_schema(url)?;
        let mut config = tokio_postgres::Config::from_str(&url)
            .map_err(|e| StoreError::backend(BACKEND, format!("invalid connection URL: {e}")))?;
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
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(2))
            .wait_timeout(Some(options.timeout))
            .create_timeout(Some(options.timeout))
            .recycle_timeout(Some(options.timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::backend(BACKEND, e))?;
        let (appends, receiver) = mpsc::unbounded_channel();
        let store = PostgresStore {
            pool: pool.clone(),
            appends,
            schema,
        };
        store.migrate().await?;
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..options.writers.max(1) {
            tokio::spawn(writer(
                pool.clone(),
                Arc::clone(&receiver),
                options.max_batch.max(1),
            ));
        }
        Ok(store)
    }

    /// The connection pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }

    /// Applies pending migrations (idempotent; one process at a time through an advisory lock).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let key = lock_key(&format!(
            "minos:migrations:{}",
            self.schema.as_deref().unwrap_or("public")
        ));
        client
            .execute("SELECT pg_advisory_lock($1)", &[&key])
            .await
            .map_err(db_error)?;
        let result = async {
            if let Some(schema) = &self.schema {
                // The name is validated (lower-case letters, digits, `_`): safe to quote into DDL.
                client
                    .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
                    .await
                    .map_err(db_error)?;
            }
            client
                .batch_execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (
                         version BIGINT PRIMARY KEY,
                         applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
                )
                .await
                .map_err(db_error)?;
            let applied: Vec<i64> = client
                .query("SELECT version FROM schema_migrations", &[])
                .await
                .map_err(db_error)?
                .iter()
                .map(|row| row.get(0))
                .collect();
            for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| !applied.contains(v)) {
                let tx = client.transaction().await.map_err(db_error)?;
                tx.batch_execute(sql).await.map_err(db_error)?;
                tx.execute(
                    "INSERT INTO schema_migrations (version) VALUES ($1)",
                    &[version],
                )
                .await
                .map_err(db_error)?;
                tx.commit().await.map_err(db_error)?;
            }
            Ok::<(), StoreError>(())
        }
        .await;
        let unlocked = client
            .execute("SELECT pg_advisory_unlock($1)", &[&key])
            .await;
        result?;
        unlocked.map_err(db_error)?;
        Ok(())
    }

    /// Takes the advisory lock named `key` if it is free; it is held until the returned guard is released
    /// or dropped (or its connection ends).
    pub async fn try_lock(&self, key: &str) -> Result<Option<AdvisoryLock>, StoreError> {
        let client = self.client().await?;
        let id = lock_key(key);
        let row = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&id])
            .await
            .map_err(db_error)?;
        Ok(row.get::<_, bool>(0).then_some(AdvisoryLock {
            client: Some(client),
            id,
        }))
    }
}

/// A held PostgreSQL advisory lock.
pub struct AdvisoryLock {
    client: Option<Object>,
    id: i64,
}

impl std::fmt::Debug for AdvisoryLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdvisoryLock")
            .field("id", &self.id)
            .finish()
    }
}

impl AdvisoryLock {
    /// Releases the lock.
    pub async fn release(mut self) -> Result<(), StoreError> {
        if let Some(client) = self.client.take() {
            client
                .execute("SELECT pg_advisory_unlock($1)", &[&self.id])
                .await
                .map_err(db_error)?;
        }
        Ok(())
    }
}

impl Drop for AdvisoryLock {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let id = self.id;
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = client
                        .execute("SELECT pg_advisory_unlock($1)", &[&id])
                        .await;
                });
            }
        }
    }
}

async fn writer(
    pool: Pool,
    receiver: Arc<Mutex<mpsc::UnboundedReceiver<AppendRequest>>>,
    max_batch: usize,
) {
    loop {
        let mut batch = Vec::new();
        {
            let mut receiver = receiver.lock().await;
            match receiver.recv().await {
                Some(request) => batch.push(request),
                None => return,
            }
            while batch.len() < max_batch {
                match receiver.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
        }
        run_batch(&pool, batch).await;
    }
}

async fn run_batch(pool: &Pool, batch: Vec<AppendRequest>) {
    let items: Vec<(&Event, &[DomainMessage])> = batch
        .iter()
        .map(|r| (&r.event, r.messages.as_slice()))
        .collect();
    match commit(pool, &items).await {
        Ok(results) => {
            for (request, result) in batch.into_iter().zip(results) {
                let _ = request.reply.send(result);
            }
        }
        // One append of a larger batch failed in the database (e.g. another process wrote the same
        // version first): commit each on its own, so only that one fails.
        Err(error) if batch.len() > 1 && !matches!(error, StoreError::Unavailable { .. }) => {
            for request in batch {
                let result =
                    match commit(pool, &[(&request.event, request.messages.as_slice())]).await {
                        Ok(mut results) => results.remove(0),
                        Err(error) => Err(error),
                    };
                let _ = request.reply.send(result);
            }
        }
        Err(error) => {
            let unavailable = matches!(error, StoreError::Unavailable { .. });
            let text = error.to_string();
            let mut first = Some(error);
            for request in batch {
                let error = first.take().unwrap_or_else(|| {
                    if unavailable {
                        StoreError::Unavailable {
                            backend: BACKEND,
                            source: text.clone().into(),
                        }
                    } else {
                        StoreError::backend(BACKEND, text.clone())
                    }
                });
                let _ = request.reply.send(Err(error));
            }
        }
    }
}

fn decode_snapshot(row: &Row) -> Result<Snapshot, StoreError> {
    let data: Option<Value> = row.get("data");
    let data = match data {
        None => None,
        Some(Value::Object(map)) => Some(map),
        Some(_) => {
            return Err(StoreError::backend(
                BACKEND,
                "a snapshot is not a JSON object",
            ))
        }
    };
    Ok(Snapshot {
        uuid: row.get("uuid"),
        name: row.get("name"),
        version: row.get::<_, i64>("version") as u64,
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
        data,
    })
}

const SNAPSHOT_COLUMNS: &str = "uuid, name, version, data, created_at, updated_at";

/// The one statement that commits a batch: snapshots are created (expected version 0) or updated only
/// where the stored version is still the expected one; events and outbox rows are written only for the
/// roots whose snapshot was written. A single statement is atomic, so no BEGIN/COMMIT round trips.
const COMMIT_SQL: &str = "\
WITH input AS (
    SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::jsonb[], $5::timestamptz[], $6::timestamptz[], $7::int8[])
        AS t(uuid, name, version, data, created_at, updated_at, expected)
), created AS (
    INSERT INTO snapshots (uuid, name, version, data, created_at, updated_at)
    SELECT uuid, name, version, data, created_at, updated_at FROM input WHERE expected = 0
    ON CONFLICT (uuid) DO NOTHING
    RETURNING uuid
), updated AS (
    UPDATE snapshots AS s SET version = i.version, data = i.data, updated_at = i.updated_at
    FROM input AS i
    WHERE i.expected > 0 AND s.uuid = i.uuid AND s.version = i.expected AND s.data IS NOT NULL
    RETURNING s.uuid
), written AS (
    SELECT uuid FROM created UNION ALL SELECT uuid FROM updated
), event_rows AS (
    INSERT INTO events (uuid, name, version, action, data, created_at)
    SELECT e.uuid, e.name, e.version, e.action, e.data, e.created_at
    FROM UNNEST($8::uuid[], $9::text[], $10::int8[], $11::text[], $12::jsonb[], $13::timestamptz[])
        WITH ORDINALITY AS e(uuid, name, version, action, data, created_at, position)
    WHERE e.uuid IN (SELECT uuid FROM written)
    ORDER BY e.position
    RETURNING id, uuid, version
), outbox_rows AS (
    INSERT INTO outbox (identifier, topic, key, payload, created_at)
    SELECT o.identifier, o.topic, o.key, o.payload, o.created_at
    FROM UNNEST($14::uuid[], $15::text[], $16::text[], $17::jsonb[], $18::timestamptz[], $19::uuid[])
        WITH ORDINALITY AS o(identifier, topic, key, payload, created_at, root, position)
    WHERE o.root IN (SELECT uuid FROM written)
    ORDER BY o.position
)
SELECT id, uuid, version FROM event_rows";

/// Commits `items`: version checks in Rust against the stored snapshots (read only when a batch holds
/// updates), then one atomic statement for the whole batch.
async fn commit(
    pool: &Pool,
    items: &[(&Event, &[DomainMessage])],
) -> Result<Vec<Result<StoredEvent, StoreError>>, StoreError> {
    let client = pool.get().await.map_err(pool_error)?;
    commit_with(&client, items).await
}

/// [`commit`] on a given client or transaction.
async fn commit_with<C: GenericClient + Sync>(
    client: &C,
    items: &[(&Event, &[DomainMessage])],
) -> Result<Vec<Result<StoredEvent, StoreError>>, StoreError> {
    // Snapshots before the batch: creations need none.
    let mut wanted: Vec<Uuid> = items
        .iter()
        .filter(|(e, _)| e.action != Action::Create)
        .map(|(e, _)| e.uuid)
        .collect();
    wanted.sort();
    wanted.dedup();
    let mut current: HashMap<Uuid, Snapshot> = HashMap::new();
    if !wanted.is_empty() {
        let statement = client
            .prepare_cached(&format!(
                "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE uuid = ANY($1)"
            ))
            .await
            .map_err(db_error)?;
        for row in client
            .query(&statement, &[&wanted])
            .await
            .map_err(db_error)?
        {
            let snapshot = decode_snapshot(&row)?;
            current.insert(snapshot.uuid, snapshot);
        }
    }
    let before: HashMap<Uuid, u64> = current.iter().map(|(u, s)| (*u, s.version)).collect();

    let mut results: Vec<Option<Result<StoredEvent, StoreError>>> = Vec::with_capacity(items.len());
    let mut accepted: Vec<usize> = Vec::new();
    let mut touched: Vec<Uuid> = Vec::new();
    for (i, (event, _)) in items.iter().enumerate() {
        match check_applies(current.get(&event.uuid), event) {
            Err(error) => results.push(Some(Err(error))),
            Ok(()) => {
                let next = Snapshot::next(current.get(&event.uuid), event)?;
                current.insert(event.uuid, next);
                if !touched.contains(&event.uuid) {
                    touched.push(event.uuid);
                }
                accepted.push(i);
                results.push(None);
            }
        }
    }
    if accepted.is_empty() {
        return Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(unreachable_result))
            .collect());
    }

    let snapshots: Vec<&Snapshot> = touched.iter().filter_map(|u| current.get(u)).collect();
    let s_uuid: Vec<Uuid> = snapshots.iter().map(|s| s.uuid).collect();
    let s_name: Vec<&str> = snapshots.iter().map(|s| s.name.as_str()).collect();
    let s_version: Vec<i64> = snapshots.iter().map(|s| s.version as i64).collect();
    let s_data: Vec<Option<Value>> = snapshots
        .iter()
        .map(|s| s.data.clone().map(Value::Object))
        .collect();
    let s_created: Vec<DateTime<Utc>> = snapshots.iter().map(|s| s.created_at).collect();
    let s_updated: Vec<DateTime<Utc>> = snapshots.iter().map(|s| s.updated_at).collect();
    let s_expected: Vec<i64> = snapshots
        .iter()
        .map(|s| before.get(&s.uuid).copied().unwrap_or(0) as i64)
        .collect();

    let events: Vec<&Event> = accepted.iter().map(|&i| items[i].0).collect();
    let e_uuid: Vec<Uuid> = events.iter().map(|e| e.uuid).collect();
    let e_name: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    let e_version: Vec<i64> = events.iter().map(|e| e.version as i64).collect();
    let e_action: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    let e_data: Vec<Value> = events
        .iter()
        .map(|e| serde_json::to_value(&e.fields_diff))
        .collect::<Result<_, _>>()
        .map_err(|e| StoreError::Domain(crate::domain::DomainError::Json(e)))?;
    let e_created: Vec<DateTime<Utc>> = events.iter().map(|e| e.created_at).collect();

    let messages: Vec<(&DomainMessage, &Event)> = accepted
        .iter()
        .flat_map(|&i| items[i].1.iter().map(move |m| (m, items[i].0)))
        .collect();
    let o_identifier: Vec<Uuid> = messages.iter().map(|(m, _)| m.identifier).collect();
    let o_topic: Vec<&str> = messages.iter().map(|(m, _)| m.topic.as_str()).collect();
    let o_key: Vec<&str> = messages.iter().map(|(m, _)| m.key.as_str()).collect();
    let o_payload: Vec<&Value> = messages.iter().map(|(m, _)| &m.content).collect();
    let o_created: Vec<DateTime<Utc>> = messages.iter().map(|(_, e)| e.created_at).collect();
    let o_root: Vec<Uuid> = messages.iter().map(|(_, e)| e.uuid).collect();

    let statement = client.prepare_cached(COMMIT_SQL).await.map_err(db_error)?;
    let rows = client
        .query(
            &statement,
            &[
                &s_uuid,
                &s_name,
                &s_version,
                &s_data,
                &s_created,
                &s_updated,
                &s_expected,
                &e_uuid,
                &e_name,
                &e_version,
                &e_action,
                &e_data,
                &e_created,
                &o_identifier,
                &o_topic,
                &o_key,
                &o_payload,
                &o_created,
                &o_root,
            ],
        )
        .await
        .map_err(|e| match e.code() {
            // Another writer inserted the same version between our read and write.
            Some(code) if *code == SqlState::UNIQUE_VIOLATION => {
                let first = events[0];
                StoreError::Conflict {
                    name: first.name.clone(),
                    uuid: first.uuid,
                    expected: first.version.saturating_sub(1),
                    actual: first.version,
                }
            }
            _ => db_error(e),
        })?;
    let ids: HashMap<(Uuid, i64), i64> = rows
        .iter()
        .map(|r| ((r.get(1), r.get(2)), r.get(0)))
        .collect();

    let mut out = Vec::with_capacity(items.len());
    for (i, result) in results.into_iter().enumerate() {
        let event = items[i].0;
        out.push(match result {
            Some(result) => result,
            None => match ids.get(&(event.uuid, event.version as i64)) {
                Some(&id) => Ok(StoredEvent {
                    id,
                    event: event.clone(),
                }),
                // The snapshot moved on (or appeared) since it was read: another writer won.
                None => Err(lost_race(client, event).await),
            },
        });
    }
    Ok(out)
}

/// The conflict error for an append another writer beat, with the version now stored.
async fn lost_race<C: GenericClient + Sync>(client: &C, event: &Event) -> StoreError {
    let actual = client
        .query_opt(
            "SELECT version, data IS NULL FROM snapshots WHERE uuid = $1",
            &[&event.uuid],
        )
        .await
        .ok()
        .flatten();
    match actual {
        Some(row) if row.get::<_, bool>(1) => StoreError::AlreadyDeleted {
            name: event.name.clone(),
            uuid: event.uuid,
        },
        row => StoreError::Conflict {
            name: event.name.clone(),
            uuid: event.uuid,
            expected: event.version.saturating_sub(1),
            actual: row.map_or(0, |r| r.get::<_, i64>(0) as u64),
        },
    }
}

fn unreachable_result() -> Result<StoredEvent, StoreError> {
    Err(StoreError::backend(BACKEND, "append result missing"))
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
        let mut client = self.client().await?;
        // Dropping `tx` on an early return rolls everything back.
        let tx = client.transaction().await.map_err(db_error)?;
        if let Some(entry) = inbox {
            let inserted = tx
                .execute(
                    "INSERT INTO inbox (consumer, identifier) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[&entry.consumer, &entry.identifier],
                )
                .await
                .map_err(db_error)?;
            if inserted == 0 {
                return Err(StoreError::AlreadyProcessed {
                    consumer: entry.consumer.clone(),
                    identifier: entry.identifier,
                });
            }
        }
        let mut stored = Vec::with_capacity(appends.len());
        if !appends.is_empty() {
            let items: Vec<(&Event, &[DomainMessage])> =
                appends.iter().map(|(e, m)| (e, m.as_slice())).collect();
            for result in commit_with(&tx, &items).await? {
                stored.push(result?);
            }
        }
        tx.commit().await.map_err(db_error)?;
        Ok(stored)
    }

    async fn events(&self, filter: &EventFilter) -> Result<Vec<StoredEvent>, StoreError> {
        let client = self.client().await?;
        let mut sql = String::from(
            "SELECT id, uuid, name, version, action, data, created_at FROM events WHERE TRUE",
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
        let rows = client.query(&sql, &params).await.map_err(db_error)?;
        rows.iter()
            .map(|row| {
                let action: String = row.get("action");
                Ok(StoredEvent {
                    id: row.get("id"),
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
            })
            .collect()
    }
}

#[async_trait]
impl SnapshotStore for PostgresStore {
    async fn snapshot(&self, name: &str, uuid: Uuid) -> Result<Option<Snapshot>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE uuid = $1 AND name = $2"
            ))
            .await
            .map_err(db_error)?;
        let row = client
            .query_opt(&statement, &[&uuid, &name])
            .await
            .map_err(db_error)?;
        row.as_ref().map(decode_snapshot).transpose()
    }

    async fn find(&self, name: &str, query: &Query) -> Result<Vec<Snapshot>, StoreError> {
        query.validate()?;
        let mut builder = query::Builder::default();
        let name_param = builder.bind(name.to_owned());
        let condition = builder.condition(&query.condition);
        let mut sql = format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE name = {name_param} AND data IS NOT NULL AND {condition} ORDER BY "
        );
        if let Some(ordering) = &query.ordering {
            sql.push_str(&builder.ordering(ordering));
        }
        sql.push_str("seq");
        if let Some(limit) = query.limit {
            sql.push_str(&format!(
                " LIMIT {}",
                builder.bind(limit.min(i64::MAX as usize) as i64)
            ));
        }
        let client = self.client().await?;
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            builder.params.iter().map(|p| p.as_ref() as _).collect();
        let rows = client.query(&sql, &params).await.map_err(db_error)?;
        rows.iter().map(decode_snapshot).collect()
    }
}

fn decode_execution(row: &Row) -> Result<ExecutionRecord, StoreError> {
    let status: String = row.get("status");
    Ok(ExecutionRecord {
        uuid: row.get("uuid"),
        saga: row.get("saga"),
        status: ExecutionStatus::parse(&status).ok_or_else(|| {
            StoreError::backend(BACKEND, format!("unknown saga execution status `{status}`"))
        })?,
        data: row.get("data"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    })
}

#[async_trait]
impl SagaStore for PostgresStore {
    async fn save_execution(&self, record: &ExecutionRecord) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO saga_executions (uuid, saga, status, data, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (uuid) DO UPDATE SET saga = EXCLUDED.saga, \
                 status = EXCLUDED.status, data = EXCLUDED.data, updated_at = EXCLUDED.updated_at",
                &[
                    &record.uuid,
                    &record.saga,
                    &record.status.as_str(),
                    &record.data,
                    &record.created_at,
                    &record.updated_at,
                ],
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn execution(&self, uuid: Uuid) -> Result<Option<ExecutionRecord>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT uuid, saga, status, data, created_at, updated_at FROM saga_executions WHERE uuid = $1",
                &[&uuid],
            )
            .await
            .map_err(db_error)?;
        row.as_ref().map(decode_execution).transpose()
    }

    async fn executions(
        &self,
        status: Option<ExecutionStatus>,
        limit: usize,
    ) -> Result<Vec<ExecutionRecord>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT uuid, saga, status, data, created_at, updated_at FROM saga_executions \
                 WHERE ($1::TEXT IS NULL OR status = $1) ORDER BY updated_at DESC, uuid DESC LIMIT $2",
                &[&status.map(ExecutionStatus::as_str), &(limit.min(i64::MAX as usize) as i64)],
            )
            .await
            .map_err(db_error)?;
        rows.iter().map(decode_execution).collect()
    }

    async fn stale_executions(
        &self,
        status: ExecutionStatus,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ExecutionRecord>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT uuid, saga, status, data, created_at, updated_at FROM saga_executions \
                 WHERE status = $1 AND updated_at < $2 ORDER BY updated_at, uuid LIMIT $3",
                &[
                    &status.as_str(),
                    &before,
                    &(limit.min(i64::MAX as usize) as i64),
                ],
            )
            .await
            .map_err(db_error)?;
        rows.iter().map(decode_execution).collect()
    }
}

fn decode_transaction(row: &Row) -> Result<TransactionEntry, StoreError> {
    let status: String = row.get("status");
    Ok(TransactionEntry {
        uuid: row.get("uuid"),
        status: TransactionStatus::parse(&status).ok_or_else(|| {
            StoreError::backend(BACKEND, format!("unknown transaction status `{status}`"))
        })?,
        destination: row.get("destination"),
        updated_at: row.get("updated_at"),
    })
}

#[async_trait]
impl TransactionStore for PostgresStore {
    async fn save_transaction(&self, entry: &TransactionEntry) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO transactions (uuid, status, destination, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (uuid) DO UPDATE SET status = EXCLUDED.status, destination = EXCLUDED.destination, \
                 updated_at = EXCLUDED.updated_at",
                &[&entry.uuid, &entry.status.as_str(), &entry.destination, &entry.updated_at],
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn transaction(&self, uuid: Uuid) -> Result<Option<TransactionEntry>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT uuid, status, destination, updated_at FROM transactions WHERE uuid = $1",
                &[&uuid],
            )
            .await
            .map_err(db_error)?;
        row.as_ref().map(decode_transaction).transpose()
    }

    async fn transactions_in(
        &self,
        statuses: &[TransactionStatus],
        before: DateTime<Utc>,
    ) -> Result<Vec<TransactionEntry>, StoreError> {
        let client = self.client().await?;
        let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        let rows = client
            .query(
                "SELECT uuid, status, destination, updated_at FROM transactions \
                 WHERE status = ANY($1) AND updated_at < $2 ORDER BY updated_at, uuid",
                &[&statuses, &before],
            )
            .await
            .map_err(db_error)?;
        rows.iter().map(decode_transaction).collect()
    }

    async fn hold(
        &self,
        transaction: Uuid,
        writes: &[(Event, Vec<DomainMessage>)],
        inbox: Option<&InboxEntry>,
    ) -> Result<(), StoreError> {
        let events: Vec<Value> = writes
            .iter()
            .map(|(e, _)| serde_json::to_value(e))
            .collect::<Result<_, _>>()
            .map_err(|e| StoreError::Domain(crate::domain::DomainError::Json(e)))?;
        let messages: Vec<Value> = writes
            .iter()
            .map(|(_, m)| serde_json::to_value(m))
            .collect::<Result<_, _>>()
            .map_err(|e| StoreError::Domain(crate::domain::DomainError::Json(e)))?;
        let client = self.client().await?;
        let insert_writes = "INSERT INTO transaction_writes (transaction_uuid, event, messages) \
             SELECT $1, e, m FROM UNNEST($2::jsonb[], $3::jsonb[]) WITH ORDINALITY AS w(e, m, position) \
             ORDER BY position";
        let Some(entry) = inbox else {
            client
                .execute(insert_writes, &[&transaction, &events, &messages])
                .await
                .map_err(db_error)?;
            return Ok(());
        };
        // One statement: the writes are added only if the inbox row is new.
        let row = client
            .query_one(
                "WITH recorded AS ( \
                     INSERT INTO inbox (consumer, identifier) VALUES ($4, $5) ON CONFLICT DO NOTHING \
                     RETURNING 1), \
                 held AS ( \
                     INSERT INTO transaction_writes (transaction_uuid, event, messages) \
                     SELECT $1, e, m FROM UNNEST($2::jsonb[], $3::jsonb[]) WITH ORDINALITY AS w(e, m, position) \
                     WHERE EXISTS (SELECT 1 FROM recorded) ORDER BY position) \
                 SELECT count(*) FROM recorded",
                &[&transaction, &events, &messages, &entry.consumer, &entry.identifier],
            )
            .await
            .map_err(db_error)?;
        let recorded: i64 = row.get(0);
        if recorded == 0 {
            return Err(StoreError::AlreadyProcessed {
                consumer: entry.consumer.clone(),
                identifier: entry.identifier,
            });
        }
        Ok(())
    }

    async fn held(&self, transaction: Uuid) -> Result<super::HeldWrites, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT event, messages FROM transaction_writes WHERE transaction_uuid = $1 ORDER BY id",
                &[&transaction],
            )
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                let event: Event = serde_json::from_value(row.get("event"))
                    .map_err(|e| StoreError::Domain(crate::domain::DomainError::Json(e)))?;
                let messages: Vec<DomainMessage> = serde_json::from_value(row.get("messages"))
                    .map_err(|e| StoreError::Domain(crate::domain::DomainError::Json(e)))?;
                Ok((event, messages))
            })
            .collect()
    }

    async fn release(&self, transaction: Uuid) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "WITH claims AS (DELETE FROM transaction_claims WHERE transaction_uuid = $1) \
                 DELETE FROM transaction_writes WHERE transaction_uuid = $1",
                &[&transaction],
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn claim(
        &self,
        destination: Option<Uuid>,
        transaction: Uuid,
        roots: &[Uuid],
    ) -> Result<Option<(Uuid, Uuid)>, StoreError> {
        let destination = destination.unwrap_or(Uuid::nil());
        let mut roots = roots.to_vec();
        // One order for every claimer: two claims never wait on each other in a cycle.
        roots.sort();
        roots.dedup();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        // A concurrent claimer of the same root waits for this transaction, then sees the row.
        tx.execute(
            "INSERT INTO transaction_claims (destination, root, transaction_uuid) \
             SELECT $1, r, $2 FROM UNNEST($3::uuid[]) WITH ORDINALITY AS c(r, position) ORDER BY position \
             ON CONFLICT (destination, root) DO NOTHING",
            &[&destination, &transaction, &roots],
        )
        .await
        .map_err(db_error)?;
        let other = tx
            .query_opt(
                "SELECT root, transaction_uuid FROM transaction_claims \
                 WHERE destination = $1 AND root = ANY($3) AND transaction_uuid <> $2 LIMIT 1",
                &[&destination, &transaction, &roots],
            )
            .await
            .map_err(db_error)?;
        match other {
            // Dropping `tx` rolls this claim back: none of the roots stay claimed.
            Some(row) => Ok(Some((row.get(0), row.get(1)))),
            None => {
                tx.commit().await.map_err(db_error)?;
                Ok(None)
            }
        }
    }
}

#[async_trait]
impl InboxStore for PostgresStore {
    async fn is_processed(&self, entry: &InboxEntry) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT 1 FROM inbox WHERE consumer = $1 AND identifier = $2",
                &[&entry.consumer, &entry.identifier],
            )
            .await
            .map_err(db_error)?;
        Ok(row.is_some())
    }
}

#[async_trait]
impl OutboxStore for PostgresStore {
    async fn pending(&self, limit: usize) -> Result<Vec<OutboxRecord>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT id, identifier, topic, key, payload, created_at FROM outbox \
                 WHERE sent_at IS NULL ORDER BY id LIMIT $1",
            )
            .await
            .map_err(db_error)?;
        let limit = limit.min(i64::MAX as usize) as i64;
        let rows = client
            .query(&statement, &[&limit])
            .await
            .map_err(db_error)?;
        Ok(rows
            .iter()
            .map(|row| OutboxRecord {
                id: row.get("id"),
                message: DomainMessage {
                    identifier: row.get("identifier"),
                    topic: row.get("topic"),
                    key: row.get("key"),
                    content: row.get("payload"),
                },
                created_at: row.get("created_at"),
            })
            .collect())
    }

    async fn relay_lease(&self) -> Result<Option<super::RelayLease>, StoreError> {
        let key = format!(
            "minos:outbox-relay:{}",
            self.schema.as_deref().unwrap_or("public")
        );
        Ok(self.try_lock(&key).await?.map(super::RelayLease::holding))
    }

    async fn mark_sent(&self, ids: &[i64]) -> Result<(), StoreError> {
        let client = self.client().await?;
        let ids = ids.to_vec();
        client
            .execute(
                "UPDATE outbox SET sent_at = now() WHERE id = ANY($1) AND sent_at IS NULL",
                &[&ids],
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_parameter_is_ours() {
        let (url, schema) = split_schema("postgres://u@h/db?schema=t_1&connect_timeout=3").unwrap();
        assert_eq!(url, "postgres://u@h/db?connect_timeout=3");
        assert_eq!(schema.as_deref(), Some("t_1"));
        assert!(split_schema("postgres://u@h/db?schema=Bad;DROP").is_err());
        assert_eq!(split_schema("postgres://u@h/db").unwrap().1, None);
    }

    #[test]
    fn lock_keys_are_stable() {
        assert_eq!(
            lock_key("minos:migrations:public"),
            lock_key("minos:migrations:public")
        );
        assert_ne!(lock_key("a"), lock_key("b"));
    }
}
