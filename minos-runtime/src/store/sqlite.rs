//! The embedded backend: SQLite on disk (or in memory), the default store of a service with no database
//! configured. Queries run in SQL over the JSON snapshot column.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::check_applies;
use super::{
    format_time, EventFilter, EventStore, HeldWrites, InboxEntry, InboxStore, OutboxRecord,
    OutboxStore, Query, Snapshot, SnapshotStore, StoreError, StoredEvent, TransactionStore,
};
use super::{ExecutionRecord, SagaStore};
use crate::domain::{
    Action, Comparison, Condition, Direction, DomainMessage, Event, ExecutionStatus, FieldPath,
    TransactionEntry, TransactionStatus,
};

const BACKEND: &str = "sqlite";

/// Versioned schema migrations, applied in order; `PRAGMA user_version` records the last one applied.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("sql/sqlite/0001_init.sql")),
    (2, include_str!("sql/sqlite/0002_inbox.sql")),
    (3, include_str!("sql/sqlite/0003_transactions.sql")),
    (4, include_str!("sql/sqlite/0004_saga_executions.sql")),
    (5, include_str!("sql/sqlite/0005_transaction_claims.sql")),
];

/// SQLite store. One connection serialises writers, which SQLite does anyway.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    path: Option<PathBuf>,
    // Appends go to one writer thread, which commits those waiting together (group commit).
    appends: std::sync::mpsc::Sender<AppendJob>,
}

struct AppendJob {
    event: Event,
    messages: Vec<DomainMessage>,
    reply: tokio::sync::oneshot::Sender<Result<StoredEvent, StoreError>>,
}

/// Most appends committed in one transaction.
const MAX_BATCH: usize = 256;

fn writer(conn: Arc<Mutex<Connection>>, jobs: std::sync::mpsc::Receiver<AppendJob>) {
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
        migrate(&mut conn)?;
        let conn = Arc::new(Mutex::new(conn));
        let (appends, jobs) = std::sync::mpsc::channel();
        let writer_conn = Arc::clone(&conn);
        std::thread::Builder::new()
            .name("minos-sqlite-writer".into())
            .spawn(move || writer(writer_conn, jobs))
            .map_err(|e| StoreError::backend(BACKEND, e))?;
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

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(sql_err)?;
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        let tx = conn.transaction().map_err(sql_err)?;
        tx.execute_batch(sql).map_err(sql_err)?;
        // PRAGMA takes no bound parameters; the version is one of our constants.
        tx.execute_batch(&format!("PRAGMA user_version = {version}"))
            .map_err(sql_err)?;
        tx.commit().map_err(sql_err)?;
    }
    Ok(())
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

type SnapshotRow = (String, String, i64, Option<String>, String, String);

const SNAPSHOT_COLUMNS: &str = "uuid, name, version, data, created_at, updated_at";

fn snapshot_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<SnapshotRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
    ))
}

fn decode_snapshot(row: SnapshotRow) -> Result<Snapshot, StoreError> {
    let (uuid, name, version, data, created_at, updated_at) = row;
    Ok(Snapshot {
        uuid: parse_uuid(&uuid)?,
        name,
        version: version as u64,
        created_at: parse_time(&created_at)?,
        updated_at: parse_time(&updated_at)?,
        data: data
            .map(|d| from_text::<Map<String, Value>>(&d))
            .transpose()?,
    })
}

fn load_snapshot(conn: &Connection, uuid: &str) -> Result<Option<Snapshot>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE uuid = ?1"
    ))
    .map_err(sql_err)?
    .query_row([uuid], snapshot_row)
    .optional()
    .map_err(sql_err)?
    .map(decode_snapshot)
    .transpose()
}

/// Records that `entry`'s message was handled; [`StoreError::AlreadyProcessed`] if it already was.
fn record_inbox(tx: &rusqlite::Transaction<'_>, entry: &InboxEntry) -> Result<(), StoreError> {
    let inserted = tx
        .prepare_cached(
            "INSERT INTO inbox (consumer, identifier, processed_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (consumer, identifier) DO NOTHING",
        )
        .map_err(sql_err)?
        .execute(params![
            entry.consumer,
            entry.identifier.to_string(),
            format_time(super::now())
        ])
        .map_err(sql_err)?;
    if inserted == 0 {
        return Err(StoreError::AlreadyProcessed {
            consumer: entry.consumer.clone(),
            identifier: entry.identifier,
        });
    }
    Ok(())
}

