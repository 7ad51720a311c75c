//! Where the writes of the current task go: the task-local write scope.
//!
//! A task writes either straight to the store, or into a *write scope*: the innermost transaction of a
//! chain (its writes are held under it until it commits), and/or a buffer that keeps the writes in
//! memory until the caller flushes them — the service runtime buffers each handler's writes and stores
//! them together with the inbox entry of the message that caused them, all or nothing. Reads inside a
//! scope see its writes.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use uuid::Uuid;

use crate::domain::{Action, DomainMessage, Event, TransactionEntry};
use crate::error::{Error, Result};
use crate::store::{HeldWrites, InboxEntry, Snapshot, Store};

/// A root's type, version and whether it is deleted, as a transaction scope last saw it.
type Seen = (String, u64, bool);

tokio::task_local! {
    static SCOPE: WriteScope;
}

/// The transactions the current task writes into: outermost first, the innermost receives the writes.
#[derive(Clone, Debug)]
pub struct TransactionScope {
    chain: Arc<[Uuid]>,
    /// Set once a hold opened the chain's entries.
    opened: Arc<std::sync::atomic::AtomicBool>,
    /// What the scope last saw of each root it read or changed. The next change of such a root is
    /// checked against it instead of reading the root and the held writes again.
    seen: Arc<Mutex<HashMap<Uuid, Seen>>>,
}

impl TransactionScope {
    /// A scope writing into the last of `chain`, nested in the ones before it. `None` when empty.
    pub fn new(chain: Vec<Uuid>) -> Option<Self> {
        (!chain.is_empty()).then(|| TransactionScope {
            chain: chain.into(),
            opened: Arc::default(),
            seen: Arc::default(),
        })
    }

    /// A top-level transaction.
    pub fn top(uuid: Uuid) -> Self {
        TransactionScope {
            chain: Arc::from([uuid]),
            opened: Arc::default(),
            seen: Arc::default(),
        }
    }

    /// The transaction scope of the current task, if any.
    pub fn current() -> Option<TransactionScope> {
        SCOPE
            .try_with(|scope| scope.transaction.clone())
            .ok()
            .flatten()
    }

