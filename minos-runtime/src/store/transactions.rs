//! The transaction port: application transaction entries, the writes each one holds, the claims that
//! keep sibling transactions apart, and the combined steps backends may do in one round trip.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{InboxEntry, StoreError, StoredEvent};
use crate::domain::{Action, DomainMessage, Event, TransactionEntry, TransactionStatus};

/// Writes held by a transaction, in the order they were made.
pub type HeldWrites = Vec<(Event, Vec<DomainMessage>)>;

/// The transaction port: application transaction entries and the writes each one holds.
#[async_trait]
pub trait TransactionStore: Send + Sync {
    /// Inserts or updates an entry.
    async fn save_transaction(&self, entry: &TransactionEntry) -> Result<(), StoreError>;

    /// The entry with this uuid.
    async fn transaction(&self, uuid: Uuid) -> Result<Option<TransactionEntry>, StoreError>;

    /// Entries in one of `statuses` last changed before `before` (e.g. reserved for too long), oldest
    /// first.
    async fn transactions_in(
        &self,
        statuses: &[TransactionStatus],
        before: DateTime<Utc>,
    ) -> Result<Vec<TransactionEntry>, StoreError>;

    /// Adds writes to those the transaction holds and records `inbox` (the message that caused them),
    /// all or nothing. With `inbox` already recorded, nothing is written and the answer is
    /// [`StoreError::AlreadyProcessed`]. Writes into a transaction with no entry
    /// ([`open_transaction`](Self::open_transaction) stores it) are refused with
    /// [`StoreError::UnknownTransaction`], nothing written: its commit would not find them. Writes
    /// into a transaction that is no longer pending are refused with
    /// [`StoreError::TransactionClosed`], nothing written. A hold is atomic with the status check:
    /// a command that moves the entry on (and then reads what is held) either sees these writes or
    /// makes this hold refuse them. A hold of no writes records the inbox entry alone, entry or not.
    async fn hold(
        &self,
        transaction: Uuid,
        writes: &[(Event, Vec<DomainMessage>)],
        inbox: Option<&InboxEntry>,
    ) -> Result<(), StoreError>;

    /// [`hold`](Self::hold), then whether the transaction now holds a write that changes a root that
    /// existed before (one a reservation claims): `false` when it holds new roots alone. Backends
    /// answer in the round trip of the hold where they can; the default reads what is held after.
    async fn hold_and_check_claims(
        &self,
        transaction: Uuid,
        writes: &[(Event, Vec<DomainMessage>)],
        inbox: Option<&InboxEntry>,
    ) -> Result<bool, StoreError> {
        self.hold(transaction, writes, inbox).await?;
        Ok(needs_claims(&self.held(transaction).await?))
    }

    /// Opens the entries of `chain` (outermost first, each pending inside the one before) that the
    /// store does not know yet, then [`hold`](Self::hold)s `writes` and `inbox` under the last: how a
    /// transaction's first writes are stored. Refused with [`StoreError::TransactionClosed`] when the
    /// last is no longer pending, nothing held. With `check_claims`, answers as
    /// [`hold_and_check_claims`](Self::hold_and_check_claims); without, `false`. Backends do it in
    /// one round trip where they can (the entries then reach the disk with the writes); the default
    /// opens, then holds.
    async fn open_and_hold(
        &self,
        chain: &[TransactionEntry],
        writes: &[(Event, Vec<DomainMessage>)],
        inbox: Option<&InboxEntry>,
        check_claims: bool,
    ) -> Result<bool, StoreError> {
        let Some(last) = chain.last() else {
            return Err(StoreError::backend(
                "store",
                "no transaction to hold writes under",
            ));
        };
        for entry in chain {
            match self.open_transaction(entry).await? {
                Some(found)
                    if entry.uuid == last.uuid && found.status != TransactionStatus::Pending =>
                {
                    return Err(StoreError::TransactionClosed {
                        transaction: found.uuid,
                        status: found.status,
                    })
                }
                _ => {}
            }
        }
        self.hold_checking(last.uuid, writes, inbox, check_claims)
            .await
    }

    /// [`hold_and_check_claims`](Self::hold_and_check_claims) with `check_claims`, else
    /// [`hold`](Self::hold) answering `false`.
    async fn hold_checking(
        &self,
        transaction: Uuid,
        writes: &[(Event, Vec<DomainMessage>)],
        inbox: Option<&InboxEntry>,
        check_claims: bool,
    ) -> Result<bool, StoreError> {
        match check_claims {
            true => self.hold_and_check_claims(transaction, writes, inbox).await,
            false => self.hold(transaction, writes, inbox).await.map(|()| false),
        }
    }

    /// The writes the transaction holds, in the order they were added.
    async fn held(&self, transaction: Uuid) -> Result<HeldWrites, StoreError>;

    /// Forgets the writes the transaction holds and its claims (after a reject, or once committed).
    async fn release(&self, transaction: Uuid) -> Result<(), StoreError>;

