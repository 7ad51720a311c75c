//! The store layer: ports for events, snapshots and the outbox, with in-memory and embedded (SQLite)
//! adapters. Every adapter passes the same conformance suite (`conformance`, behind the `testing` feature).

mod feed;
mod inbox;
mod lease;
mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
mod retention;
#[cfg(feature = "sqlite")]
mod sqlite;
mod transactions;

pub use feed::{CommitFeed, FeedTicket};
pub(crate) use inbox::stored_reply_text;
pub use inbox::{InboxEntry, InboxStore, INBOX_REPLY_MAX};
pub use lease::RelayLease;
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::{PostgresOptions, PostgresStore};
pub use retention::{Retained, RetentionStore};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;
#[cfg(feature = "sqlite")]
pub(crate) use sqlite::{READER_CACHE, WRITER_CACHE};
pub(crate) use transactions::needs_claims;
pub use transactions::{ClaimedCommit, HeldWrites, TransactionStore};

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::domain::{Condition, DomainError, DomainMessage, Event, ExecutionStatus, Ordering};

/// Errors of the store layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another writer changed the root first: reload and retry.
    #[error("version conflict on {name} {uuid}: expected version {expected}, found {actual}")]
    Conflict {
        /// The root entity's type name.
        name: String,
        /// The root.
        uuid: Uuid,
        /// The version the writer based its change on.
        expected: u64,
        /// The version in the store.
        actual: u64,
    },
    /// No root with this uuid.
    #[error("{name} {uuid} not found")]
    NotFound {
        /// The type name looked for.
        name: String,
        /// The uuid looked for.
        uuid: Uuid,
    },
    /// The root was deleted.
    #[error("{name} {uuid} is already deleted")]
    AlreadyDeleted {
        /// The type name.
        name: String,
        /// The root.
        uuid: Uuid,
    },
    /// The consumer already handled this message (a redelivery): nothing was written.
    #[error("message {identifier} was already handled by `{consumer}`")]
    AlreadyProcessed {
        /// The consumer (service).
        consumer: String,
        /// The message's identifier.
        identifier: Uuid,
    },
    /// Writes held into a transaction the store has no entry for (never opened, or lost with a
    /// database restart before its first write reached the disk): nothing was written. Open the
    /// transaction again, then write again.
    #[error("transaction {transaction} has no entry: its writes were not held")]
    UnknownTransaction {
        /// The transaction written into.
        transaction: Uuid,
    },
    /// Writes held into a transaction that is no longer pending (reserved, committed, rejected):
    /// nothing was written.
    #[error("transaction {transaction} is {}: it takes no more writes", .status.as_str())]
    TransactionClosed {
        /// The transaction written into.
        transaction: Uuid,
        /// Its status.
        status: crate::domain::TransactionStatus,
    },
    /// A transaction's entry or the writes it holds changed while its commit ran (a write held, or
    /// the entry moved on, by a concurrent command): nothing was written. Read the transaction
    /// again, then commit again.
    #[error("transaction {transaction} changed while it was being committed: nothing was written")]
    TransactionChanged {
        /// The transaction committed.
        transaction: Uuid,
    },
    /// A query names an invalid field path.
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// A stored value does not decode.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The backend cannot be reached (connection refused or lost, pool exhausted): try again later.
    #[error("{backend} store unavailable: {source}")]
    Unavailable {
        /// Which backend.
        backend: &'static str,
        /// What it said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The backend failed (IO, SQL, connection).
    #[error("{backend} store: {source}")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// What it said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    /// Wraps a backend error.
    pub fn backend(
        backend: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        StoreError::Backend {
            backend,
            source: source.into(),
        }
    }
}

/// An event with its place in the store.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    /// Global, increasing id (in the order ids were taken, which on PostgreSQL is not the order in
    /// which their transactions committed: follow [`position`](Self::position) to read without gaps).
    pub id: i64,
    /// The commit group the event belongs to: the number of the transaction that wrote it on
    /// PostgreSQL, 0 on stores that commit one writer at a time.
    pub commit: i64,
    /// The event.
    pub event: Event,
}