/// Appends every event and records the inbox entry, all or nothing.
fn commit_unit_in(
    conn: &mut Connection,
    appends: &[(Event, Vec<DomainMessage>)],
    inbox: Option<&InboxEntry>,
) -> Result<Vec<StoredEvent>, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_err)?;
    if let Some(entry) = inbox {
        record_inbox(&tx, entry)?;
    }
    let mut stored = Vec::with_capacity(appends.len());
    for (event, messages) in appends {
        // An error drops `tx`, which rolls everything back.
        stored.push(append_tx(&tx, event, messages)?);
    }
    tx.commit().map_err(sql_err)?;
    Ok(stored)
}

fn append_tx(
    tx: &Connection,
    event: &Event,
    messages: &[DomainMessage],
) -> Result<StoredEvent, StoreError> {
    let uuid = event.uuid.to_string();
    let current = load_snapshot(tx, &uuid)?;
    check_applies(current.as_ref(), event)?;
    let snapshot = Snapshot::next(current.as_ref(), event)?;
    let created_at = format_time(event.created_at);
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
    let id = tx.last_insert_rowid();
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
    {
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO outbox (identifier, topic, key, payload, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(sql_err)?;
        for message in messages {
            insert
                .execute(params![
                    message.identifier.to_string(),
                    message.topic,
                    message.key,
                    to_text(&message.content)?,
                    created_at
                ])
                .map_err(sql_err)?;
        }
    }
    Ok(StoredEvent {
        id,
        event: event.clone(),
    })
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn append(
        &self,
        event: &Event,
        messages: &[DomainMessage],
    ) -> Result<StoredEvent, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = AppendJob {
            event: event.clone(),
            messages: messages.to_vec(),
            reply,
        };
        self.appends
            .send(job)
            .map_err(|_| StoreError::backend(BACKEND, "the writer thread stopped"))?;
        answer
            .await
            .map_err(|_| StoreError::backend(BACKEND, "the writer thread dropped an append"))?
    }

    async fn commit_unit(
        &self,
        appends: &[(Event, Vec<DomainMessage>)],
        inbox: Option<&InboxEntry>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let (appends, inbox) = (appends.to_vec(), inbox.cloned());
        self.with(move |conn| commit_unit_in(conn, &appends, inbox.as_ref()))
            .await
    }

    async fn events(&self, filter: &EventFilter) -> Result<Vec<StoredEvent>, StoreError> {
        let filter = filter.clone();
        self.with(move |conn| {
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
                args.push(SqlValue::Integer(limit.min(i64::MAX as usize) as i64));
                sql.push_str(&format!(" LIMIT ?{}", args.len()));
            }
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
                let (id, uuid, name, version, action, data, created_at) = row.map_err(sql_err)?;
                let action = Action::parse(&action).ok_or_else(|| {
                    StoreError::backend(BACKEND, format!("unknown action `{action}`"))
                })?;
                out.push(StoredEvent {
                    id,
                    event: Event {
                        uuid: parse_uuid(&uuid)?,
                        name,
                        version: version as u64,
                        action,
                        created_at: parse_time(&created_at)?,
                        fields_diff: from_text(&data)?,
                    },
                });
            }
            Ok(out)
        })
        .await
    }
}

/// Builds a WHERE clause with every value bound as a parameter.
struct SqlBuilder {
    args: Vec<SqlValue>,
}

impl SqlBuilder {
    fn bind(&mut self, value: SqlValue) -> String {
        self.args.push(value);
        format!("?{}", self.args.len())
    }

