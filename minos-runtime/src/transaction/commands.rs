//! Reserve, commit and reject: the commands that end a transaction, and the job that tidies the ones
//! left behind.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use tokio::sync::Notify;
use uuid::Uuid;

use super::view::View;
use crate::domain::{Action, Event, TransactionEntry, TransactionStatus};
use crate::error::{Error, Result};
use crate::keyed_lock::KeyedLocks;
use crate::store::{
    check_applies, needs_claims, ClaimedCommit, EventFilter, HeldWrites, SharedStore, StoreError,
};

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

/// Reserve, commit and reject over one store (`repository.transactions()`).
#[derive(Clone, Debug)]
pub struct Transactions {
    store: SharedStore,
    committed: Arc<Notify>,
}

impl Transactions {
    /// The transactions of `store`; `committed` is signalled after a top-level commit stored writes (so
    /// an outbox relay publishes them at once).
    pub fn new(store: SharedStore, committed: Arc<Notify>) -> Self {
        Transactions { store, committed }
    }

    /// Waits until no other command on transaction `uuid` runs over this store in this process, and
    /// keeps it so until the guard is dropped. A commit sent again after a timeout, or a redelivered
    /// one, then finds the transaction committed instead of storing its writes a second time (a
    /// version conflict); a reject and a commit no longer interleave. Across processes, a
    /// transaction's commands share its key, so one consumer takes them in turn.
    async fn alone(&self, uuid: Uuid) -> tokio::sync::OwnedMutexGuard<()> {
        static RUNNING: LazyLock<KeyedLocks<(usize, Uuid)>> = LazyLock::new(Default::default);
        let store = Arc::as_ptr(&self.store) as *const () as usize;
        RUNNING.lock((store, uuid)).await
    }

    /// Runs one command on transaction `uuid`.
    pub async fn run(&self, command: TransactionCommand, uuid: Uuid) -> Result<TransactionStatus> {
        match command {
            TransactionCommand::Reserve => self.reserve(uuid).await,
            TransactionCommand::Commit => self.commit(uuid).await,
            TransactionCommand::Reject => self.reject(uuid).await,
        }
    }

    /// The entry and the writes it holds; when there is none (nothing was written in it here), records
    /// `status` as its outcome so a late write is refused, and answers `None`.
    async fn entry_or(
        &self,
        uuid: Uuid,
        status: TransactionStatus,
    ) -> Result<Option<(TransactionEntry, HeldWrites)>> {
        let store = &self.store;
        match store.transaction_and_held(uuid).await? {
            Some(found) => Ok(Some(found)),
            None => {
                let mut entry = TransactionEntry::new(uuid, None);
                entry.status = status;
                // Stored only if still absent: a first write that opened the entry meanwhile keeps
                // it (and its writes), and this command runs on it.
                match store.open_transaction(&entry).await? {
                    None => Ok(None),
                    Some(_) => Ok(store.transaction_and_held(uuid).await?),
                }
            }
        }
    }

    async fn move_to(&self, entry: &mut TransactionEntry, next: TransactionStatus) -> Result<()> {
        entry.transition(next)?;
        self.store.save_transaction(entry).await?;
        Ok(())
    }

    /// Moves the entry to its end (committed or rejected) and forgets its writes and claims, in one step.
    async fn settle(&self, entry: &mut TransactionEntry, end: TransactionStatus) -> Result<()> {
        entry.transition(end)?;
        self.store.settle_transaction(entry).await?;
        Ok(())
    }

    /// Checks that the transaction's writes still apply to its destination and that no sibling being
    /// reserved or committed touched the same roots: reserved, or rejected with a 409 conflict. Reserving
    /// a reserved or committed transaction again answers its status.
    pub async fn reserve(&self, uuid: Uuid) -> Result<TransactionStatus> {
        let _alone = self.alone(uuid).await;
        let Some((mut entry, mut held)) = self.entry_or(uuid, TransactionStatus::Reserved).await?
        else {
            return Ok(TransactionStatus::Reserved);
        };
        self.reserve_entry(&mut entry, &mut held).await
    }

    /// Reserves the entry; `held` becomes the writes checked, all the transaction holds.
    async fn reserve_entry(
        &self,
        entry: &mut TransactionEntry,
        held: &mut HeldWrites,
    ) -> Result<TransactionStatus> {
        match entry.status {
            TransactionStatus::Reserved
            | TransactionStatus::Committing
            | TransactionStatus::Committed => return Ok(entry.status),
            // Refused as any move out of `rejected` is.
            TransactionStatus::Rejected => {
                entry.clone().transition(TransactionStatus::Reserving)?
            }
            // Leave pending before the checks: no write can be held after that, so the writes read
            // then are all there will be, and the checks cover each (a write held while the
            // reservation ran is claimed and checked, or refused). Roots are claimed while
            // `reserving`, so an interrupted reservation is tidied as one; the save of `reserved`
            // (or the claim) waits for the disk and takes this mark with it.
            TransactionStatus::Pending => {
                entry.transition(TransactionStatus::Reserving)?;
                *held = self.store.close_transaction(entry).await?;
            }
            TransactionStatus::Reserving => {}
        }
        let firsts = first_write_per_root(held);
        let checked = match firsts {
            Ok(firsts) => self.validate(entry, &firsts).await,
            Err(error) => Err(error.into()),
        };
        match checked {
            Ok(()) => {
                self.move_to(entry, TransactionStatus::Reserved).await?;
                Ok(TransactionStatus::Reserved)
            }
            Err(error) => {
                self.settle(entry, TransactionStatus::Rejected).await?;
                tracing::info!(transaction = %entry.uuid, %error, "reservation refused: transaction rejected");
                Err(error)
            }
        }
    }