impl StoredEvent {
    /// The event's place in commit order.
    pub fn position(&self) -> Position {
        Position {
            commit: self.commit,
            id: self.id,
        }
    }
}

/// A place in a store's commit order: a reader that asks for the events after the last position it
/// read never skips one that commits late (see [`EventStore::log`]). Shown as `commit.id`; the start
/// of a log is `0.0`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// The commit group (the writing transaction's number on PostgreSQL, else 0).
    pub commit: i64,
    /// The event id.
    pub id: i64,
}

impl Position {
    /// Before every event.
    pub const START: Position = Position { commit: 0, id: 0 };
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.commit, self.id)
    }
}

impl std::str::FromStr for Position {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || format!("`{s}` is not a position: expected `COMMIT.ID`, like `0.42`");
        let (commit, id) = s.split_once('.').ok_or_else(invalid)?;
        let commit: i64 = commit.parse().map_err(|_| invalid())?;
        let id: i64 = id.parse().map_err(|_| invalid())?;
        if commit < 0 || id < 0 {
            return Err(invalid());
        }
        Ok(Position { commit, id })
    }
}

impl serde::Serialize for Position {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Position {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Which events to read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventFilter {
    /// Only this root.
    pub uuid: Option<Uuid>,
    /// Only roots of this type.
    pub name: Option<String>,
    /// Only events after this global position.
    pub after_id: Option<i64>,
    /// At most this many.
    pub limit: Option<usize>,
}

/// The latest state of one root entity.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// The root.
    pub uuid: Uuid,
    /// Its type name.
    pub name: String,
    /// Its version.
    pub version: u64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Its fields; `None` once deleted.
    pub data: Option<Map<String, Value>>,
}

impl Snapshot {
    /// The document a `Condition` is evaluated on: the fields plus the meta keys.
    pub fn document(&self) -> Value {
        let mut doc = self.data.clone().unwrap_or_default();
        for column in minos_rules::RESERVED_FIELDS {
            doc.insert(column.into(), self.meta_value(column));
        }
        Value::Object(doc)
    }

    fn meta_value(&self, column: &str) -> Value {
        match column {
            "uuid" => Value::String(self.uuid.to_string()),
            "version" => Value::from(self.version),
            "created_at" => Value::String(format_time(self.created_at)),
            _ => Value::String(format_time(self.updated_at)),
        }
    }

    /// The snapshot after `event`, which must follow it (or create it when `previous` is `None`).
    pub fn next(previous: Option<&Snapshot>, event: &Event) -> Result<Snapshot, DomainError> {
        use crate::domain::Action;
        let mut data = previous.and_then(|s| s.data.clone()).unwrap_or_default();
        let deleted = event.action == Action::Delete;
        if !deleted {
            event.apply_json(&mut data)?;
        }
        Ok(Snapshot {
            uuid: event.uuid,
            name: event.name.clone(),
            version: event.version,
            created_at: previous.map_or(event.created_at, |s| s.created_at),
            updated_at: event.created_at,
            data: (!deleted).then_some(data),
        })
    }
}

impl crate::domain::Document for Snapshot {
    fn field(&self, path: &crate::domain::FieldPath) -> std::borrow::Cow<'_, Value> {
        use std::borrow::Cow;
        if let Some(column) = path.meta() {
            return Cow::Owned(self.meta_value(column));
        }
        let mut segments = path.as_str().split('.');
        let first = segments.next().unwrap_or_default();
        match self.data.as_ref().and_then(|data| data.get(first)) {
            Some(value) => Cow::Borrowed(crate::domain::lookup_segments(value, segments)),
            None => Cow::Owned(Value::Null),
        }
    }
}