    fn bind_json(&mut self, value: &Value) -> String {
        let bound = match value {
            Value::Null => SqlValue::Null,
            Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
            Value::Number(n) => match n.as_i64() {
                Some(i) => SqlValue::Integer(i),
                None => SqlValue::Real(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => SqlValue::Text(s.clone()),
            compound => SqlValue::Text(compound.to_string()),
        };
        self.bind(bound)
    }

    /// The SQL expression reading `path`, and, for data fields, the bound JSON path parameter.
    fn field(&mut self, path: &FieldPath) -> (String, Option<String>) {
        if let Some(column) = path.meta() {
            return (column.to_owned(), None);
        }
        let json_path = path
            .as_str()
            .split('.')
            .fold(String::from("$"), |acc, segment| {
                format!("{acc}.\"{segment}\"")
            });
        let p = self.bind(SqlValue::Text(json_path));
        (format!("json_extract(data, {p})"), Some(p))
    }

    fn condition(&mut self, condition: &Condition) -> String {
        match condition {
            Condition::True => "1".into(),
            Condition::False => "0".into(),
            Condition::And { all } if all.is_empty() => "1".into(),
            Condition::Or { any } if any.is_empty() => "0".into(),
            Condition::And { all } => self.join(all, " AND "),
            Condition::Or { any } => self.join(any, " OR "),
            Condition::Not { inner } => format!("(NOT COALESCE({}, 0))", self.condition(inner)),
            Condition::Compare { field, cmp, value } => {
                let (expr, _) = self.field(field);
                if value.is_null() {
                    return match cmp {
                        Comparison::Equal => format!("({expr} IS NULL)"),
                        _ => "0".into(),
                    };
                }
                let v = self.bind_json(value);
                let op = match cmp {
                    Comparison::Equal => "=",
                    Comparison::NotEqual => "<>",
                    Comparison::Lower => "<",
                    Comparison::LowerEqual => "<=",
                    Comparison::Greater => ">",
                    Comparison::GreaterEqual => ">=",
                };
                format!("COALESCE({expr} {op} {v}, 0)")
            }
            Condition::In { field, values } => {
                let values: Vec<&Value> = values.iter().filter(|v| !v.is_null()).collect();
                if values.is_empty() {
                    return "0".into();
                }
                let (expr, _) = self.field(field);
                let list: Vec<String> = values.into_iter().map(|v| self.bind_json(v)).collect();
                format!("COALESCE({expr} IN ({}), 0)", list.join(", "))
            }
            Condition::Contains { field, value } => {
                let Some(path) = self.field(field).1 else {
                    return "0".into();
                };
                let v = self.bind_json(value);
                format!(
                    "(json_type(data, {path}) = 'array' AND EXISTS (SELECT 1 FROM json_each(data, {path}) AS item WHERE item.value = {v}))"
                )
            }
            Condition::Like { field, pattern } => {
                let (expr, path) = self.field(field);
                let glob = self.bind(SqlValue::Text(like_to_glob(pattern)));
                let is_text = match path {
                    Some(p) => format!("json_type(data, {p}) = 'text'"),
                    None => format!("typeof({expr}) = 'text'"),
                };
                format!("({is_text} AND {expr} GLOB {glob})")
            }
        }
    }

    fn join(&mut self, items: &[Condition], separator: &str) -> String {
        let parts: Vec<String> = items.iter().map(|c| self.condition(c)).collect();
        format!("({})", parts.join(separator))
    }
}

/// SQL LIKE (`%`, `_`) as a case-sensitive GLOB with the GLOB wildcards in the text escaped.
fn like_to_glob(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    for c in pattern.chars() {
        match c {
            '%' => out.push('*'),
            '_' => out.push('?'),
            '*' | '?' | '[' => {
                out.push('[');
                out.push(c);
                out.push(']');
            }
            c => out.push(c),
        }
    }
    out
}

#[async_trait]
impl SnapshotStore for SqliteStore {
    async fn snapshot(&self, name: &str, uuid: Uuid) -> Result<Option<Snapshot>, StoreError> {
        let name = name.to_owned();
        self.with(
            move |conn| Ok(load_snapshot(conn, &uuid.to_string())?.filter(|s| s.name == name)),
        )
        .await
    }

    async fn find(&self, name: &str, query: &Query) -> Result<Vec<Snapshot>, StoreError> {
        query.validate()?;
        let mut builder = SqlBuilder { args: Vec::new() };
        let name_param = builder.bind(SqlValue::Text(name.to_owned()));
        let filter = builder.condition(&query.condition);
        let mut sql = format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE name = {name_param} AND data IS NOT NULL AND {filter} ORDER BY "
        );
        if let Some(ordering) = &query.ordering {
            let (expr, _) = builder.field(&ordering.field);
            let direction = match ordering.direction {
                Direction::Asc => "ASC",
                Direction::Desc => "DESC",
            };
            sql.push_str(&format!("{expr} {direction}, "));
        }
        sql.push_str("rowid");
        if let Some(limit) = query.limit {
            let p = builder.bind(SqlValue::Integer(limit.min(i64::MAX as usize) as i64));
            sql.push_str(&format!(" LIMIT {p}"));
        }
        let args = builder.args;
        self.with(move |conn| {
            let mut statement = conn.prepare_cached(&sql).map_err(sql_err)?;
            let rows = statement
                .query_map(rusqlite::params_from_iter(args), snapshot_row)
                .map_err(sql_err)?;
            rows.map(|row| decode_snapshot(row.map_err(sql_err)?))
                .collect()
        })
        .await
    }
}

#[async_trait]
impl OutboxStore for SqliteStore {
    async fn pending(&self, limit: usize) -> Result<Vec<OutboxRecord>, StoreError> {
        let limit = limit.min(i64::MAX as usize) as i64;
        self.with(move |conn| {
            let mut statement = conn
                .prepare_cached(
                    "SELECT id, identifier, topic, key, payload, created_at FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT ?1",
                )
                .map_err(sql_err)?;
            let rows = statement
                .query_map([limit], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, String>(3)?,
                        row.get::<_, String>(4)?,
                        row.get::<_, String>(5)?,
                    ))
                })
                .map_err(sql_err)?;
            let mut out = Vec::new();
            for row in rows {
                let (id, identifier, topic, key, payload, created_at) = row.map_err(sql_err)?;
                out.push(OutboxRecord {
                    id,
                    message: DomainMessage {
                        identifier: parse_uuid(&identifier)?,
                        topic,
                        key,
                        content: from_text(&payload)?,
                    },
                    created_at: parse_time(&created_at)?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn mark_sent(&self, ids: &[i64]) -> Result<(), StoreError> {
        let ids = ids.to_vec();
        self.with(move |conn| {
            let tx = conn.transaction().map_err(sql_err)?;
            {
                let now = format_time(super::now());
                let mut update = tx
                    .prepare_cached("UPDATE outbox SET sent_at = ?1 WHERE id = ?2")
                    .map_err(sql_err)?;
                for id in ids {
                    update.execute(params![now, id]).map_err(sql_err)?;
                }
            }
            tx.commit().map_err(sql_err)
        })
        .await
    }
}

type ExecutionRow = (String, String, String, String, String, String);

fn execution_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ExecutionRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
    ))
}

fn decode_execution(row: ExecutionRow) -> Result<ExecutionRecord, StoreError> {
    let (uuid, saga, status, data, created_at, updated_at) = row;
    Ok(ExecutionRecord {
        uuid: parse_uuid(&uuid)?,
        saga,
        status: ExecutionStatus::parse(&status).ok_or_else(|| {
            StoreError::backend(BACKEND, format!("unknown saga execution status `{status}`"))
        })?,
        data: from_text(&data)?,
        created_at: parse_time(&created_at)?,
        updated_at: parse_time(&updated_at)?,
    })
}

#[async_trait]
impl SagaStore for SqliteStore {
    async fn save_execution(&self, record: &ExecutionRecord) -> Result<(), StoreError> {
        let record = record.clone();
        self.with(move |conn| {
            conn.prepare_cached(
                "INSERT INTO saga_executions (uuid, saga, status, data, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (uuid) DO UPDATE SET saga = excluded.saga, \
                 status = excluded.status, data = excluded.data, updated_at = excluded.updated_at",
            )
            .map_err(sql_err)?
            .execute(params![
                record.uuid.to_string(),
                record.saga,
                record.status.as_str(),
                to_text(&record.data)?,
                format_time(record.created_at),
                format_time(record.updated_at)
            ])
            .map_err(sql_err)?;
            Ok(())
        })
        .await
    }