    async fn validate(
        &self,
        entry: &TransactionEntry,
        firsts: &BTreeMap<Uuid, &Event>,
    ) -> Result<()> {
        let destination_chain = self.destination_chain(entry).await?;
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
            false => {
                self.store
                    .claim(entry.destination, entry.uuid, &roots)
                    .await?
            }
        };
        if let Some((root, holder)) = conflict {
            let name = firsts.get(&root).map_or("root", |e| e.name.as_str());
            return Err(Error::with_status(
                409,
                format!("{name} {root} is also changed by transaction {holder}, reserved first"),
            ));
        }
        // Creations carry new random uuids; changes must follow the destination's version.
        let destination = View::new(self.store.as_ref(), &destination_chain, Vec::new());
        for event in firsts.values().filter(|e| e.action != Action::Create) {
            let current = destination.snapshot(&event.name, event.uuid).await?;
            check_applies(current.as_ref(), event)?;
        }
        Ok(())
    }

    /// The transactions the entry's writes go into, outermost first; the nearest must still be pending.
    async fn destination_chain(&self, entry: &TransactionEntry) -> Result<Vec<Uuid>> {
        let mut chain = Vec::new();
        let mut next = entry.destination;
        while let Some(uuid) = next {
            let parent = self.store.transaction(uuid).await?.ok_or_else(|| {
                Error::with_status(409, format!("destination transaction {uuid} is unknown"))
            })?;
            if chain.is_empty() && parent.status != TransactionStatus::Pending {
                return Err(Error::with_status(
                    409,
                    format!(
                        "destination transaction {uuid} is {}, not pending",
                        parent.status.as_str()
                    ),
                ));
            }
            chain.insert(0, uuid);
            next = parent.destination;
        }
        Ok(chain)
    }

    /// Reserves (when still pending), then moves the writes into the destination — at the top level one
    /// atomic store commit that publishes the domain events — and marks the transaction committed.
    /// Committing a committed transaction again does nothing.
    pub async fn commit(&self, uuid: Uuid) -> Result<TransactionStatus> {
        let _alone = self.alone(uuid).await;
        // A write held while the one-step commit ran (or another process moving the entry on) makes
        // the store refuse it with nothing written: read again and commit what is there now. While
        // writes keep arriving, the fourth try reserves the transaction first, which refuses the
        // holds that come after it (they answer that the transaction is no longer pending).
        for _ in 0..3 {
            match self.commit_read(uuid, true).await {
                Err(Error::Store(StoreError::TransactionChanged { .. })) => {}
                outcome => return outcome,
            }
        }
        self.commit_read(uuid, false).await
    }

    /// [`commit`](Self::commit) on the entry and writes as read now; a pending top-level transaction
    /// in one step where the store can (`one_step`), else reserved first.
    async fn commit_read(&self, uuid: Uuid, one_step: bool) -> Result<TransactionStatus> {
        let Some((mut entry, mut held)) = self.entry_or(uuid, TransactionStatus::Committed).await?
        else {
            return Ok(TransactionStatus::Committed);
        };
        // Read while pending: writes may still be held, until the entry leaves pending.
        let mut read_pending = entry.status == TransactionStatus::Pending;
        match entry.status {
            TransactionStatus::Committed => return Ok(TransactionStatus::Committed),
            // At the top level: claimed (when it changes existing roots) and committed in one step
            // where the store can, nothing to tidy if it stops midway. Where it cannot, a transaction
            // holding only new roots has nothing to claim: it is reserved in memory and the atomic
            // commit below is the step; any other is reserved first.
            TransactionStatus::Pending if entry.destination.is_none() => {
                if one_step {
                    if let Some(status) = self.commit_unreserved(&mut entry, &held).await? {
                        return Ok(status);
                    }
                }
                if !one_step || needs_claims(&held) {
                    self.reserve_entry(&mut entry, &mut held).await?;
                    read_pending = false;
                } else {
                    entry.transition(TransactionStatus::Reserved)?;
                }
            }
            TransactionStatus::Pending => {
                self.reserve_entry(&mut entry, &mut held).await?;
                read_pending = false;
            }
            _ => {}
        }
        let store = &self.store;
        if entry.status == TransactionStatus::Reserved && entry.destination.is_none() {
            // One atomic step where the store can: nothing between reserved and committed to tidy.
            let mut committed = entry.clone();
            committed.transition(TransactionStatus::Committing)?;
            committed.transition(TransactionStatus::Committed)?;
            if store.commit_transaction(&committed, &held).await?.is_some() {
                self.committed.notify_one();
                return Ok(TransactionStatus::Committed);
            }
        }
        if entry.status != TransactionStatus::Committing {
            self.move_to(&mut entry, TransactionStatus::Committing)
                .await?;
        }
        if read_pending {
            // Read while still pending: a write held since then is in the store now, and none can
            // follow (holds need a pending entry), so this is all of them.
            held = store.held(uuid).await?;
        }
        match entry.destination {
            None => match store.commit_unit(&held, None).await {
                Ok(_) => self.committed.notify_one(),
                Err(error) => {
                    let error = Error::from(error);
                    if !(error.is_conflict() && self.already_applied(&held).await?) {
                        return Err(error);
                    }
                }
            },
            Some(destination) => store.hold(destination, &held, None).await?,
        }
        self.settle(&mut entry, TransactionStatus::Committed)
            .await?;
        Ok(TransactionStatus::Committed)
    }

    /// Commits a pending top-level transaction without a reservation round: the roots it changes are
    /// claimed and its writes checked and stored in one atomic store step. A root another transaction
    /// claimed, or a write that no longer applies, rejects it as a reservation would. `None` when the
    /// store cannot.
    async fn commit_unreserved(
        &self,
        entry: &mut TransactionEntry,
        held: &HeldWrites,
    ) -> Result<Option<TransactionStatus>> {
        let refusal = match first_write_per_root(held) {
            Err(error) => Error::from(error),
            Ok(firsts) => {
                let roots: Vec<Uuid> = firsts
                    .values()
                    .filter(|e| e.action != Action::Create)
                    .map(|e| e.uuid)
                    .collect();
                let mut committed = entry.clone();
                for next in [
                    TransactionStatus::Reserved,
                    TransactionStatus::Committing,
                    TransactionStatus::Committed,
                ] {
                    committed.transition(next)?;
                }
                match self.store.claim_and_commit(&committed, held, &roots).await {
                    Ok(ClaimedCommit::Unsupported) => return Ok(None),
                    Ok(ClaimedCommit::Committed(_)) => {
                        self.committed.notify_one();
                        return Ok(Some(TransactionStatus::Committed));
                    }
                    Ok(ClaimedCommit::Held { root, holder }) => {
                        let name = firsts.get(&root).map_or("root", |e| e.name.as_str());
                        let holder = holder.map_or_else(|| "another".to_owned(), |h| h.to_string());
                        Error::with_status(
                            409,
                            format!("{name} {root} is also changed by transaction {holder}, reserved first"),
                        )
                    }
                    // Nothing was written: the writes do not apply to the store any more.
                    Err(
                        error @ (StoreError::Conflict { .. }
                        | StoreError::NotFound { .. }
                        | StoreError::AlreadyDeleted { .. }),
                    ) => Error::from(error),
                    // The outcome is unknown (the connection may have dropped after the commit): the
                    // entry stays as it is, for the caller to read or retry.
                    Err(error) => return Err(error.into()),
                }
            }
        };
        self.settle(entry, TransactionStatus::Rejected).await?;
        tracing::info!(transaction = %entry.uuid, error = %refusal, "commit refused: transaction rejected");
        Err(refusal)
    }

    /// Whether a top-level commit interrupted after the store commit already stored these writes.
    async fn already_applied(&self, held: &HeldWrites) -> Result<bool> {
        let Some((first, _)) = held.first() else {
            return Ok(true);
        };
        let filter = EventFilter {
            uuid: Some(first.uuid),
            ..EventFilter::default()
        };
        let stored = self.store.events(&filter).await?;
        Ok(stored.iter().any(|e| e.event == *first))
    }

    /// Drops the transaction's writes: from pending, reserving or reserved. Rejecting a rejected
    /// transaction again does nothing; a committing or committed one answers a 409 conflict.
    pub async fn reject(&self, uuid: Uuid) -> Result<TransactionStatus> {
        let _alone = self.alone(uuid).await;
        let Some((mut entry, _)) = self.entry_or(uuid, TransactionStatus::Rejected).await? else {
            return Ok(TransactionStatus::Rejected);
        };
        if entry.status == TransactionStatus::Rejected {
            return Ok(TransactionStatus::Rejected);
        }
        self.settle(&mut entry, TransactionStatus::Rejected).await?;
        Ok(TransactionStatus::Rejected)
    }

    /// Rejects transactions left reserving or reserved for longer than `max_age` and finishes commits that were
    /// interrupted (committing for longer than `max_age`); rejects transactions pending for longer than
    /// `pending_max_age` (their saga ended without telling this service, e.g. it timed out before this
    /// service's reply). Returns how many it handled.
    pub async fn tidy(&self, max_age: Duration, pending_max_age: Duration) -> Result<usize> {
        use TransactionStatus::*;
        let store = &self.store;
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

/// The first held write of each root, after checking that each root's held versions follow each other.
fn first_write_per_root(held: &HeldWrites) -> Result<BTreeMap<Uuid, &Event>, StoreError> {
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
                });
            }
        } else {
            firsts.insert(event.uuid, event);
        }
        last_version.insert(event.uuid, event.version);
    }
    Ok(firsts)
}