/// A snapshot query: condition, ordering and limit. Deleted roots are never returned.
#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    /// The filter.
    pub condition: Condition,
    /// The order (insertion order when `None`, and as a tie-break).
    pub ordering: Option<Ordering>,
    /// At most this many.
    pub limit: Option<usize>,
}

impl Default for Query {
    fn default() -> Self {
        Query {
            condition: Condition::True,
            ordering: None,
            limit: None,
        }
    }
}

impl Query {
    /// Rejects field paths that are not dotted identifiers.
    pub fn validate(&self) -> Result<(), StoreError> {
        let ordering = self.ordering.iter().map(|o| &o.field);
        for path in self.condition.fields().into_iter().chain(ordering) {
            if path.segments().is_none() {
                return Err(StoreError::InvalidQuery(format!(
                    "`{path}` is not a field path: write dotted names of letters, digits and `_`, like `address.city`"
                )));
            }
        }
        Ok(())
    }
}

/// A message waiting in the outbox.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxRecord {
    /// Increasing position; relays publish in this order.
    pub id: i64,
    /// The message.
    pub message: DomainMessage,
    /// When it was written.
    pub created_at: DateTime<Utc>,
}

/// The event store port.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Appends `event` and writes `messages` to the outbox, in one atomic step, and brings the snapshot up
    /// to date.
    ///
    /// A creation (version 1) needs a new uuid; an update or deletion with version `n` needs the stored
    /// version to be `n - 1` ([`StoreError::Conflict`] otherwise, [`StoreError::NotFound`] for an unknown
    /// root, [`StoreError::AlreadyDeleted`] after a deletion).
    async fn append(
        &self,
        event: &Event,
        messages: &[DomainMessage],
    ) -> Result<StoredEvent, StoreError>;

    /// Events in global order.
    async fn events(&self, filter: &EventFilter) -> Result<Vec<StoredEvent>, StoreError>;

    /// The events of root type `name` after `after`, in commit order, at most `limit`: a reader that
    /// continues from the position of the last event it read never skips one. Events whose commit
    /// order is not settled yet (on PostgreSQL, while an older transaction that may still write is
    /// open) are left for a later read.
    ///
    /// By default the global id order, which is the commit order of stores that commit one writer at
    /// a time.
    async fn log(
        &self,
        name: &str,
        after: Position,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let filter = EventFilter {
            name: Some(name.to_owned()),
            after_id: Some(after.id),
            limit: Some(limit),
            ..EventFilter::default()
        };
        self.events(&filter).await
    }

    /// How many events of root type `name` come after `after` (a reader's lag).
    async fn log_behind(&self, name: &str, after: Position) -> Result<u64, StoreError> {
        let filter = EventFilter {
            name: Some(name.to_owned()),
            after_id: Some(after.id),
            ..EventFilter::default()
        };
        Ok(self.events(&filter).await?.len() as u64)
    }

    /// Whether the store answers now (the health check): by default, one indexed read that finds
    /// nothing.
    async fn ping(&self) -> Result<(), StoreError> {
        let filter = EventFilter {
            after_id: Some(i64::MAX),
            limit: Some(1),
            ..EventFilter::default()
        };
        self.events(&filter).await.map(|_| ())
    }

    /// Appends every event (each with its messages) and records `inbox`, all in one transaction: either
    /// everything is stored or nothing is. With `inbox` already recorded, nothing is written and the
    /// answer is [`StoreError::AlreadyProcessed`]. A store may record an entry without writes and
    /// without a reply a moment later ([`InboxStore::settle`]); a unit with nothing but such an entry
    /// is then refused only while the store remembers it (the PostgreSQL store: held, or recorded
    /// within the last second), since there is nothing such a copy could write twice.
    async fn commit_unit(
        &self,
        appends: &[(Event, Vec<DomainMessage>)],
        inbox: Option<&InboxEntry>,
    ) -> Result<Vec<StoredEvent>, StoreError>;
}