    async fn execution(&self, uuid: Uuid) -> Result<Option<ExecutionRecord>, StoreError> {
        self.with(move |conn| {
            conn.prepare_cached(
                "SELECT uuid, saga, status, data, created_at, updated_at FROM saga_executions WHERE uuid = ?1",
            )
            .map_err(sql_err)?
            .query_row([uuid.to_string()], execution_row)
            .optional()
            .map_err(sql_err)?
            .map(decode_execution)
            .transpose()
        })
        .await
    }

    async fn executions(
        &self,
        status: Option<ExecutionStatus>,
        limit: usize,
    ) -> Result<Vec<ExecutionRecord>, StoreError> {
        let status = status.map(ExecutionStatus::as_str);
        self.with(move |conn| {
            let mut statement = conn
                .prepare_cached(
                    "SELECT uuid, saga, status, data, created_at, updated_at FROM saga_executions \
                     WHERE (?1 IS NULL OR status = ?1) ORDER BY updated_at DESC, uuid DESC LIMIT ?2",
                )
                .map_err(sql_err)?;
            let rows = statement
                .query_map(params![status, limit as i64], execution_row)
                .map_err(sql_err)?;
            rows.map(|row| decode_execution(row.map_err(sql_err)?))
                .collect()
        })
        .await
    }

