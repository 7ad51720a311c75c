//! What a relay knows of the rows it published and of the store's feed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::MARK_DELAY;
use crate::messaging::{Receipt, Receipts};
use crate::store::CommitFeed;

/// What a relay knows of the rows it published to a broker that holds them until handled.
pub(super) struct InFlight {
    pub(super) receipts: Receipts,
    pub(super) arrived: mpsc::UnboundedReceiver<Receipt>,
    /// Published, no receipt yet.
    pub(super) ids: BTreeSet<i64>,
    /// The last row read past the others (0: read from the start).
    pub(super) cursor: i64,
    /// Handled, to be marked sent.
    pub(super) handled: BTreeSet<i64>,
    /// When the oldest of `handled` arrived (or, after a failed mark, when to try again).
    pub(super) first_handled: Option<Instant>,
    /// Refused by the broker: published again like a dropped one.
    pub(super) refused: BTreeSet<i64>,
    /// Dropped unhandled, and when to publish each again.
    pub(super) dropped: BTreeMap<i64, Instant>,
    /// How long a dropped row waits before it is published again.
    pub(super) retry_after: Duration,
    pub(super) swept: Instant,
}

/// The rows the store hands over as it commits them ([`OutboxStore::feed`](crate::store::OutboxStore::feed)),
/// and when the relay last read the table.
pub(super) struct Fed {
    pub(super) feed: Arc<CommitFeed>,
    /// When the table was last read.
    pub(super) read_at: Instant,
    /// Not read through since the lease was granted.
    pub(super) unread: bool,
}

impl Fed {
    pub(super) fn new(feed: Arc<CommitFeed>) -> Self {
        Fed {
            feed,
            read_at: Instant::now(),
            unread: true,
        }
    }

    /// Whether to read the table before taking from the feed: when the feed does not hold everything
    /// committed (the lease was just granted, rows came without it, it holds a gap, it overflowed),
    /// and once `interval` for the rows of other processes; with the lowest id of a row the feed may
    /// have lost, where the read must start. Notes the read as started.
    pub(super) fn must_read(&mut self, interval: Duration) -> (bool, Option<i64>) {
        let (dirty, lost) = self.feed.take_dirty();
        let read = dirty || self.unread || self.read_at.elapsed() >= interval;
        if read {
            self.read_at = Instant::now();
        }
        (read, lost)
    }
}

impl InFlight {
    pub(super) fn new(retry_after: Duration) -> Self {
        let (receipts, arrived) = Receipts::channel();
        InFlight {
            receipts,
            arrived,
            ids: BTreeSet::new(),
            cursor: 0,
            handled: BTreeSet::new(),
            first_handled: None,
            refused: BTreeSet::new(),
            dropped: BTreeMap::new(),
            retry_after,
            swept: Instant::now(),
        }
    }

    /// Takes in every receipt that arrived.
    pub(super) fn collect(&mut self) {
        while let Ok(receipt) = self.arrived.try_recv() {
            self.note(receipt);
        }
    }

    pub(super) fn note(&mut self, receipt: Receipt) {
        self.ids.remove(&receipt.id);
        if self.refused.remove(&receipt.id) || !receipt.handled {
            self.dropped
                .insert(receipt.id, Instant::now() + self.retry_after);
            return;
        }
        self.handled.insert(receipt.id);
        self.first_handled.get_or_insert_with(Instant::now);
    }

    /// Whether row `id` needs no publishing now: in flight, handled and waiting for its mark (a sweep
    /// or a range published again before the mark must not deliver it once more), or dropped and
    /// waiting for its delay.
    pub(super) fn taken(&self, id: i64) -> bool {
        self.ids.contains(&id) || self.handled.contains(&id) || self.dropped.contains_key(&id)
    }

    /// When the handled rows should be marked.
    pub(super) fn mark_due(&self) -> Option<Instant> {
        self.first_handled.map(|first| first + MARK_DELAY)
    }

    /// The next moment something is due: a mark, or (when `publishing`) a dropped row's publish.
    pub(super) fn next_due(&self, publishing: bool) -> Option<Instant> {
        let retry = self.dropped.values().min().copied().filter(|_| publishing);
        self.mark_due().into_iter().chain(retry).min()
    }

    /// Whether to look for rows committed below the ones read: every `interval` once something was read.
    pub(super) fn sweep_due(&self, interval: Duration) -> bool {
        self.cursor > 0 && self.swept.elapsed() >= interval
    }

    /// The rows below this id are neither in flight nor handled and waiting for their mark: a sweep
    /// reads below it, so that it does not read again, under load, the many rows whose marks wait.
    pub(super) fn floor(&self) -> i64 {
        let first = self
            .ids
            .first()
            .into_iter()
            .chain(self.handled.first())
            .min();
        first.map_or(self.cursor + 1, |id| *id.min(&(self.cursor + 1)))
    }
}
