//! The repository: typed entity operations over a store, and how a task finds the one to use.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::Notify;

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::domain::{Action, Condition, Event, Meta, Ordering, Root, RootEntity};
use crate::error::{Error, Result};
use crate::store::{
    check_applies, now, EventFilter, HeldWrites, InboxEntry, MemoryStore, Query, SharedStore,
    Snapshot, Store, StoreError, StoredEvent,
};
use crate::transaction::{TransactionScope, Transactions, View, WriteScope};

/// The key of a published event's content naming who made the change (the subject of the token of
/// the request that made it).
pub(crate) const USER_KEY: &str = "user";

tokio::task_local! {
    static CURRENT: Repository;
}

static DEFAULT: RwLock<Option<Repository>> = RwLock::new(None);

/// Typed event-sourced operations over one store.
///
/// Entity operations such as `Foo::create(..)` use the repository of the current task (set by the
/// service runtime for every handler, or by [`Repository::scope`]), else the process default if the
/// application opted into one ([`Repository::set_default`]; a service never sets it by itself, so
/// several services in one process each keep their own).
#[derive(Clone, Debug)]
pub struct Repository {
    store: SharedStore,
    committed: Arc<Notify>,
    /// Bumped after every commit of this process (views of the store's own events follow it).
    appended: Arc<tokio::sync::watch::Sender<u64>>,
    /// Where this process's latest commits put their events.
    recent: Arc<Mutex<RecentPositions>>,
}

/// The log positions of the events a process committed last, by root and version, so that a handler
/// waiting for the views of its own event (see `Projections::settle`) need not read the log for it.
/// Bounded: older entries give way, and a miss reads the log.
#[derive(Debug, Default)]
struct RecentPositions {
    positions: HashMap<(Uuid, u64), crate::store::Position>,
    order: VecDeque<(Uuid, u64)>,
}

impl RecentPositions {
    /// Entries kept: twice the messages the in-process broker holds unhandled (a relay further behind
    /// than that misses, and the handler reads the log).
    const KEPT: usize = 1024;

    fn record(&mut self, uuid: Uuid, version: u64, position: crate::store::Position) {
        if self.positions.insert((uuid, version), position).is_none() {
            self.order.push_back((uuid, version));
            if self.order.len() > Self::KEPT {
                if let Some(oldest) = self.order.pop_front() {
                    self.positions.remove(&oldest);
                }
            }
        }
    }
}

/// Keys of a stored root that the caller never supplies.
pub use minos_rules::RESERVED_FIELDS;

impl Repository {
    /// A repository over `store`.
    pub fn new(store: impl Store) -> Self {
        Self::from_shared(Arc::new(store))
    }

    /// A repository over a shared store.
    pub fn from_shared(store: SharedStore) -> Self {
        Repository {
            store,
            committed: Arc::new(Notify::new()),
            recent: Arc::default(),
            appended: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }

    fn remember(&self, stored: &[StoredEvent]) {
        if stored.is_empty() {
            return;
        }
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        for event in stored {
            let (uuid, version) = (event.event.uuid, event.event.version);
            recent.record(uuid, version, event.position());
        }
    }

    /// The log position of version `version` of root `uuid`, if this process committed it lately.
    pub(crate) fn recent_position(
        &self,
        uuid: Uuid,
        version: u64,
    ) -> Option<crate::store::Position> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.positions.get(&(uuid, version)).copied()
    }

    /// The log position of version `version` of root `uuid`: from this process's recent commits, else
    /// read from the log (another replica's event, or an older one); `None` when not found.
    pub(crate) async fn position_of(
        &self,
        uuid: Uuid,
        version: u64,
    ) -> Option<crate::store::Position> {
        if let Some(position) = self.recent_position(uuid, version) {
            return Some(position);
        }
        let filter = EventFilter {
            uuid: Some(uuid),
            ..EventFilter::default()
        };
        let events = self.store.events(&filter).await.ok()?;
        events
            .into_iter()
            .find(|e| e.event.version == version)
            .map(|e| e.position())
    }

    /// Signalled after every commit, so an outbox relay can wake up at once instead of polling.
    pub fn commits(&self) -> Arc<Notify> {
        Arc::clone(&self.committed)
    }

