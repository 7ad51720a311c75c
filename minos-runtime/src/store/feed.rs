//! Outbox rows a store hands its relay as it commits them, so that the relay need not read them back.
//!
//! A writer takes a [`FeedTicket`] before its statement (or transaction) takes outbox ids and completes
//! it with the rows it committed. The relay takes rows in id order, as a read of the table would return
//! them, and only without gaps: past a missing id it waits while a ticket that may hold that id is
//! open, then reads the table instead (the id belongs to another process's row, to a transaction of
//! this one whose outcome is unknown, or to nothing). So the order of one root's messages (its
//! versions take increasing ids) is the table's.
//!
//! The relay still reads the outbox table: when it starts, past a gap, when a commit's rows did not
//! come through the feed (a ticket dropped without its rows: a failed commit, whose outcome may be
//! unknown), after the feed overflowed, and every few dozen milliseconds for rows
//! written by other processes. A row such a read finds is not handed over again.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::OutboxRecord;

/// The most rows the feed holds for a relay that does not take them (a held or backlogged relay, a
/// gap an open transaction keeps): past it they are dropped, and the relay reads the table instead.
const CAPACITY: usize = 1024;

/// Committed outbox rows on their way to this process's relay (see the module docs).
#[derive(Debug, Default)]
pub struct CommitFeed {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The relay's wake-up while a relay takes rows; `None`: nothing is kept.
    wake: Option<Arc<Notify>>,
    /// The number of the last ticket taken.
    issued: u64,
    /// Tickets taken and not completed (with or without a relay: one taken before a relay started
    /// may hold the ids its rows wait for).
    open: BTreeSet<u64>,
    /// Completed rows by id, not taken yet.
    ready: BTreeMap<i64, Fed>,
    /// The lowest id not accounted for (taken, or passed by a read of the table); `None` until known.
    next: Option<i64>,
    /// Rows were committed that the feed does not hold, or it holds a gap: the relay must read the
    /// table before more rows go out.
    dirty: bool,
    /// The lowest id of a row the feed may have lost (dropped by an overflow, or committed by a
    /// ticket dropped without its rows): the relay's read must start there.
    lost: Option<i64>,
    /// Past [`CAPACITY`]: rows are dropped until the relay reads the table.
    overflowed: bool,
    /// The ids each table read found, with the last ticket taken when it ended: rows of tickets up to
    /// that one are not handed over again.
    reads: Vec<(u64, HashSet<i64>)>,
}

/// A completed row with its ticket, and the last ticket taken when it completed: only tickets up to
/// that one may hold an id below it that is still missing (ids come from one sequence, in the order
/// statements ask for them).
#[derive(Debug)]
struct Fed {
    ticket: u64,
    issued: u64,
    row: OutboxRecord,
}