    /// Claims `roots` for `transaction` among the transactions with the same `destination`, atomically
    /// (also between processes sharing the store): all of them, or — when another transaction holds one
    /// — none, answering `Some((root, holder))`. Claiming roots the transaction already holds succeeds.
    async fn claim(
        &self,
        destination: Option<Uuid>,
        transaction: Uuid,
        roots: &[Uuid],
    ) -> Result<Option<(Uuid, Uuid)>, StoreError>;

    /// Saves an intermediate status (reserving) that a later step of the same command makes durable or
    /// repairs: backends may skip waiting for it to reach the disk. The default is
    /// [`save_transaction`](Self::save_transaction).
    async fn mark_transaction(&self, entry: &TransactionEntry) -> Result<(), StoreError> {
        self.save_transaction(entry).await
    }

    /// Saves `entry`, which leaves pending for `reserving`, and answers the writes the transaction
    /// holds once it is saved. Holds need a pending transaction, so these are all it will ever hold:
    /// a hold in flight is waited for and answered, a later one refused. Backends may skip waiting
    /// for the disk, as [`mark_transaction`](Self::mark_transaction) does. The default marks, then
    /// reads.
    async fn close_transaction(&self, entry: &TransactionEntry) -> Result<HeldWrites, StoreError> {
        self.mark_transaction(entry).await?;
        self.held(entry.uuid).await
    }

    /// Stores `entry` (pending, inside its destination, or with the status it carries) unless an entry
    /// with its uuid exists; answers the existing entry, or `None` when this call stored it. Backends
    /// answer in one round trip where they can; the default reads, then saves.
    async fn open_transaction(
        &self,
        entry: &TransactionEntry,
    ) -> Result<Option<TransactionEntry>, StoreError> {
        match self.transaction(entry.uuid).await? {
            Some(existing) => Ok(Some(existing)),
            None => {
                self.save_transaction(entry).await?;
                Ok(None)
            }
        }
    }

    /// The entry with this uuid and the writes it holds, read together. The default reads them one
    /// after the other.
    async fn transaction_and_held(
        &self,
        uuid: Uuid,
    ) -> Result<Option<(TransactionEntry, HeldWrites)>, StoreError> {
        match self.transaction(uuid).await? {
            Some(entry) => Ok(Some((entry, self.held(uuid).await?))),
            None => Ok(None),
        }
    }

    /// Commits a top-level transaction in one atomic step: stores `held` as one unit of work (events,
    /// snapshots, outbox rows), saves `entry` (committed) and forgets its writes and claims. A write
    /// held since `held` was read, or an entry another command moved on meanwhile, writes nothing
    /// and answers [`StoreError::TransactionChanged`]. Answers `None` when the backend cannot do it
    /// in one step; the caller then marks the entry committing,
    /// commits the unit and settles the entry one after the other.
    async fn commit_transaction(
        &self,
        _entry: &TransactionEntry,
        _held: &HeldWrites,
    ) -> Result<Option<Vec<StoredEvent>>, StoreError> {
        Ok(None)
    }

    /// Commits a pending top-level transaction without a reservation round of its own: claims `roots`
    /// (among top-level transactions, as [`claim`](Self::claim) does) and does what
    /// [`commit_transaction`](Self::commit_transaction) does, in one atomic step, so no claim outlives
    /// it. A root another transaction holds writes nothing and answers [`ClaimedCommit::Held`]; a
    /// version conflict writes nothing and is an error. The default answers
    /// [`ClaimedCommit::Unsupported`]: the caller reserves, then commits.
    async fn claim_and_commit(
        &self,
        _entry: &TransactionEntry,
        _held: &HeldWrites,
        _roots: &[Uuid],
    ) -> Result<ClaimedCommit, StoreError> {
        Ok(ClaimedCommit::Unsupported)
    }

    /// Saves `entry` (committed or rejected) and forgets the writes and claims it held: its end, in one
    /// step where the backend can. A reject can end a pending transaction while a write is being held
    /// under it: that write must be forgotten too, or refused (backends do both in one step, as a
    /// hold). The default releases, then saves, and leaves that write behind.
    async fn settle_transaction(&self, entry: &TransactionEntry) -> Result<(), StoreError> {
        self.release(entry.uuid).await?;
        self.save_transaction(entry).await
    }
}

/// What [`TransactionStore::claim_and_commit`] did.
#[derive(Debug)]
pub enum ClaimedCommit {
    /// Committed: the stored events, the entry saved committed, nothing held or claimed.
    Committed(Vec<StoredEvent>),
    /// Another transaction holds `root` (`holder`, when it still did once this call gave up): nothing
    /// was written.
    Held {
        /// The root claimed by another transaction.
        root: Uuid,
        /// The transaction holding it.
        holder: Option<Uuid>,
    },
    /// The backend cannot do it in one step.
    Unsupported,
}

/// Whether reserving these writes claims roots: some change a root that existed before.
pub(crate) fn needs_claims(writes: &[(Event, Vec<DomainMessage>)]) -> bool {
    writes
        .iter()
        .any(|(event, _)| event.action != Action::Create)
}