    async fn stale_executions(
        &self,
        status: ExecutionStatus,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ExecutionRecord>, StoreError> {
        let status = status.as_str();
        self.with(move |conn| {
            let mut statement = conn
                .prepare_cached(
                    "SELECT uuid, saga, status, data, created_at, updated_at FROM saga_executions \
                     WHERE status = ?1 AND updated_at < ?2 ORDER BY updated_at, uuid LIMIT ?3",
                )
                .map_err(sql_err)?;
            let rows = statement
                .query_map(
                    params![status, format_time(before), limit as i64],
                    execution_row,
                )
                .map_err(sql_err)?;
            rows.map(|row| decode_execution(row.map_err(sql_err)?))
                .collect()
        })
        .await
    }
}

fn decode_transaction(
    row: (String, String, Option<String>, String),
) -> Result<TransactionEntry, StoreError> {
    let (uuid, status, destination, updated_at) = row;
    Ok(TransactionEntry {
        uuid: parse_uuid(&uuid)?,
        status: TransactionStatus::parse(&status).ok_or_else(|| {
            StoreError::backend(BACKEND, format!("unknown transaction status `{status}`"))
        })?,
        destination: destination.as_deref().map(parse_uuid).transpose()?,
        updated_at: parse_time(&updated_at)?,
    })
}

type TransactionRow = (String, String, Option<String>, String);

fn transaction_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TransactionRow> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
}

#[async_trait]
impl TransactionStore for SqliteStore {
    async fn save_transaction(&self, entry: &TransactionEntry) -> Result<(), StoreError> {
        let entry = entry.clone();
        self.with(move |conn| {
            conn.prepare_cached(
                "INSERT INTO transactions (uuid, status, destination, updated_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (uuid) DO UPDATE SET status = excluded.status, destination = excluded.destination, \
                 updated_at = excluded.updated_at",
            )
            .map_err(sql_err)?
            .execute(params![
                entry.uuid.to_string(),
                entry.status.as_str(),
                entry.destination.map(|d| d.to_string()),
                format_time(entry.updated_at)
            ])
            .map_err(sql_err)?;
            Ok(())
        })
        .await
    }

    async fn transaction(&self, uuid: Uuid) -> Result<Option<TransactionEntry>, StoreError> {
        self.with(move |conn| {
            conn.prepare_cached(
                "SELECT uuid, status, destination, updated_at FROM transactions WHERE uuid = ?1",
            )
            .map_err(sql_err)?
            .query_row([uuid.to_string()], transaction_row)
            .optional()
            .map_err(sql_err)?
            .map(decode_transaction)
            .transpose()
        })
        .await
    }

    async fn transactions_in(
        &self,
        statuses: &[TransactionStatus],
        before: DateTime<Utc>,
    ) -> Result<Vec<TransactionEntry>, StoreError> {
        // The six status names are the only values: a JSON array of them is matched with json_each.
        let statuses =
            serde_json::to_string(&statuses.iter().map(|s| s.as_str()).collect::<Vec<_>>())
                .map_err(|e| StoreError::backend(BACKEND, e))?;
        self.with(move |conn| {
            let mut statement = conn
                .prepare_cached(
                    "SELECT uuid, status, destination, updated_at FROM transactions \
                     WHERE status IN (SELECT value FROM json_each(?1)) AND updated_at < ?2 \
                     ORDER BY updated_at, uuid",
                )
                .map_err(sql_err)?;
            let rows = statement
                .query_map(params![statuses, format_time(before)], transaction_row)
                .map_err(sql_err)?;
            rows.map(|row| decode_transaction(row.map_err(sql_err)?))
                .collect()
        })
        .await
    }