    /// Parses a chain as the `transactions` header carries it: comma-separated uuids, outermost first.
    pub fn from_header(header: &str) -> Result<Option<Self>> {
        let chain = header
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                Uuid::parse_str(s).map_err(|e| {
                    Error::bad_request(format!("`{s}` is not a transaction uuid: {e}"))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self::new(chain))
    }

    /// The `transactions` header value: comma-separated uuids, outermost first.
    pub fn header(&self) -> String {
        self.chain
            .iter()
            .map(Uuid::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// This scope with `uuid` nested inside its innermost transaction.
    pub fn nested(&self, uuid: Uuid) -> Self {
        let mut chain = self.chain.to_vec();
        chain.push(uuid);
        TransactionScope {
            chain: chain.into(),
            opened: Arc::default(),
            seen: Arc::default(),
        }
    }

    /// The transaction receiving the writes.
    pub fn uuid(&self) -> Uuid {
        self.chain[self.chain.len() - 1]
    }

    /// The enclosing transaction of [`uuid`](Self::uuid), `None` at the top level.
    pub fn destination(&self) -> Option<Uuid> {
        (self.chain.len() > 1).then(|| self.chain[self.chain.len() - 2])
    }

    /// Every transaction, outermost first.
    pub fn chain(&self) -> &[Uuid] {
        &self.chain
    }

    /// Runs `future` inside this scope: its writes are held under [`uuid`](Self::uuid) as they are made.
    pub fn run<F: Future>(self, future: F) -> impl Future<Output = F::Output> {
        let scope = WriteScope {
            transaction: Some(self),
            buffer: None,
        };
        SCOPE.scope(scope, future)
    }

    /// Remembers what a read through this scope found of a root.
    pub(crate) fn saw(&self, snapshot: &Snapshot) {
        let seen = (
            snapshot.name.clone(),
            snapshot.version,
            snapshot.data.is_none(),
        );
        self.seen_map().insert(snapshot.uuid, seen);
    }

    /// Remembers a change written through this scope.
    pub(crate) fn wrote(&self, event: &Event) {
        let seen = (
            event.name.clone(),
            event.version,
            event.action == Action::Delete,
        );
        self.seen_map().insert(event.uuid, seen);
    }

    /// What this scope last saw of root `uuid` of type `name`, if it read or changed it: a snapshot with
    /// its version and, unless deleted, empty fields (enough to check a change against).
    pub(crate) fn seen(&self, name: &str, uuid: Uuid) -> Option<Snapshot> {
        let (_, version, deleted) = self
            .seen_map()
            .get(&uuid)
            .filter(|(seen, ..)| seen == name)
            .cloned()?;
        let epoch = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
        Some(Snapshot {
            uuid,
            name: name.to_owned(),
            version,
            created_at: epoch,
            updated_at: epoch,
            data: (!deleted).then(serde_json::Map::new),
        })
    }

    fn seen_map(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Seen>> {
        // Inserting into and cloning from a map cannot leave it half-written.
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds `writes` (with `inbox`, the message that caused them) under this scope's transaction. The
    /// first hold of the scope also opens the chain's entries the store does not know yet (pending,
    /// each inside the one before), in the same store step, and refuses writes into a transaction that
    /// is no longer pending. With `check_claims`, answers whether the transaction then changes roots
    /// that existed before (see [`Store::hold_and_check_claims`]); without, `false`.
    pub(crate) async fn hold(
        &self,
        store: &dyn Store,
        writes: &[(Event, Vec<DomainMessage>)],
        inbox: Option<&InboxEntry>,
        check_claims: bool,
    ) -> Result<bool> {
        // Nothing to hold needs no entry (a handler that wrote nothing records its inbox entry alone).
        if self.opened.load(std::sync::atomic::Ordering::Acquire) || writes.is_empty() {
            return Ok(store
                .hold_checking(self.uuid(), writes, inbox, check_claims)
                .await?);
        }
        let mut destination = None;
        let chain: Vec<TransactionEntry> = self
            .chain
            .iter()
            .map(|uuid| {
                let entry = TransactionEntry::new(*uuid, destination);
                destination = Some(*uuid);
                entry
            })
            .collect();
        let claims = store
            .open_and_hold(&chain, writes, inbox, check_claims)
            .await?;
        self.opened
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(claims)
    }
}

/// Writes kept in memory until flushed, in the order they were made.
#[derive(Clone, Debug, Default)]
pub(crate) struct WriteBuffer(Arc<Mutex<HeldWrites>>);

impl WriteBuffer {
    fn lock(&self) -> std::sync::MutexGuard<'_, HeldWrites> {
        // Pushing and cloning a vector cannot leave it half-written.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn push(&self, write: (crate::domain::Event, Vec<crate::domain::DomainMessage>)) {
        self.lock().push(write);
    }

    /// The writes so far.
    pub(crate) fn writes(&self) -> HeldWrites {
        self.lock().clone()
    }

    fn take(&self) -> HeldWrites {
        std::mem::take(&mut *self.lock())
    }
}

/// The write scope of a task: the transaction receiving its writes (none: the store) and the buffer
/// keeping them until flushed (none: written as they are made).
#[derive(Clone, Debug, Default)]
pub(crate) struct WriteScope {
    pub(crate) transaction: Option<TransactionScope>,
    pub(crate) buffer: Option<WriteBuffer>,
}

impl WriteScope {
    /// The scope of the current task, if any.
    pub(crate) fn current() -> Option<WriteScope> {
        SCOPE.try_with(WriteScope::clone).ok()
    }

    /// Runs `future` with its writes kept in a buffer (inside `transaction` when given: reads see the
    /// transaction's held writes too) and returns them with its output, to be flushed by the caller.
    pub(crate) fn buffered<F: Future>(
        transaction: Option<TransactionScope>,
        future: F,
    ) -> impl Future<Output = (F::Output, HeldWrites)> {
        let buffer = WriteBuffer::default();
        let scope = WriteScope {
            transaction,
            buffer: Some(buffer.clone()),
        };
        SCOPE
            .scope(scope, future)
            .map(move |output| (output, buffer.take()))
    }

    /// The transactions whose held writes this scope reads through, outermost first.
    pub(crate) fn chain(&self) -> &[Uuid] {
        self.transaction.as_ref().map_or(&[], |t| t.chain())
    }

    /// The buffered writes so far.
    pub(crate) fn buffered_writes(&self) -> HeldWrites {
        self.buffer
            .as_ref()
            .map(WriteBuffer::writes)
            .unwrap_or_default()
    }
}
