//! The repository: typed entity operations over a store, and how a task finds the one to use.

use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use tokio::sync::Notify;

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::domain::{Action, Condition, DomainMessage, Event, Meta, Ordering, Root, RootEntity};
use crate::error::{Error, Result};
use crate::store::check_applies;
use crate::store::{
    now, EventFilter, MemoryStore, Query, SharedStore, Snapshot, Store, StoreError,
};
use crate::store::{InboxEntry, StoredEvent};
use crate::transaction::TransactionScope;
use indexmap::IndexMap;

tokio::task_local! {
    static CURRENT: Repository;
    static UNIT: Arc<std::sync::Mutex<Vec<(Event, Vec<DomainMessage>)>>>;
}

/// Writes held back by [`Repository::staged`], to be committed together.
pub type StagedWrites = Vec<(Event, Vec<DomainMessage>)>;

static DEFAULT: RwLock<Option<Repository>> = RwLock::new(None);

/// Typed event-sourced operations over one store.
///
/// Entity operations such as `Foo::create(..)` use the repository of the current task (set by the
/// service runtime for every handler, or by [`Repository::scope`]), else the process default
/// ([`Repository::set_default`]).
#[derive(Clone, Debug)]
pub struct Repository {
    store: SharedStore,
    committed: Arc<Notify>,
}