/// The snapshot store port: latest states and queries over them.
#[async_trait]
pub trait SnapshotStore: Send + Sync {
    /// The snapshot of one root (deleted ones too, with `data: None`).
    async fn snapshot(&self, name: &str, uuid: Uuid) -> Result<Option<Snapshot>, StoreError>;

    /// Live snapshots of one type matching the query.
    async fn find(&self, name: &str, query: &Query) -> Result<Vec<Snapshot>, StoreError>;
}

/// The outbox port: messages committed with their events, waiting to be published.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// The oldest unsent messages.
    async fn pending(&self, limit: usize) -> Result<Vec<OutboxRecord>, StoreError> {
        self.pending_in(0..i64::MAX, limit).await
    }

    /// The oldest unsent messages whose ids are in `ids` (outbox ids start at 1), in id order.
    async fn pending_in(
        &self,
        ids: std::ops::Range<i64>,
        limit: usize,
    ) -> Result<Vec<OutboxRecord>, StoreError>;

    /// Marks messages as published.
    async fn mark_sent(&self, ids: &[i64]) -> Result<(), StoreError>;

    /// How many messages wait to be published, and when the oldest was written. The default reads
    /// them (up to 10,000); the database stores count.
    async fn backlog(&self) -> Result<(u64, Option<DateTime<Utc>>), StoreError> {
        let pending = self.pending(10_000).await?;
        Ok((
            pending.len() as u64,
            pending.first().map(|record| record.created_at),
        ))
    }

    /// The rows this store hands its relay as it commits them, if it does ([`CommitFeed`]): the relay
    /// then reads the table only for what the feed does not hold. None by default.
    fn feed(&self) -> Option<Arc<CommitFeed>> {
        None
    }

    /// Leadership of the relay for this store: `Some` while this process may publish the outbox, `None`
    /// when another process's relay holds it (replicas of a service share one database, and only one
    /// relay should publish its rows, in order). Held until the lease is dropped or its process ends.
    /// Stores used by one process at a time grant it always.
    async fn relay_lease(&self) -> Result<Option<RelayLease>, StoreError> {
        Ok(Some(RelayLease::unconditional()))
    }
}

/// The persisted state of one saga execution.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecutionRecord {
    /// The execution (also its transaction's uuid).
    pub uuid: Uuid,
    /// The saga's name.
    pub saga: String,
    /// Where it stands.
    pub status: ExecutionStatus,
    /// Everything else (context, position, participants), as the saga layer writes it.
    pub data: Value,
    /// When it started.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// The saga execution port.
#[async_trait]
pub trait SagaStore: Send + Sync {
    /// Inserts or replaces an execution.
    async fn save_execution(&self, record: &ExecutionRecord) -> Result<(), StoreError>;

    /// The execution with this uuid.
    async fn execution(&self, uuid: Uuid) -> Result<Option<ExecutionRecord>, StoreError>;

    /// Executions, newest change first, only those in `status` when given; at most `limit`.
    async fn executions(
        &self,
        status: Option<ExecutionStatus>,
        limit: usize,
    ) -> Result<Vec<ExecutionRecord>, StoreError>;

    /// Executions in `status` unchanged since before `before`, oldest change first; at most `limit`
    /// (for the jobs that time out and resume executions).
    async fn stale_executions(
        &self,
        status: ExecutionStatus,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ExecutionRecord>, StoreError>;
}

/// One registered service instance, as a registry keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceRecord {
    /// The service's name.
    pub service: String,
    /// The instance's id, unique within its service (replicas of a service each have one).
    pub instance: String,
    /// Where it listens.
    pub address: String,
    /// Its HTTP port.
    pub port: u16,
    /// Its REST endpoints: `[["GET", "/foos/{uuid}"], ...]`.
    pub endpoints: Value,
    /// Whether it declared itself able to serve when it registered.
    pub status: bool,
    /// The registry's last health probe of it passed (true until a probe fails).
    pub healthy: bool,
    /// When it (last) registered.
    pub registered_at: DateTime<Utc>,
    /// Its last registration or heartbeat.
    pub last_seen: DateTime<Utc>,
}