    /// Changes after every commit this process makes through the repository, for readers of the
    /// store's log (every receiver sees it, unlike [`commits`](Self::commits)).
    pub fn appended(&self) -> tokio::sync::watch::Receiver<u64> {
        self.appended.subscribe()
    }

    /// A repository over a fresh in-memory store.
    pub fn memory() -> Self {
        Self::new(MemoryStore::new())
    }

    /// A repository over the embedded SQLite store at `path`.
    #[cfg(feature = "sqlite")]
    pub fn sqlite(path: impl AsRef<std::path::Path>) -> Result<Self> {
        Ok(Self::new(crate::store::SqliteStore::open(path)?))
    }

    /// A repository over PostgreSQL at `url` (`postgres://user@host/db`, `?schema=name` for a schema of
    /// its own), migrated.
    #[cfg(feature = "postgres")]
    pub async fn postgres(url: &str) -> Result<Self> {
        Ok(Self::new(crate::store::PostgresStore::connect(url).await?))
    }

    /// A repository over the store `storage` names, as `storage:` of a configuration does:
    /// `memory`, `sqlite://PATH` (its folder is created) or `postgres://USER@HOST/DB` (migrated).
    pub async fn open(storage: &str) -> Result<Self> {
        if storage == "memory" {
            return Ok(Self::memory());
        }
        #[cfg(feature = "postgres")]
        if storage.starts_with("postgres://") || storage.starts_with("postgresql://") {
            return Self::postgres(storage).await;
        }
        #[cfg(feature = "sqlite")]
        if let Some(path) = storage.strip_prefix("sqlite://") {
            return Self::sqlite(path);
        }
        Err(Error::Config(format!(
            "unsupported storage `{storage}`: use `postgres://USER@HOST/DB`, `sqlite://PATH` or `memory`"
        )))
    }

    /// The store behind this repository.
    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// The repository of the current task, else the process default.
    pub fn current() -> Result<Repository> {
        if let Ok(repository) = CURRENT.try_with(Repository::clone) {
            return Ok(repository);
        }
        let default = DEFAULT
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        default.clone().ok_or(Error::NoRepository)
    }

    /// Makes this repository the process default, for tasks that have none of their own (scripts, tools,
    /// tests). Services never call it: each handler runs with its service's repository.
    pub fn set_default(self) {
        *DEFAULT
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(self);
    }

