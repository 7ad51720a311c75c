//! Application transactions (used by sagas).
//!
//! Inside [`TransactionScope::run`], entity operations (`Foo::create`, `root.save()`, …) do not reach the
//! store: their events are *held* under the innermost transaction, reads see them on top of the store, and
//! nothing is published. [`Transactions::reserve`] checks that the held writes still apply to the
//! destination (the enclosing transaction, or the store itself at the top level) and that no sibling
//! transaction touched the same roots; [`Transactions::commit`] moves the writes into the destination —
//! at the top level that is one atomic store commit, which is when domain events are published;
//! [`Transactions::reject`] drops them.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::domain::{Action, Event};
pub use crate::domain::{InvalidTransition, TransactionEntry, TransactionStatus};
use crate::error::{Error, Result};
use crate::repository::Repository;
use crate::store::{check_applies, HeldWrites, StoreError};

tokio::task_local! {
    static SCOPE: TransactionScope;
}

/// The transactions the current task writes into: outermost first, the innermost receives the writes.
#[derive(Clone, Debug)]
pub struct TransactionScope {
    chain: Arc<[Uuid]>,
    opened: Arc<tokio::sync::OnceCell<()>>,
    buffer: Option<Arc<std::sync::Mutex<HeldWrites>>>,
}

impl TransactionScope {
    /// A scope writing into the last of `chain`, nested in the ones before it. `None` when empty.
    pub fn new(chain: Vec<Uuid>) -> Option<Self> {
        (!chain.is_empty()).then(|| TransactionScope {
            chain: chain.into(),
            opened: Arc::default(),
            buffer: None,
        })
    }

    /// A top-level transaction.
    pub fn top(uuid: Uuid) -> Self {
        TransactionScope {
            chain: Arc::from([uuid]),
            opened: Arc::default(),
            buffer: None,
        }
    }

    /// The scope of the current task, if any.
    pub fn current() -> Option<TransactionScope> {
        SCOPE.try_with(TransactionScope::clone).ok()
    }