impl CommitFeed {
    /// A feed that keeps no rows until this process's relay takes them (it holds the lease).
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned one still holds consistent state.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a ticket before a statement (or transaction) takes outbox ids. Complete it with the rows
    /// once they are committed; drop it when the commit failed (after the attempt, so that the relay
    /// reads what it may have committed). Without a relay taking rows no row is kept, but the ticket
    /// is: a relay that starts meanwhile waits for it.
    pub fn ticket(&self) -> FeedTicket<'_> {
        let mut state = self.state();
        state.issued += 1;
        let number = state.issued;
        state.open.insert(number);
        FeedTicket {
            feed: self,
            number: Some(number),
            // Its ids come after every id known now.
            floor: state.next.unwrap_or(0),
        }
    }

    /// Starts keeping rows for a relay woken by `wake` (its lease granted); the rows up to `after`
    /// (the last id when the lease was granted) and those committed before are the relay's to read
    /// from the table.
    pub(crate) fn enable(&self, wake: Arc<Notify>, after: Option<i64>) {
        let mut state = self.state();
        *state = State {
            wake: Some(wake),
            issued: state.issued,
            open: std::mem::take(&mut state.open),
            next: after.map(|id| id + 1),
            reads: std::mem::take(&mut state.reads),
            ..State::default()
        };
    }

    /// Stops keeping rows (the relay lost its lease or stopped) and drops what it held. What the
    /// table reads found is kept: a row published then is not handed over again under a next lease.
    pub(crate) fn disable(&self) {
        let mut state = self.state();
        *state = State {
            issued: state.issued,
            open: std::mem::take(&mut state.open),
            reads: std::mem::take(&mut state.reads),
            ..State::default()
        };
    }

    /// Whether the relay must read the table before it takes more, and from which id at least (a
    /// row the feed may have lost); clears both, and keeps rows again after an overflow.
    pub(crate) fn take_dirty(&self) -> (bool, Option<i64>) {
        let mut state = self.state();
        state.overflowed = false;
        (std::mem::take(&mut state.dirty), state.lost.take())
    }

    /// Up to `limit` rows in id order, from the lowest not accounted for, without gaps and without
    /// the rows a table read already found. At a gap no open ticket can fill it notes that the table
    /// must be read ([`take_dirty`](Self::take_dirty)).
    pub(crate) fn take(&self, limit: usize) -> Vec<OutboxRecord> {
        let mut guard = self.state();
        let state = &mut *guard;
        let mut taken = Vec::new();
        // Rows the feed does not hold may come before these: the table first.
        if state.dirty {
            return taken;
        }
        while taken.len() < limit.max(1) {
            let Some(entry) = state.ready.first_entry() else {
                break;
            };
            let id = *entry.key();
            match state.next {
                Some(next) if id <= next => state.next = Some(next.max(id + 1)),
                // A missing id below: wait while a ticket that may hold it is open, else read.
                Some(_) => {
                    let issued = entry.get().issued;
                    if state.open.first().is_none_or(|first| *first > issued) {
                        state.dirty = true;
                    }
                    break;
                }
                None => {
                    state.dirty = true;
                    break;
                }
            }
            let fed = entry.remove();
            let found = state
                .reads
                .iter()
                .any(|(bound, ids)| fed.ticket <= *bound && ids.contains(&id));
            if !found {
                taken.push(fed.row);
            }
        }
        // A read's ids matter while a ticket it may overlap is open or has rows not taken.
        let pending = state
            .ready
            .values()
            .map(|fed| fed.ticket)
            .chain(state.open.first().copied())
            .min()
            .unwrap_or(u64::MAX);
        state.reads.retain(|(bound, _)| pending <= *bound);
        taken
    }

    /// Notes the ids a table read found (once it answered): rows of tickets taken up to now with the
    /// same ids are not handed over again, and every id up to the greatest is accounted for.
    pub(crate) fn note_read(&self, ids: &[i64]) {
        let mut state = self.state();
        if state.wake.is_none() {
            return;
        }
        let Some(&greatest) = ids.iter().max() else {
            return;
        };
        state.next = Some(
            state
                .next
                .map_or(greatest + 1, |next| next.max(greatest + 1)),
        );
        let bound = state.issued;
        let overlaps = state.open.first().is_some_and(|first| *first <= bound)
            || state.ready.values().any(|fed| fed.ticket <= bound);
        if overlaps {
            state.reads.push((bound, ids.iter().copied().collect()));
        }
    }

    /// A ticket taken before the relay started hands its rows over like any other: a read of the
    /// table since then that found them took note ([`note_read`](Self::note_read)), and one that
    /// did not found them uncommitted.
    fn complete(&self, number: u64, floor: i64, rows: Option<Vec<OutboxRecord>>) {
        let mut guard = self.state();
        let state = &mut *guard;
        state.open.remove(&number);
        if state.wake.is_none() {
            return;
        }
        match rows {
            Some(rows) if state.overflowed => {
                let dropped = rows.iter().map(|row| row.id).min();
                state.lost = state.lost.into_iter().chain(dropped).min();
            }
            Some(rows) if state.ready.len() + rows.len() > CAPACITY => {
                tracing::debug!("outbox feed full: the relay reads the rows from the table");
                let held = state.ready.keys().next().copied();
                let dropped = rows.iter().map(|row| row.id).chain(held).min();
                state.lost = state.lost.into_iter().chain(dropped).min();
                state.overflowed = true;
                state.dirty = true;
                state.ready.clear();
            }
            Some(rows) => {
                for row in rows {
                    let fed = Fed {
                        ticket: number,
                        issued: state.issued,
                        row,
                    };
                    state.ready.insert(fed.row.id, fed);
                }
            }
            // Maybe committed, maybe not: the table tells, from the first id the ticket could hold.
            None => {
                state.dirty = true;
                state.lost = Some(state.lost.map_or(floor, |lost| lost.min(floor)));
            }
        }
        if let Some(wake) = &state.wake {
            wake.notify_one();
        }
    }
}