/// Keys of a stored root that the caller never supplies.
pub const RESERVED_FIELDS: [&str; 4] = ["uuid", "version", "created_at", "updated_at"];

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
        }
    }

    /// Signalled after every commit, so an outbox relay can wake up at once instead of polling.
    pub fn commits(&self) -> Arc<Notify> {
        Arc::clone(&self.committed)
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

    /// Makes this repository the process default (for tasks that have none of their own).
    pub fn set_default(self) {
        *DEFAULT
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(self);
    }

    /// Runs `future` with this repository as the current one.
    pub async fn scope<F: Future>(self, future: F) -> F::Output {
        CURRENT.scope(self, future).await
    }

    /// Stores a new root: a creation event listing every field, and its `{Name}Created` message.
    pub async fn create<T: RootEntity>(&self, value: T) -> Result<Root<T>> {
        let mut fields_diff = Vec::new();
        value.all_fields(&mut fields_diff)?;
        let event = Event {
            uuid: Uuid::new_v4(),
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
            .snapshot_in_scope(TransactionScope::current().as_ref(), T::NAME, uuid)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                name: T::NAME.to_owned(),
                uuid,
            })?;
        decode(snapshot)
    }

    /// The snapshot of one root as seen inside `scope` (its chain's held writes, then its buffered ones).
    async fn snapshot_in_scope(
        &self,
        scope: Option<&TransactionScope>,
        name: &str,
        uuid: Uuid,
    ) -> Result<Option<Snapshot>> {
        let Some(scope) = scope else {
            return Ok(self.store.snapshot(name, uuid).await?);
        };
        let mut snapshot = self.snapshot_in(scope.chain(), name, uuid).await?;
        for (event, _) in scope.buffered_writes() {
            if event.uuid == uuid && event.name == name {
                snapshot = Some(Snapshot::next(snapshot.as_ref(), &event)?);
            }
        }
        Ok(snapshot)
    }

    /// The snapshot of one root as seen inside the transactions `chain` (outermost first): the stored
    /// snapshot with their held writes applied in order.
    pub async fn snapshot_in(
        &self,
        chain: &[Uuid],
        name: &str,
        uuid: Uuid,
    ) -> Result<Option<Snapshot>> {
        let mut snapshot = self.store.snapshot(name, uuid).await?;
        for transaction in chain {
            for (event, _) in self.store.held(*transaction).await? {
                if event.uuid == uuid && event.name == name {
                    snapshot = Some(Snapshot::next(snapshot.as_ref(), &event)?);
                }
            }
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
        let snapshots = match TransactionScope::current() {
            Some(scope) => self.find_in(&scope, T::NAME, query).await?,
            None => self.store.find(T::NAME, query).await?,
        };
        snapshots.into_iter().map(decode).collect()
    }

    async fn find_in(
        &self,
        scope: &TransactionScope,
        name: &str,
        query: &Query,
    ) -> Result<Vec<Snapshot>> {
        let mut touched: IndexMap<Uuid, Option<Snapshot>> = IndexMap::new();
        let mut layers = Vec::with_capacity(scope.chain().len() + 1);
        for transaction in scope.chain() {
            layers.push(self.store.held(*transaction).await?);
        }
        layers.push(scope.buffered_writes());
        for layer in layers {
            for (event, _) in layer {
                if event.name != name {
                    continue;
                }
                let previous = match touched.get(&event.uuid) {
                    Some(snapshot) => snapshot.clone(),
                    None => self.store.snapshot(name, event.uuid).await?,
                };
                touched.insert(event.uuid, Some(Snapshot::next(previous.as_ref(), &event)?));
            }
        }
        if touched.is_empty() {
            return Ok(self.store.find(name, query).await?);
        }
        let unlimited = Query {
            limit: None,
            ..query.clone()
        };
        let mut found: Vec<Snapshot> = self
            .store
            .find(name, &unlimited)
            .await?
            .into_iter()
            .filter(|s| !touched.contains_key(&s.uuid))
            .collect();
        found.extend(
            touched
                .into_values()
                .flatten()
                .filter(|s| s.data.is_some() && query.condition.matches(s)),
        );
        if let Some(ordering) = &query.ordering {
            found.sort_by(|a, b| ordering.compare(a, b));
        }
        found.truncate(query.limit.unwrap_or(usize::MAX));
        Ok(found)
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
            uuid: Uuid::new_v4(),
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

    async fn commit(&self, event: &Event) -> Result<()> {
        let messages = event.domain_messages()?;
        // Inside a transaction, the write is held under it until the transaction commits.
        if let Some(scope) = TransactionScope::current() {
            scope.open(self).await?;
            // A creation has a new random uuid: only changes are checked against what the
            // transaction sees.
            if event.action != Action::Create {
                let current = self
                    .snapshot_in_scope(Some(&scope), &event.name, event.uuid)
                    .await?;
                check_applies(current.as_ref(), event)?;
            }
            if let Some(write) = scope.buffer_write((event.clone(), messages)) {
                self.store.hold(scope.uuid(), &[write], None).await?;
            }
            return Ok(());
        }
        // Inside `staged`, hold the write back for the unit's commit; otherwise append it now.
        let unit = UNIT.try_with(Arc::clone).ok();
        match unit {
            Some(unit) => unit
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push((event.clone(), messages)),
            None => {
                self.store.append(event, &messages).await?;
                self.committed.notify_one();
            }
        }
        Ok(())
    }

    /// Runs `future` holding back every write it makes; returns its output and the writes, for
    /// [`Repository::commit_unit`]. Reads inside do not see the held-back writes.
    pub async fn staged<F: Future>(&self, future: F) -> (F::Output, StagedWrites) {
        let unit = Arc::new(std::sync::Mutex::new(Vec::new()));
        let output = UNIT.scope(Arc::clone(&unit), future).await;
        let writes =
            std::mem::take(&mut *unit.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        (output, writes)
    }

    /// Commits staged writes and the inbox entry of the message that caused them, all or nothing.
    pub async fn commit_unit(
        &self,
        writes: &StagedWrites,
        inbox: Option<&InboxEntry>,
    ) -> Result<Vec<StoredEvent>> {
        let stored = self.store.commit_unit(writes, inbox).await?;
        if !writes.is_empty() {
            self.committed.notify_one();
        }
        Ok(stored)
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
#[must_use = "a query does nothing until awaited"]
pub struct Find<T> {
    query: Query,
    repository: Option<Repository>,
    _type: PhantomData<fn() -> T>,
}

impl<T: RootEntity> Find<T> {
    fn new(condition: Condition) -> Self {
        Find {
            query: Query {
                condition,
                ..Query::default()
            },
            repository: None,
            _type: PhantomData,
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

impl<T: RootEntity> IntoFuture for Find<T> {
    type Output = Result<Vec<Root<T>>>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let repository = match self.repository {
                Some(repository) => repository,
                None => Repository::current()?,
            };
            repository.find(&self.query).await
        })
    }
}