/// The registry port: service instances with their leases and health, and a version bumped by every
/// change, so readers cache the listing and ask only whether it changed. Replicas of a registry share
/// one store.
#[async_trait]
pub trait RegistryStore: Send + Sync {
    /// Inserts or replaces an instance (by service and instance id). Returns the registry's version.
    async fn register_instance(&self, record: &InstanceRecord) -> Result<u64, StoreError>;

    /// Records a heartbeat (`last_seen = at`); `false` when the instance is not registered.
    async fn touch_instance(
        &self,
        service: &str,
        instance: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Records a health probe's verdict; `false` when the instance is not registered. The version is
    /// bumped only when the verdict changed.
    async fn set_instance_health(
        &self,
        service: &str,
        instance: &str,
        healthy: bool,
    ) -> Result<bool, StoreError>;

    /// Removes one instance of `service`, or all of them; returns how many were removed.
    async fn remove_instances(
        &self,
        service: &str,
        instance: Option<&str>,
    ) -> Result<usize, StoreError>;

    /// Removes the instances last seen before `before` (their lease ran out) and returns them.
    async fn expire_instances(
        &self,
        before: DateTime<Utc>,
    ) -> Result<Vec<InstanceRecord>, StoreError>;

    /// The registry's version and every instance, by service then instance id.
    async fn registry(&self) -> Result<(u64, Vec<InstanceRecord>), StoreError>;
}

/// A backend implementing every port.
pub trait Store:
    EventStore
    + SnapshotStore
    + OutboxStore
    + InboxStore
    + TransactionStore
    + SagaStore
    + RegistryStore
    + RetentionStore
    + fmt::Debug
    + 'static
{
}

impl<
        T: EventStore
            + SnapshotStore
            + OutboxStore
            + InboxStore
            + TransactionStore
            + SagaStore
            + RegistryStore
            + RetentionStore
            + fmt::Debug
            + 'static,
    > Store for T
{
}

/// A shared backend.
pub type SharedStore = Arc<dyn Store>;

/// Checks that `event` applies on top of `current`, the latest state of its root as the writer's
/// destination sees it (a store, or a transaction's view): the one version check of every backend and of
/// transactions. A creation needs no root yet; a change or deletion needs the live root at the version
/// before its own.
pub(crate) fn check_applies(current: Option<&Snapshot>, event: &Event) -> Result<(), StoreError> {
    let conflict = |actual: u64| StoreError::Conflict {
        name: event.name.clone(),
        uuid: event.uuid,
        expected: event.version.saturating_sub(1),
        actual,
    };
    use crate::domain::Action;
    match (current, event.action) {
        (None, Action::Create) if event.version == 1 => Ok(()),
        (None, Action::Create) => Err(conflict(0)),
        (None, _) => Err(StoreError::NotFound {
            name: event.name.clone(),
            uuid: event.uuid,
        }),
        (Some(s), _) if s.name != event.name => Err(StoreError::NotFound {
            name: event.name.clone(),
            uuid: event.uuid,
        }),
        (Some(s), Action::Create) => Err(conflict(s.version)),
        (Some(s), _) if s.data.is_none() => Err(StoreError::AlreadyDeleted {
            name: event.name.clone(),
            uuid: event.uuid,
        }),
        (Some(s), _) if s.version + 1 != event.version => Err(conflict(s.version)),
        (Some(_), _) => Ok(()),
    }
}

/// The one text format of timestamps in stores and queries: RFC 3339, UTC, microseconds.
pub fn format_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The current time at the precision stores keep (microseconds).
#[doc(hidden)]
pub fn now() -> DateTime<Utc> {
    let now = Utc::now();
    let micros = now.timestamp_micros();
    DateTime::from_timestamp_micros(micros).unwrap_or(now)
}