    /// Runs `future` with this repository as the current one.
    pub fn scope<F: Future>(self, future: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, future)
    }

    /// Stores a new root: a creation event listing every field, and its `{Name}Created` message.
    pub async fn create<T: RootEntity>(&self, value: T) -> Result<Root<T>> {
        let mut fields_diff = Vec::new();
        value.all_fields(&mut fields_diff)?;
        let event = Event {
            uuid: Uuid::now_v7(),
            name: T::NAME.to_owned(),
            version: 1,
            action: Action::Create,
            created_at: now(),
            fields_diff,
        };
        self.commit(&event).await?;
        let meta = Meta {
            uuid: event.uuid,
            version: 1,
            created_at: event.created_at,
            updated_at: event.created_at,
        };
        Ok(Root::from_parts(meta, value))
    }

    /// The root with this uuid (inside a transaction: with the transaction's writes applied).
    pub async fn get<T: RootEntity>(&self, uuid: Uuid) -> Result<Root<T>> {
        let snapshot = self
            .snapshot(T::NAME, uuid)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                name: T::NAME.to_owned(),
                uuid,
            })?;
        decode(snapshot)
    }

    /// The snapshot of one root as the current task sees it: the store's, with the held writes of the
    /// task's transactions and its buffered writes applied.
    pub async fn snapshot(&self, name: &str, uuid: Uuid) -> Result<Option<Snapshot>> {
        let Some(scope) = WriteScope::current() else {
            let read = self.store.snapshot(name, uuid);
            return Ok(timed("read", read).await?);
        };
        let view = View::new(self.store.as_ref(), scope.chain(), scope.buffered_writes());
        let snapshot = view.snapshot(name, uuid).await?;
        if let (Some(transaction), Some(found)) = (&scope.transaction, &snapshot) {
            transaction.saw(found);
        }
        Ok(snapshot)
    }

    /// Stores the changed fields of `root` as one update event (with one `{Name}Updated.{field}` message
    /// per field). Nothing changed: no event, no version bump, `Ok(false)`.
    ///
    /// Fails with a conflict when another writer stored a newer version first; `root` is left as it was.
    pub async fn save<T: RootEntity>(&self, root: &mut Root<T>) -> Result<bool> {
        let fields_diff = root.pending_diffs()?;
        if fields_diff.is_empty() {
            return Ok(false);
        }
        let event = Event {
            uuid: root.uuid(),
            name: T::NAME.to_owned(),
            version: root.version() + 1,
            action: Action::Update,
            created_at: now(),
            fields_diff,
        };
        self.commit(&event).await?;
        root.mark_stored(Meta {
            version: event.version,
            updated_at: event.created_at,
            ..*root.meta()
        });
        Ok(true)
    }

    /// Deletes the root: a deletion event and its `{Name}Deleted` message. Later reads answer
    /// "already deleted".
    pub async fn delete<T: RootEntity>(&self, root: Root<T>) -> Result<()> {
        let event = Event {
            uuid: root.uuid(),
            name: T::NAME.to_owned(),
            version: root.version() + 1,
            action: Action::Delete,
            created_at: now(),
            fields_diff: Vec::new(),
        };
        self.commit(&event).await
    }

    /// Reloads `root` from the store, dropping unsaved changes.
    pub async fn refresh<T: RootEntity>(&self, root: &mut Root<T>) -> Result<()> {
        let fresh = self.get::<T>(root.uuid()).await?;
        root.replace_with(fresh);
        Ok(())
    }

    /// Live roots of type `T` matching `query` (inside a transaction: with its writes applied).
    pub async fn find<T: RootEntity>(&self, query: &Query) -> Result<Vec<Root<T>>> {
        let snapshots = match WriteScope::current() {
            Some(scope) => {
                View::new(self.store.as_ref(), scope.chain(), scope.buffered_writes())
                    .find(T::NAME, query)
                    .await?
            }
            None => timed("find", self.store.find(T::NAME, query)).await?,
        };
        snapshots.into_iter().map(decode).collect()
    }

    /// The events of one root, oldest first.
    pub async fn events(&self, uuid: Uuid) -> Result<Vec<Event>> {
        let filter = EventFilter {
            uuid: Some(uuid),
            ..EventFilter::default()
        };
        let stored = self.store.events(&filter).await?;
        Ok(stored.into_iter().map(|s| s.event).collect())
    }

    /// Creates a root of the type named `name` from JSON fields, for callers without the Rust type (an
    /// HTTP gateway, a script). Rejects caller-supplied `uuid`, `version`, `created_at`, `updated_at`.
    pub async fn create_json(&self, name: &str, fields: Map<String, Value>) -> Result<Snapshot> {
        if let Some(reserved) = RESERVED_FIELDS.iter().find(|f| fields.contains_key(**f)) {
            return Err(Error::ReservedField {
                field: (*reserved).to_owned(),
            });
        }
        let event = Event {
            uuid: Uuid::now_v7(),
            name: name.to_owned(),
            version: 1,
            action: Action::Create,
            created_at: now(),
            fields_diff: fields
                .into_iter()
                .map(|(k, v)| crate::domain::FieldDiff::whole(&k, "json", v))
                .collect(),
        };
        self.commit(&event).await?;
        Ok(Snapshot::next(None, &event)?)
    }

    /// Writes one event where the current task's writes go: held under its transaction, kept in its
    /// buffer, or appended to the store (publishing its messages through the outbox).
    async fn commit(&self, event: &Event) -> Result<()> {
        let mut messages = event.domain_messages()?;
        // The published events say who made the change: the subject of the caller's token.
        if let Some(caller) = crate::auth::Caller::current().filter(|c| !c.subject.is_empty()) {
            for message in &mut messages {
                if let Value::Object(content) = &mut message.content {
                    content.insert(USER_KEY.into(), Value::String(caller.subject.clone()));
                }
            }
        }
        // Each message carries the trace of the handler that caused it, kept with the outbox row.
        if let Some(trace) = crate::telemetry::TraceContext::current() {
            for message in &mut messages {
                trace.inject(&mut message.headers);
            }
        }
        let scope = WriteScope::current().unwrap_or_default();
        // Inside a transaction a change is checked against what the transaction sees (a creation has a
        // new random uuid): as this scope last read or changed the root, else read again; the store
        // checks again when the transaction commits. The transaction's entries are opened with its
        // first hold.
        match &scope.transaction {
            Some(_) if event.action == Action::Create => {}
            Some(transaction) => match transaction.seen(&event.name, event.uuid) {
                Some(seen) => check_applies(Some(&seen), event)?,
                None => {
                    let view =
                        View::new(self.store.as_ref(), scope.chain(), scope.buffered_writes());
                    let current = view.snapshot(&event.name, event.uuid).await?;
                    check_applies(current.as_ref(), event)?;
                }
            },
            None => {}
        }
        match (&scope.buffer, &scope.transaction) {
            (Some(buffer), _) => buffer.push((event.clone(), messages)),
            (None, Some(transaction)) => {
                let write = [(event.clone(), messages)];
                transaction
                    .hold(self.store.as_ref(), &write, None, false)
                    .await?;
            }
            (None, None) => {
                let stored = timed("commit", self.store.append(event, &messages)).await?;
                crate::views::note_written(&event.name, stored.position());
                self.remember(std::slice::from_ref(&stored));
                self.committed.notify_one();
                self.appended.send_modify(|n| *n += 1);
            }
        }
        if let Some(transaction) = &scope.transaction {
            transaction.wrote(event);
        }
        Ok(())
    }

    /// Runs `future` keeping every write it makes in a buffer (inside the current transaction, if any);
    /// returns its output and the writes, for [`Repository::commit_unit`] or
    /// [`Repository::flush`]. Reads inside see the buffered writes; nothing reaches the store.
    pub fn staged<F: Future>(&self, future: F) -> impl Future<Output = (F::Output, HeldWrites)> {
        use futures_util::FutureExt;
        // The transaction is the one current when the future first runs, as for an `async fn`.
        futures_util::future::lazy(|_| TransactionScope::current())
            .then(move |transaction| WriteScope::buffered(transaction, future))
    }

    /// [`staged`](Self::staged) inside `transaction` (none: at the top level, whatever the current
    /// task's scope): how the service runtime runs a handler.
    pub fn staged_in<F: Future>(
        &self,
        transaction: Option<TransactionScope>,
        future: F,
    ) -> impl Future<Output = (F::Output, HeldWrites)> {
        WriteScope::buffered(transaction, future)
    }

    /// Stores staged writes where they belong, together with the inbox entry of the message that caused
    /// them, all or nothing: held under `transaction`, or committed to the store (published) at the top
    /// level. With `inbox` already recorded nothing is written: [`StoreError::AlreadyProcessed`].
    pub async fn flush(
        &self,
        transaction: Option<&TransactionScope>,
        writes: &HeldWrites,
        inbox: Option<&InboxEntry>,
    ) -> Result<()> {
        match transaction {
            Some(transaction) => transaction
                .hold(self.store.as_ref(), writes, inbox, false)
                .await
                .map(|_| ()),
            None => self.commit_unit(writes, inbox).await.map(|_| ()),
        }
    }

    /// Commits staged writes and the inbox entry of the message that caused them, all or nothing.
    pub async fn commit_unit(
        &self,
        writes: &HeldWrites,
        inbox: Option<&InboxEntry>,
    ) -> Result<Vec<StoredEvent>> {
        let stored = timed("commit", self.store.commit_unit(writes, inbox)).await?;
        for event in &stored {
            crate::views::note_written(&event.event.name, event.position());
        }
        self.remember(&stored);
        if !writes.is_empty() {
            self.committed.notify_one();
            self.appended.send_modify(|n| *n += 1);
        }
        Ok(stored)
    }

    /// Reserve, commit and reject the transactions of this repository's store.
    pub fn transactions(&self) -> Transactions {
        Transactions::new(Arc::clone(&self.store), Arc::clone(&self.committed))
    }
}