    async fn hold(
        &self,
        transaction: Uuid,
        writes: &[(Event, Vec<DomainMessage>)],
        inbox: Option<&InboxEntry>,
    ) -> Result<(), StoreError> {
        let (writes, inbox) = (writes.to_vec(), inbox.cloned());
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql_err)?;
            if let Some(entry) = &inbox {
                record_inbox(&tx, entry)?;
            }
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO transaction_writes (transaction_uuid, event, messages) VALUES (?1, ?2, ?3)",
                    )
                    .map_err(sql_err)?;
                for (event, messages) in &writes {
                    insert
                        .execute(params![transaction.to_string(), to_text(event)?, to_text(messages)?])
                        .map_err(sql_err)?;
                }
            }
            tx.commit().map_err(sql_err)
        })
        .await
    }

    async fn held(&self, transaction: Uuid) -> Result<HeldWrites, StoreError> {
        self.with(move |conn| {
            let mut statement = conn
                .prepare_cached(
                    "SELECT event, messages FROM transaction_writes WHERE transaction_uuid = ?1 ORDER BY id",
                )
                .map_err(sql_err)?;
            let rows = statement
                .query_map([transaction.to_string()], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)))
                .map_err(sql_err)?;
            rows.map(|row| {
                let (event, messages) = row.map_err(sql_err)?;
                Ok((from_text(&event)?, from_text(&messages)?))
            })
            .collect()
        })
        .await
    }

    async fn release(&self, transaction: Uuid) -> Result<(), StoreError> {
        self.with(move |conn| {
            let tx = conn.transaction().map_err(sql_err)?;
            for table in ["transaction_writes", "transaction_claims"] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE transaction_uuid = ?1"),
                    [transaction.to_string()],
                )
                .map_err(sql_err)?;
            }
            tx.commit().map_err(sql_err)
        })
        .await
    }

    async fn claim(
        &self,
        destination: Option<Uuid>,
        transaction: Uuid,
        roots: &[Uuid],
    ) -> Result<Option<(Uuid, Uuid)>, StoreError> {
        let destination = destination.unwrap_or(Uuid::nil()).to_string();
        let roots = roots.to_vec();
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql_err)?;
            {
                let mut holder = tx
                    .prepare_cached(
                        "SELECT transaction_uuid FROM transaction_claims WHERE destination = ?1 AND root = ?2",
                    )
                    .map_err(sql_err)?;
                for root in &roots {
                    let held: Option<String> = holder
                        .query_row(params![destination, root.to_string()], |row| row.get(0))
                        .optional()
                        .map_err(sql_err)?;
                    if let Some(held) = held {
                        let held = parse_uuid(&held)?;
                        if held != transaction {
                            return Ok(Some((*root, held)));
                        }
                    }
                }
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO transaction_claims (destination, root, transaction_uuid) VALUES (?1, ?2, ?3) \
                         ON CONFLICT (destination, root) DO NOTHING",
                    )
                    .map_err(sql_err)?;
                for root in &roots {
                    insert
                        .execute(params![destination, root.to_string(), transaction.to_string()])
                        .map_err(sql_err)?;
                }
            }
            tx.commit().map_err(sql_err)?;
            Ok(None)
        })
        .await
    }
}

#[async_trait]
impl InboxStore for SqliteStore {
    async fn is_processed(&self, entry: &InboxEntry) -> Result<bool, StoreError> {
        let entry = entry.clone();
        self.with(move |conn| {
            conn.prepare_cached("SELECT 1 FROM inbox WHERE consumer = ?1 AND identifier = ?2")
                .map_err(sql_err)?
                .query_row(
                    params![entry.consumer, entry.identifier.to_string()],
                    |_| Ok(()),
                )
                .optional()
                .map(|found| found.is_some())
                .map_err(sql_err)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_becomes_an_escaped_glob() {
        assert_eq!(like_to_glob("a%b_c"), "a*b?c");
        assert_eq!(like_to_glob("*?["), "[*][?][[]");
    }

    #[test]
    fn migrations_are_idempotent() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.last().unwrap().0);
    }
}