/// A writer's place in the feed (see [`CommitFeed::ticket`]). Dropped without
/// [`complete`](Self::complete) (an error, a cancelled statement), the relay reads the table.
#[derive(Debug)]
#[must_use = "complete the ticket with the rows committed, or drop it once they are"]
pub struct FeedTicket<'a> {
    feed: &'a CommitFeed,
    number: Option<u64>,
    floor: i64,
}

impl FeedTicket<'_> {
    /// Hands over every outbox row the statement committed (ids as stored, messages with every header
    /// the table holds).
    pub fn complete(mut self, rows: Vec<OutboxRecord>) {
        if let Some(number) = self.number.take() {
            self.feed.complete(number, self.floor, Some(rows));
        }
    }
}

impl Drop for FeedTicket<'_> {
    fn drop(&mut self) {
        if let Some(number) = self.number.take() {
            self.feed.complete(number, self.floor, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::DomainMessage;

    fn row(id: i64) -> OutboxRecord {
        OutboxRecord {
            id,
            message: DomainMessage {
                identifier: uuid::Uuid::new_v4(),
                topic: "FooCreated".into(),
                key: "k".into(),
                content: serde_json::json!({ "id": id }),
                headers: Default::default(),
            },
            created_at: chrono::Utc::now(),
        }
    }

    fn ids(rows: &[OutboxRecord]) -> Vec<i64> {
        rows.iter().map(|row| row.id).collect()
    }

    #[test]
    fn a_disabled_feed_keeps_nothing() {
        let feed = CommitFeed::new();
        feed.ticket().complete(vec![row(1)]);
        drop(feed.ticket());
        assert!(feed.take(10).is_empty());
        assert!(!feed.take_dirty().0);
    }

    /// A statement that took its ticket before the relay started hands its rows over, and the rows
    /// after them wait for it; what a read of the table found meanwhile is not handed over again.
    #[test]
    fn a_ticket_taken_before_the_relay_started_counts() {
        let feed = CommitFeed::new();
        let before = feed.ticket();
        let found = feed.ticket();
        feed.enable(Arc::new(Notify::new()), Some(0));
        feed.ticket().complete(vec![row(3)]);
        assert!(
            feed.take(10).is_empty(),
            "ids 1 and 2 may be the earlier tickets'"
        );
        assert!(!feed.take_dirty().0);
        feed.note_read(&[2]);
        found.complete(vec![row(2)]);
        before.complete(vec![row(1)]);
        assert_eq!(ids(&feed.take(10)), vec![1, 3]);
        assert!(!feed.take_dirty().0);
    }

    /// Rows go out in id order without gaps: a row waits for an open ticket that may hold a lower id.
    #[test]
    fn rows_go_out_in_id_order_without_gaps() {
        let feed = CommitFeed::new();
        feed.enable(Arc::new(Notify::new()), Some(4));
        let first = feed.ticket();
        let second = feed.ticket();
        second.complete(vec![row(7), row(6)]);
        // Id 5 may be the first ticket's.
        assert!(feed.take(10).is_empty());
        assert!(!feed.take_dirty().0);
        // A ticket taken after the rows completed cannot hold a lower id: it does not hold them back.
        let later = feed.ticket();
        first.complete(vec![row(5), row(8)]);
        assert_eq!(ids(&feed.take(10)), vec![5, 6, 7, 8]);
        later.complete(vec![row(9)]);
        assert_eq!(ids(&feed.take(1)), vec![9]);
        assert!(feed.take(10).is_empty());
        assert!(!feed.take_dirty().0);
    }

    /// A missing id no open ticket can hold (another process's row, a transaction's, a rolled-back
    /// one) stops the rows past it until the relay read the table.
    #[test]
    fn a_gap_sends_the_relay_to_the_table() {
        let feed = CommitFeed::new();
        feed.enable(Arc::new(Notify::new()), Some(0));
        feed.ticket().complete(vec![row(1), row(3), row(4)]);
        assert_eq!(ids(&feed.take(10)), vec![1]);
        assert!(feed.take_dirty().0);
        // The read found 2, 3 and 4 (4 was committed by then): only what it did not find goes out.
        feed.note_read(&[2, 3, 4]);
        feed.ticket().complete(vec![row(5)]);
        assert_eq!(ids(&feed.take(10)), vec![5]);
        assert!(!feed.take_dirty().0);
    }

    #[test]
    fn a_dropped_ticket_sends_the_relay_to_the_table() {
        let feed = CommitFeed::new();
        feed.enable(Arc::new(Notify::new()), Some(0));
        let transaction = feed.ticket();
        feed.ticket().complete(vec![row(2)]);
        // Id 1 may be the transaction's: the row waits.
        assert!(feed.take(10).is_empty());
        drop(transaction);
        assert_eq!(
            feed.take_dirty(),
            (true, Some(1)),
            "read from the first id it could hold"
        );
        assert!(feed.take(10).is_empty(), "id 1 is still missing");
        assert!(feed.take_dirty().0);
        feed.note_read(&[1, 2]);
        assert!(feed.take(10).is_empty(), "the read found both");
    }

    #[test]
    fn without_a_known_start_the_relay_reads_first() {
        let feed = CommitFeed::new();
        feed.enable(Arc::new(Notify::new()), None);
        feed.ticket().complete(vec![row(8)]);
        assert!(feed.take(10).is_empty());
        assert!(feed.take_dirty().0);
        feed.note_read(&[7]);
        assert_eq!(ids(&feed.take(10)), vec![8]);
        // An empty read accounts for nothing.
        feed.note_read(&[]);
        feed.ticket().complete(vec![row(9)]);
        assert_eq!(ids(&feed.take(10)), vec![9]);
    }

    #[test]
    fn an_overflow_drops_rows_until_the_relay_reads_the_table() {
        let feed = CommitFeed::new();
        feed.enable(Arc::new(Notify::new()), Some(0));
        let gap = feed.ticket();
        feed.ticket()
            .complete((2..=CAPACITY as i64 + 1).map(row).collect());
        feed.ticket().complete(vec![row(5000)]);
        feed.ticket().complete(vec![row(5001)]);
        assert!(feed.take(10_000).is_empty());
        assert_eq!(
            feed.take_dirty(),
            (true, Some(2)),
            "read from the first row dropped"
        );
        gap.complete(vec![row(1)]);
        feed.note_read(&[5001]);
        feed.ticket().complete(vec![row(5002)]);
        assert_eq!(ids(&feed.take(10)), vec![1, 5002]);
    }

    #[test]
    fn a_disabled_feed_drops_what_it_held() {
        let feed = CommitFeed::new();
        feed.enable(Arc::new(Notify::new()), Some(0));
        let open = feed.ticket();
        feed.ticket().complete(vec![row(2)]);
        feed.disable();
        open.complete(vec![row(1)]);
        feed.enable(Arc::new(Notify::new()), Some(2));
        assert!(feed.take(10).is_empty());
        feed.ticket().complete(vec![row(3)]);
        assert_eq!(ids(&feed.take(10)), vec![3]);
    }
}