fn decode<T: RootEntity>(snapshot: Snapshot) -> Result<Root<T>> {
    let meta = Meta {
        uuid: snapshot.uuid,
        version: snapshot.version,
        created_at: snapshot.created_at,
        updated_at: snapshot.updated_at,
    };
    let data = snapshot.data.ok_or_else(|| StoreError::AlreadyDeleted {
        name: snapshot.name.clone(),
        uuid: snapshot.uuid,
    })?;
    Ok(Root::from_json(meta, data)?)
}

/// Operations on a root entity type, using the current repository: `Foo::create(foo).await?`.
pub trait RootEntityExt: RootEntity + Sized {
    /// Stores a new root (see [`Repository::create`]).
    fn create(value: Self) -> impl Future<Output = Result<Root<Self>>> + Send {
        async move { Repository::current()?.create(value).await }
    }

    /// The root with this uuid (see [`Repository::get`]).
    fn get(uuid: Uuid) -> impl Future<Output = Result<Root<Self>>> + Send {
        async move { Repository::current()?.get(uuid).await }
    }

    /// Roots matching `condition`; refine with `.order_by(..)` and `.limit(..)`, then `.await`.
    fn find(condition: Condition) -> Find<Self> {
        Find::new(condition)
    }

    /// Every live root; refine with `.order_by(..)` and `.limit(..)`, then `.await`.
    fn get_all() -> Find<Self> {
        Find::new(Condition::True)
    }