    /// Parses a `transactions` header: comma-separated uuids, outermost first.
    pub fn from_header(header: &str) -> Result<Option<Self>> {
        let chain = header
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                Uuid::parse_str(s).map_err(|e| {
                    Error::bad_request(format!("`transactions` header: `{s}` is not a uuid: {e}"))
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
            buffer: None,
        }
    }

    /// This scope keeping its writes in memory (reads see them) until
    /// [`take_buffered`](Self::take_buffered), so the caller can hold them together with the inbox entry
    /// of the message that caused them, in one store transaction.
    pub fn buffered(mut self) -> Self {
        self.buffer = Some(Arc::default());
        self
    }

    /// The writes kept by a [`buffered`](Self::buffered) scope, in order; empties the buffer.
    pub fn take_buffered(&self) -> HeldWrites {
        self.buffer
            .as_ref()
            .map(|b| std::mem::take(&mut *b.lock().unwrap_or_else(|p| p.into_inner())))
            .unwrap_or_default()
    }

    /// The writes kept so far by a buffered scope.
    pub(crate) fn buffered_writes(&self) -> HeldWrites {
        self.buffer
            .as_ref()
            .map(|b| b.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .unwrap_or_default()
    }

    /// Keeps a write in the buffer; gives it back when the scope is not buffered.
    pub(crate) fn buffer_write(
        &self,
        write: (Event, Vec<crate::domain::DomainMessage>),
    ) -> Option<(Event, Vec<crate::domain::DomainMessage>)> {
        match &self.buffer {
            Some(buffer) => {
                buffer.lock().unwrap_or_else(|p| p.into_inner()).push(write);
                None
            }
            None => Some(write),
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

    /// Runs `future` inside this scope.
    pub async fn run<F: Future>(self, future: F) -> F::Output {
        SCOPE.scope(self, future).await
    }

    /// Creates the entries of the chain that the store does not know yet (pending, each inside the one
    /// before), once per scope; refuses writes into a transaction that is no longer pending.
    pub(crate) async fn open(&self, repository: &Repository) -> Result<()> {
        self.opened
            .get_or_try_init(|| async {
                let store = repository.store();
                let mut destination = None;
                for uuid in self.chain.iter().copied() {
                    match store.transaction(uuid).await? {
                        None => {
                            store
                                .save_transaction(&TransactionEntry::new(uuid, destination))
                                .await?
                        }
                        Some(entry)
                            if uuid == self.uuid()
                                && entry.status != TransactionStatus::Pending =>
                        {
                            return Err(Error::with_status(
                                409,
                                format!(
                                    "transaction {uuid} is {}: it takes no more writes",
                                    entry.status.as_str()
                                ),
                            ))
                        }
                        Some(_) => {}
                    }
                    destination = Some(uuid);
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }
}

/// The broker topic on which a service answers a transaction command: `_{Verb}{Service}Transaction`,
/// the service's name in upper camel case (`foo-bar` → `_ReserveFooBarTransaction`).
pub fn command_topic(verb: TransactionCommand, service: &str) -> String {
    format!("_{}{}Transaction", verb.as_str(), upper_camel(service))
}

/// `foo-bar_baz` → `FooBarBaz`.
pub fn upper_camel(name: &str) -> String {
    name.split(['-', '_', '.', ' '])
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_uppercase().chain(chars).collect::<String>())
                .unwrap_or_default()
        })
        .collect()
}

/// The commands every service answers for the transactions it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransactionCommand {
    /// `_Reserve{Service}Transaction`.
    Reserve,
    /// `_Commit{Service}Transaction`.
    Commit,
    /// `_Reject{Service}Transaction`.
    Reject,
}

impl TransactionCommand {
    /// `Reserve`, `Commit` or `Reject`.
    pub fn as_str(self) -> &'static str {
        match self {
            TransactionCommand::Reserve => "Reserve",
            TransactionCommand::Commit => "Commit",
            TransactionCommand::Reject => "Reject",
        }
    }

    /// All three.
    pub const ALL: [TransactionCommand; 3] = [
        TransactionCommand::Reserve,
        TransactionCommand::Commit,
        TransactionCommand::Reject,
    ];
}

/// Reserve, commit and reject over one repository's store.
#[derive(Clone, Debug)]
pub struct Transactions {
    repository: Repository,
}

impl Repository {
    /// Reserve, commit and reject the transactions of this repository's store.
    pub fn transactions(&self) -> Transactions {
        Transactions {
            repository: self.clone(),
        }
    }
}

impl Transactions {
    /// Runs one command on transaction `uuid`.
    pub async fn run(&self, command: TransactionCommand, uuid: Uuid) -> Result<TransactionStatus> {
        match command {
            TransactionCommand::Reserve => self.reserve(uuid).await,
            TransactionCommand::Commit => self.commit(uuid).await,
            TransactionCommand::Reject => self.reject(uuid).await,
        }
    }

    async fn entry_or(
        &self,
        uuid: Uuid,
        status: TransactionStatus,
    ) -> Result<Option<TransactionEntry>> {
        let store = self.repository.store();
        match store.transaction(uuid).await? {
            Some(entry) => Ok(Some(entry)),
            None => {
                // Nothing was written in it here: record the outcome so a late write is refused.
                let mut entry = TransactionEntry::new(uuid, None);
                entry.status = status;
                store.save_transaction(&entry).await?;
                Ok(None)
            }
        }
    }

    async fn move_to(&self, entry: &mut TransactionEntry, next: TransactionStatus) -> Result<()> {
        entry.transition(next)?;
        self.repository.store().save_transaction(entry).await?;
        Ok(())
    }

    /// Checks that the transaction's writes still apply to its destination and that no sibling being
    /// reserved or committed touched the same roots: reserved, or rejected with a 409 conflict. Reserving
    /// a reserved or committed transaction again answers its status.
    pub async fn reserve(&self, uuid: Uuid) -> Result<TransactionStatus> {
        let Some(mut entry) = self.entry_or(uuid, TransactionStatus::Reserved).await? else {
            return Ok(TransactionStatus::Reserved);
        };
        match entry.status {
            TransactionStatus::Reserved
            | TransactionStatus::Committing
            | TransactionStatus::Committed => return Ok(entry.status),
            _ => {}
        }
        let held = self.repository.store().held(uuid).await?;
        self.move_to(&mut entry, TransactionStatus::Reserving)
            .await?;
        match self.validate(&entry, &held).await {
            Ok(()) => {
                self.move_to(&mut entry, TransactionStatus::Reserved)
                    .await?;
                Ok(TransactionStatus::Reserved)
            }
            Err(error) => {
                self.move_to(&mut entry, TransactionStatus::Rejected)
                    .await?;
                self.repository.store().release(uuid).await?;
                tracing::info!(transaction = %uuid, %error, "reservation refused: transaction rejected");
                Err(error)
            }
        }
    }

    async fn validate(&self, entry: &TransactionEntry, held: &HeldWrites) -> Result<()> {
        let store = self.repository.store();
        let mut destination_chain = Vec::new();
        let mut next = entry.destination;
        while let Some(uuid) = next {
            let parent = store.transaction(uuid).await?.ok_or_else(|| {
                Error::with_status(409, format!("destination transaction {uuid} is unknown"))
            })?;
            if destination_chain.is_empty() && parent.status != TransactionStatus::Pending {
                return Err(Error::with_status(
                    409,
                    format!(
                        "destination transaction {uuid} is {}, not pending",
                        parent.status.as_str()
                    ),
                ));
            }
            destination_chain.insert(0, uuid);
            next = parent.destination;
        }
        // Per root: the held versions follow each other, starting right after the destination's.
        let mut firsts: BTreeMap<Uuid, &Event> = BTreeMap::new();
        let mut last_version: BTreeMap<Uuid, u64> = BTreeMap::new();
        for (event, _) in held {
            if let Some(last) = last_version.get(&event.uuid) {
                if event.version != last + 1 {
                    return Err(StoreError::Conflict {
                        name: event.name.clone(),
                        uuid: event.uuid,
                        expected: event.version - 1,
                        actual: *last,
                    }
                    .into());
                }
            } else {
                firsts.insert(event.uuid, event);
            }
            last_version.insert(event.uuid, event.version);
        }
        // Claim the roots among the siblings first (atomic, also between processes), then check the
        // versions: a sibling that committed before the claim is seen by the version check.
        // (Created roots are new: nobody else can change them.)
        let roots: Vec<Uuid> = firsts
            .values()
            .filter(|e| e.action != Action::Create)
            .map(|e| e.uuid)
            .collect();
        let conflict = match roots.is_empty() {
            true => None,
            false => store.claim(entry.destination, entry.uuid, &roots).await?,
        };
        if let Some((root, holder)) = conflict {
            let name = firsts.get(&root).map_or("root", |e| e.name.as_str());
            return Err(Error::with_status(
                409,
                format!("{name} {root} is also changed by transaction {holder}, reserved first"),
            ));
        }
        // Creations carry new random uuids; changes must follow the destination's version.
        for event in firsts.values().filter(|e| e.action != Action::Create) {
            let current = self
                .repository
                .snapshot_in(&destination_chain, &event.name, event.uuid)
                .await?;
            check_applies(current.as_ref(), event)?;
        }
        Ok(())
    }

    /// Reserves (when still pending), then moves the writes into the destination — at the top level one
    /// atomic store commit that publishes the domain events — and marks the transaction committed.
    /// Committing a committed transaction again does nothing.
    pub async fn commit(&self, uuid: Uuid) -> Result<TransactionStatus> {
        let Some(mut entry) = self.entry_or(uuid, TransactionStatus::Committed).await? else {
            return Ok(TransactionStatus::Committed);
        };
        match entry.status {
            TransactionStatus::Committed => return Ok(TransactionStatus::Committed),
            TransactionStatus::Pending => {
                self.reserve(uuid).await?;
                entry.status = TransactionStatus::Reserved;
            }
            _ => {}
        }
        if entry.status != TransactionStatus::Committing {
            self.move_to(&mut entry, TransactionStatus::Committing)
                .await?;
        }
        let store = self.repository.store();
        let held = store.held(uuid).await?;
        match entry.destination {
            None => {
                if let Err(error) = self.repository.commit_unit(&held, None).await {
                    if !(error.is_conflict() && self.already_applied(&held).await?) {
                        return Err(error);
                    }
                }
            }
            Some(destination) => store.hold(destination, &held, None).await?,
        }
        store.release(uuid).await?;
        self.move_to(&mut entry, TransactionStatus::Committed)
            .await?;
        Ok(TransactionStatus::Committed)
    }

    /// Whether a top-level commit interrupted after the store commit already stored these writes.
    async fn already_applied(&self, held: &HeldWrites) -> Result<bool> {
        let Some((first, _)) = held.first() else {
            return Ok(true);
        };
        let stored = self.repository.events(first.uuid).await?;
        Ok(stored.iter().any(|e| e == first))
    }

    /// Drops the transaction's writes: from pending, reserving or reserved. Rejecting a rejected
    /// transaction again does nothing; a committing or committed one answers a 409 conflict.
    pub async fn reject(&self, uuid: Uuid) -> Result<TransactionStatus> {
        let Some(mut entry) = self.entry_or(uuid, TransactionStatus::Rejected).await? else {
            return Ok(TransactionStatus::Rejected);
        };
        if entry.status == TransactionStatus::Rejected {
            return Ok(TransactionStatus::Rejected);
        }
        self.move_to(&mut entry, TransactionStatus::Rejected)
            .await?;
        self.repository.store().release(uuid).await?;
        Ok(TransactionStatus::Rejected)
    }

    /// Rejects transactions left reserving or reserved for longer than `max_age` and finishes commits that were
    /// interrupted (committing for longer than `max_age`); rejects transactions pending for longer than
    /// `pending_max_age` (their saga ended without telling this service, e.g. it timed out before this
    /// service's reply). Returns how many it handled.
    pub async fn tidy(&self, max_age: Duration, pending_max_age: Duration) -> Result<usize> {
        use TransactionStatus::*;
        let store = self.repository.store();
        let ago = |age: Duration| {
            chrono::Utc::now() - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX)
        };
        let rounds = [
            (
                &[Pending][..],
                pending_max_age,
                TransactionCommand::Reject,
                "pending for too long: rejecting it",
            ),
            (
                &[Reserving, Reserved][..],
                max_age,
                TransactionCommand::Reject,
                "reserved for too long: rejecting it",
            ),
            (
                &[Committing][..],
                max_age,
                TransactionCommand::Commit,
                "commit was interrupted: finishing it",
            ),
        ];
        let mut handled = 0;
        for (statuses, age, command, why) in rounds {
            for entry in store.transactions_in(statuses, ago(age)).await? {
                tracing::warn!(transaction = %entry.uuid, status = entry.status.as_str(), "{why}");
                match self.run(command, entry.uuid).await {
                    Ok(_) => handled += 1,
                    Err(error) => {
                        tracing::error!(transaction = %entry.uuid, %error, "could not tidy the transaction")
                    }
                }
            }
        }
        Ok(handled)
    }
}