    /// The first root matching `condition`, or a not-found error.
    fn find_one(condition: Condition) -> impl Future<Output = Result<Root<Self>>> + Send {
        async move {
            let found = Find::<Self>::new(condition).limit(1).await?;
            found
                .into_iter()
                .next()
                .ok_or(Error::NoMatch { name: Self::NAME })
        }
    }
}

impl<T: RootEntity> RootEntityExt for T {}

impl<T: RootEntity> Root<T> {
    /// Stores the changed fields (see [`Repository::save`]); `Ok(false)` when nothing changed.
    pub async fn save(&mut self) -> Result<bool> {
        Repository::current()?.save(self).await
    }

    /// Changes fields with `change`, then saves.
    pub async fn update(&mut self, change: impl FnOnce(&mut T) + Send) -> Result<bool> {
        change(self);
        self.save().await
    }

    /// Deletes the root (see [`Repository::delete`]).
    pub async fn delete(self) -> Result<()> {
        Repository::current()?.delete(self).await
    }

    /// Reloads from the store, dropping unsaved changes.
    pub async fn refresh(&mut self) -> Result<()> {
        Repository::current()?.refresh(self).await
    }
}

/// A snapshot query being built: `Foo::find(cond).order_by(Ordering::desc("bar")).limit(10).await`.
///
/// It is a [`Future`]: await it, or hand it to anything that takes one (`repository.scope(Foo::get_all())`).
/// The query runs on the first poll, on the repository of the task polling it (or the one given with
/// [`on`](Self::on)); refine it before.
#[must_use = "a query does nothing until awaited"]
pub struct Find<T> {
    query: Query,
    repository: Option<Repository>,
    running: Option<Running<T>>,
}

/// A query running on its repository.
type Running<T> = Pin<Box<dyn Future<Output = Result<Vec<Root<T>>>> + Send>>;

impl<T> std::fmt::Debug for Find<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Find")
            .field("query", &self.query)
            .field("running", &self.running.is_some())
            .finish()
    }
}

impl<T: RootEntity> Find<T> {
    fn new(condition: Condition) -> Self {
        Find {
            query: Query {
                condition,
                ..Query::default()
            },
            repository: None,
            running: None,
        }
    }

    /// Sorts the results.
    pub fn order_by(mut self, ordering: Ordering) -> Self {
        self.query.ordering = Some(ordering);
        self
    }

    /// Returns at most `limit` roots.
    pub fn limit(mut self, limit: usize) -> Self {
        self.query.limit = Some(limit);
        self
    }

    /// Runs on `repository` instead of the current one.
    pub fn on(mut self, repository: &Repository) -> Self {
        self.repository = Some(repository.clone());
        self
    }
}

impl<T: RootEntity> Future for Find<T> {
    type Output = Result<Vec<Root<T>>>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = &mut *self;
        let running = match &mut this.running {
            Some(running) => running,
            None => {
                // The repository is looked up now, inside the task that polls: its scope decides.
                let repository = match this.repository.take() {
                    Some(repository) => Ok(repository),
                    None => Repository::current(),
                };
                let query = std::mem::take(&mut this.query);
                this.running
                    .insert(Box::pin(async move { repository?.find(&query).await }))
            }
        };
        running.as_mut().poll(cx)
    }
}

/// Times a store operation in the metrics of the service running the current handler.
async fn timed<F: Future>(operation: &'static str, future: F) -> F::Output {
    let context = crate::routing::Context::current().ok();
    crate::telemetry::metrics::timed(context.as_ref().map(|c| c.metrics()), operation, future).await
}
