//! The outbox relay: publishes messages committed with their events, in commit order, and marks them
//! sent only once the broker has them, or, on a broker that holds them in this process's memory,
//! once they were handled. On start it first drains what an earlier run left behind.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

mod flight;

use flight::{Fed, InFlight};

use super::{BrokerMessage, Receipt, SharedBroker};
use crate::error::Result;
use crate::store::{CommitFeed, OutboxRecord, RelayLease, SharedStore};

/// Moves outbox rows to the broker.
#[derive(Clone, Debug)]
pub struct OutboxRelay {
    store: SharedStore,
    broker: SharedBroker,
    wake: Arc<Notify>,
    batch: usize,
    poll: Duration,
    metrics: Option<crate::telemetry::Metrics>,
}

/// A running relay; `stop` drains what is pending and ends it.
#[derive(Debug)]
pub struct RelayHandle {
    stop: watch::Sender<bool>,
    quiet: Arc<Quiet>,
    task: JoinHandle<()>,
}

/// Whether a relay on a broker that holds messages until handled may still publish; its rounds run
/// under the lock, so [`RelayHandle::hold`] can wait for the one under way.
#[derive(Debug, Default)]
struct Quiet {
    held: std::sync::atomic::AtomicBool,
    rounds: tokio::sync::Mutex<()>,
}

impl Quiet {
    fn held(&self) -> bool {
        self.held.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl RelayHandle {
    /// Call before this process's consumers stop: a relay on a broker that [holds messages until
    /// handled](super::Broker::holds_until_handled) publishes nothing more (a message published to a
    /// consumer group with no member left reaches no one and counts as handled), and this returns once
    /// a round under way has ended. It still marks what the consumers finish. Other relays go on.
    pub async fn hold(&self) {
        self.quiet
            .held
            .store(true, std::sync::atomic::Ordering::SeqCst);
        drop(self.quiet.rounds.lock().await);
    }

    /// Publishes what is pending (on a broker that holds messages until handled: publishes nothing
    /// new, and waits up to 2 seconds for the handlers of what it published), then stops.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// The broker message of an outbox row: same identifier, topic and key.
pub(crate) fn outbox_message(record: &OutboxRecord) -> BrokerMessage {
    let mut message =
        BrokerMessage::new(record.message.topic.clone(), record.message.content.clone());
    message.identifier = record.message.identifier;
    message.key = Some(record.message.key.clone());
    message.payload.headers = record.message.headers.clone();
    message
}

impl OutboxRelay {
    /// A relay from `store` to `broker`, woken by `wake` (see [`crate::Repository::commits`]).
    pub fn new(store: SharedStore, broker: SharedBroker, wake: Arc<Notify>) -> Self {
        OutboxRelay {
            store,
            broker,
            wake,
            batch: 256,
            poll: Duration::from_millis(500),
            metrics: None,
        }
    }

    /// Rows read per round.
    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// Counts what it publishes in `metrics` (`minos_outbox_published_messages_total`).
    pub fn metrics(mut self, metrics: crate::telemetry::Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// How often to look for rows when no commit wakes the relay (other processes may write too).
    pub fn poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// Publishes every pending row in order; returns how many were sent. Stops at the first failure,
    /// leaving that row and the ones after it pending, so order holds and nothing is lost. It takes
    /// no lease: do not run it beside a relay [`spawn`](Self::spawn)ed on the same store (rows would go
    /// out twice; consumers skip the repeats through their inbox). It marks rows sent once published,
    /// even on a broker that [holds them until handled](super::Broker::holds_until_handled): only a
    /// spawned relay waits for their handlers.
    pub async fn relay_pending(&self) -> Result<usize> {
        self.relay_under(None, None).await
    }

    /// [`relay_pending`](Self::relay_pending) under `lease`: rows past its horizon go out as first
    /// deliveries, and each page published moves the horizon past it
    /// ([`RelayLease::horizon`]). With `feed`, the feed learns which rows the reads found.
    async fn relay_under(
        &self,
        mut lease: Option<&mut RelayLease>,
        feed: Option<&CommitFeed>,
    ) -> Result<usize> {
        let mut sent = 0;
        loop {
            self.broker.ready_for_more().await;
            let records = self.read(feed, 0..i64::MAX).await?;
            if records.is_empty() {
                return Ok(sent);
            }
            let full = records.len() == self.batch;
            sent += self.publish_and_mark(lease.as_deref_mut(), records).await?;
            // A short page was the whole backlog: rows committed since then woke the relay (their
            // commit's notification waits for it), so it reads again only after that.
            if !full {
                return Ok(sent);
            }
        }
    }

    /// [`relay_under`](Self::relay_under) the lease with the store's feed: the rows it holds, after
    /// the table's when the feed does not hold everything committed ([`Fed::must_read`]).
    async fn relay_fed(&self, lease: &mut RelayLease, fed: &mut Fed) -> Result<usize> {
        let mut sent = 0;
        // As in `relay_tracked`: what the feed releases before each read but the lease's first,
        // and a gap the feed finds sends the round to the table once more.
        if !fed.unread {
            sent += self.take_fed_and_mark(lease, &fed.feed).await?;
        }
        for _ in 0..2 {
            // The table's unsent rows from the first: a lost row is among them.
            if !fed.must_read(self.sweep_interval()).0 {
                break;
            }
            sent += self.relay_under(Some(&mut *lease), Some(&fed.feed)).await?;
            fed.unread = false;
            sent += self.take_fed_and_mark(lease, &fed.feed).await?;
        }
        Ok(sent)
    }

    /// Publishes and marks what the feed releases, for a sweep interval at most (as
    /// [`take_fed`](Self::take_fed)).
    async fn take_fed_and_mark(&self, lease: &mut RelayLease, feed: &CommitFeed) -> Result<usize> {
        let mut sent = 0;
        let started = Instant::now();
        loop {
            if started.elapsed() >= self.sweep_interval() {
                self.wake.notify_one();
                return Ok(sent);
            }
            self.broker.ready_for_more().await;
            let rows = feed.take(self.batch);
            if rows.is_empty() {
                return Ok(sent);
            }
            sent += self.publish_and_mark(Some(&mut *lease), rows).await?;
        }
    }

    /// Publishes `records` (in id order) and marks sent the ones before the first failure, so order
    /// holds: rows after it are published again (consumers drop the repeats through their inbox).
    /// How many were sent, or the failure.
    async fn publish_and_mark(
        &self,
        lease: Option<&mut RelayLease>,
        records: Vec<OutboxRecord>,
    ) -> Result<usize> {
        let messages = records.iter().map(outbox_message).collect();
        let fresh = fresh_from(lease, &records);
        let results = self.broker.publish_relayed(messages, fresh, None).await;
        let mut done = Vec::with_capacity(records.len());
        let mut failure = None;
        for (record, result) in records.iter().zip(results) {
            match result {
                Ok(()) => done.push(record.id),
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        if !done.is_empty() {
            self.store.mark_sent(&done).await?;
            if let Some(metrics) = &self.metrics {
                metrics.outbox_published(done.len());
            }
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(done.len()),
        }
    }

    /// One round on a broker that holds messages until handled: publishes again what was dropped
    /// unhandled (once its delay passed), sweeps for rows left behind when due, then publishes the rows
    /// past the last one read. Stops publishing as soon as the relay is held.
    async fn relay_tracked(
        &self,
        lease: &mut RelayLease,
        flight: &mut InFlight,
        fed: Option<&mut Fed>,
        quiet: &Quiet,
    ) -> Result<()> {
        let feed = fed.as_deref().map(|fed| &*fed.feed);
        flight.collect();
        let now = Instant::now();
        let due: Vec<i64> = flight
            .dropped
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| *id)
            .collect();
        if let (Some(&low), Some(&high)) = (due.first(), due.last()) {
            for id in &due {
                flight.dropped.remove(id);
            }
            // Rows in that range not in flight are due too (dropped, or committed late).
            self.publish_range(lease, flight, feed, quiet, low..high + 1)
                .await?;
        }
        if flight.sweep_due(self.sweep_interval()) {
            // Rows below every one in flight that are still unsent: committed after rows with greater
            // ids were read (concurrent transactions take ids in one order and commit in another).
            flight.swept = Instant::now();
            let below = flight.floor();
            self.publish_range(lease, flight, feed, quiet, 0..below)
                .await?;
        }
        let Some(fed) = fed else {
            return self
                .read_past_cursor(lease, flight, None, None, quiet)
                .await;
        };
        // With a feed, the table past the cursor is read when the feed does not hold everything
        // committed (the lease was just granted, rows came without it, it holds a gap, it
        // overflowed), and once a sweep interval for the rows of other processes. Rows the feed
        // handed over stay above the cursor until such a read passes them (in flight, they are
        // skipped), so it also finds rows committed late without the feed. What the feed releases
        // goes out before each read (a row it holds may be below the cursor, and the read could
        // find the next version of its root), except before the lease's first, which publishes the
        // rows committed before the feed started. A gap the feed finds sends this round to the
        // table once more.
        if !fed.unread && !self.take_fed(lease, flight, &fed.feed, quiet).await {
            return Ok(());
        }
        for _ in 0..2 {
            let (read, lost) = fed.must_read(self.sweep_interval());
            if !read {
                break;
            }
            self.read_past_cursor(lease, flight, Some(&fed.feed), lost, quiet)
                .await?;
            fed.unread = false;
            if !self.take_fed(lease, flight, &fed.feed, quiet).await {
                break;
            }
        }
        Ok(())
    }

    /// Publishes what the feed releases; `false` when the relay was held meanwhile. Past a sweep
    /// interval it leaves the rest to the next round (woken at once), so that a steady stream does
    /// not keep the round from its reads, sweeps and republishing.
    async fn take_fed(
        &self,
        lease: &mut RelayLease,
        flight: &mut InFlight,
        feed: &CommitFeed,
        quiet: &Quiet,
    ) -> bool {
        let started = Instant::now();
        loop {
            if quiet.held() {
                return false;
            }
            if started.elapsed() >= self.sweep_interval() {
                self.wake.notify_one();
                return true;
            }
            self.mark_if_due(flight).await;
            self.broker.ready_for_more().await;
            let rows = feed.take(self.batch);
            if rows.is_empty() {
                return true;
            }
            self.publish_tracked(lease, flight, quiet, rows).await;
        }
    }

    /// Publishes the unsent rows past the cursor (from `lost` when it is lower: a row the feed may
    /// have lost), page by page, moving the cursor.
    async fn read_past_cursor(
        &self,
        lease: &mut RelayLease,
        flight: &mut InFlight,
        feed: Option<&CommitFeed>,
        lost: Option<i64>,
        quiet: &Quiet,
    ) -> Result<()> {
        let mut from = lost.map_or(flight.cursor + 1, |lost| lost.min(flight.cursor + 1));
        loop {
            if quiet.held() {
                return Ok(());
            }
            // A backlog keeps this loop going: take in receipts and mark as it goes, so what is in
            // flight stays bounded by what the broker holds.
            self.mark_if_due(flight).await;
            self.broker.ready_for_more().await;
            let records = self.read(feed, from..i64::MAX).await?;
            let Some(last) = records.last().map(|record| record.id) else {
                break;
            };
            let full = records.len() == self.batch;
            flight.cursor = flight.cursor.max(last);
            from = last + 1;
            self.publish_tracked(lease, flight, quiet, records).await;
            if !full {
                break;
            }
        }
        Ok(())
    }

    /// The unsent rows with ids in `ids`, a page of them, read from the table; the feed learns which
    /// rows it found, so that it does not hand them over again.
    async fn read(
        &self,
        feed: Option<&CommitFeed>,
        ids: std::ops::Range<i64>,
    ) -> Result<Vec<OutboxRecord>> {
        let records = self.store.pending_in(ids, self.batch).await?;
        if let Some(feed) = feed {
            let ids: Vec<i64> = records.iter().map(|record| record.id).collect();
            feed.note_read(&ids);
        }
        Ok(records)
    }

    /// Publishes the unsent rows with ids in `ids` that are not in flight, page by page.
    async fn publish_range(
        &self,
        lease: &mut RelayLease,
        flight: &mut InFlight,
        feed: Option<&CommitFeed>,
        quiet: &Quiet,
        ids: std::ops::Range<i64>,
    ) -> Result<()> {
        let mut from = ids.start;
        while from < ids.end && !quiet.held() {
            self.mark_if_due(flight).await;
            let records = self.read(feed, from..ids.end).await?;
            let Some(last) = records.last().map(|record| record.id) else {
                break;
            };
            let full = records.len() == self.batch;
            self.publish_tracked(lease, flight, quiet, records).await;
            if !full {
                break;
            }
            from = last + 1;
        }
        Ok(())
    }

    /// Publishes `records` (those not in flight already) with a tracker each.
    async fn publish_tracked(
        &self,
        lease: &mut RelayLease,
        flight: &mut InFlight,
        quiet: &Quiet,
        mut records: Vec<OutboxRecord>,
    ) {
        records.retain(|record| !flight.taken(record.id));
        if records.is_empty() || quiet.held() {
            return;
        }
        let messages = records.iter().map(outbox_message).collect();
        let fresh = fresh_from(Some(lease), &records);
        let trackers = records
            .iter()
            .map(|record| flight.receipts.track(record.id))
            .collect();
        flight.ids.extend(records.iter().map(|record| record.id));
        // The in-process broker takes every message; were one refused, its tracker would come back
        // as handled with nothing delivered, so it is published again instead.
        for (record, result) in records.iter().zip(
            self.broker
                .publish_relayed(messages, fresh, Some(trackers))
                .await,
        ) {
            if let Err(error) = result {
                tracing::warn!(%error, id = record.id, "outbox relay: publishing failed; the row stays pending");
                flight.refused.insert(record.id);
            }
        }
        if let Some(metrics) = &self.metrics {
            metrics.outbox_published(records.len());
        }
    }

    /// Takes in the receipts that arrived and marks their rows once due: after their delay (one
    /// statement for all that gathered), or at once when a batch's worth is waiting (unless a failed
    /// mark is waiting to be tried again).
    async fn mark_if_due(&self, flight: &mut InFlight) {
        flight.collect();
        let now = Instant::now();
        let retrying = flight.first_handled.is_some_and(|first| first > now);
        if (flight.handled.len() >= self.batch && !retrying)
            || flight.mark_due().is_some_and(|due| due <= now)
        {
            self.mark_handled(flight).await;
        }
    }

    /// Marks the rows whose messages were handled (idempotent: with or without the lease). A mark
    /// that fails is tried again a poll interval (and the mark's delay) later.
    async fn mark_handled(&self, flight: &mut InFlight) {
        flight.collect();
        if flight.handled.is_empty() {
            return;
        }
        let ids: Vec<i64> = flight.handled.iter().copied().collect();
        match self.store.mark_sent(&ids).await {
            Ok(()) => {
                flight.handled.clear();
                flight.first_handled = None;
            }
            Err(error) => {
                tracing::warn!(%error, "outbox relay: could not mark handled rows sent; trying again");
                flight.first_handled = Some(Instant::now() + self.poll);
            }
        }
    }

    /// How often a relay on a broker that holds messages until handled looks for rows left behind.
    fn sweep_interval(&self) -> Duration {
        self.poll.min(SWEEP_INTERVAL)
    }

    /// Runs the relay in the background until stopped. Only the process holding the store's relay lease
    /// publishes; the others wait and take over when it goes away.
    ///
    /// On a broker that [holds messages until handled](super::Broker::holds_until_handled) a row is
    /// marked sent once every delivery of its message was acknowledged; a delivery dropped unhandled
    /// (its consumer failed or stopped) has the row published again, and rows still in flight when
    /// the relay stops (or the process dies) are published again on the next start. Stopping then
    /// publishes nothing new: the consumers in this process are stopping too, so what is pending
    /// waits in the outbox for the next start.
    pub fn spawn(self) -> RelayHandle {
        let (stop, mut stopped) = watch::channel(false);
        let quiet = Arc::new(Quiet::default());
        let held = Arc::clone(&quiet);
        let task = tokio::spawn(async move {
            let quiet = held;
            let mut backoff = Duration::from_millis(100);
            let mut lease: Option<RelayLease> = None;
            let mut flight = self
                .broker
                .holds_until_handled()
                .then(|| InFlight::new(self.poll));
            let mut fed = self.store.feed().map(Fed::new);
            loop {
                // A lease whose lock died with its connection may be another relay's by now.
                if lease.as_ref().is_some_and(|held| !held.is_held()) {
                    tracing::warn!("outbox relay: lost the relay lease; asking again");
                    lease = None;
                }
                if lease.is_none() {
                    if let Some(fed) = &fed {
                        fed.feed.disable();
                    }
                    match self.store.relay_lease().await {
                        Ok(Some(granted)) => {
                            // Read everything again under the new lease (what is in flight stays),
                            // and take what is committed from now on from the feed.
                            if let Some(flight) = flight.as_mut() {
                                flight.cursor = 0;
                            }
                            if let Some(fed) = fed.as_mut() {
                                fed.unread = true;
                                fed.feed.enable(Arc::clone(&self.wake), granted.horizon());
                            }
                            lease = Some(granted);
                        }
                        Ok(None) => tracing::debug!("another process relays this outbox; waiting"),
                        Err(error) => {
                            tracing::warn!(%error, "outbox relay: could not ask for the relay lease")
                        }
                    }
                }
                if let Some(flight) = flight.as_mut() {
                    self.mark_if_due(flight).await;
                }
                if let Some(held) = lease.as_mut() {
                    let round = match flight.as_mut() {
                        Some(flight) => {
                            let _round = quiet.rounds.lock().await;
                            self.relay_tracked(held, flight, fed.as_mut(), &quiet).await
                        }
                        None => match fed.as_mut() {
                            Some(fed) => self.relay_fed(held, fed).await.map(|_| ()),
                            None => self.relay_under(Some(held), None).await.map(|_| ()),
                        },
                    };
                    match round {
                        Ok(()) => backoff = Duration::from_millis(100),
                        Err(error) => {
                            tracing::warn!(%error, retry_in = ?backoff, "outbox relay: publishing failed; rows stay pending");
                            // A lost database connection may have lost the lease with it: ask again.
                            lease = None;
                            tokio::select! {
                                _ = tokio::time::sleep(backoff) => {}
                                _ = stopped.changed() => {}
                            }
                            backoff = (backoff * 2).min(Duration::from_secs(10));
                        }
                    }
                }
                if *stopped.borrow() {
                    break;
                }
                // Receipts only gather until their marks (or a publish again) are due: one statement
                // marks many.
                let poll_at = Instant::now() + self.poll;
                loop {
                    let publishing = lease.is_some() && !quiet.held();
                    let until = flight
                        .as_ref()
                        .and_then(|flight| flight.next_due(publishing))
                        .map_or(poll_at, |due| due.min(poll_at));
                    tokio::select! {
                        _ = self.wake.notified() => break,
                        _ = tokio::time::sleep_until(until.into()) => break,
                        _ = stopped.changed() => break,
                        receipt = next_receipt(flight.as_mut()) => match (receipt, flight.as_mut()) {
                            (Some(receipt), Some(flight)) => {
                                flight.note(receipt);
                                // Many handled: mark now. Fewer wait for their mark's delay, so
                                // that under load one statement marks what a few rounds published.
                                if flight.handled.len() >= self.batch {
                                    break;
                                }
                            }
                            _ => break,
                        },
                    }
                }
            }
            // Stopping: the rest waits in the table (or is drained from it below).
            if let Some(fed) = &fed {
                fed.feed.disable();
            }
            match flight.as_mut() {
                Some(flight) => {
                    // Give the handlers still at work a moment, then mark what they finished.
                    let deadline = Instant::now() + STOP_WAIT;
                    while !flight.ids.is_empty() {
                        match tokio::time::timeout_at(deadline.into(), flight.arrived.recv()).await
                        {
                            Ok(Some(receipt)) => flight.note(receipt),
                            _ => break,
                        }
                    }
                    self.mark_handled(flight).await;
                }
                None => {
                    if let Some(held) = lease.as_mut() {
                        if let Err(error) = self.relay_under(Some(held), None).await {
                            tracing::warn!(%error, "outbox relay: rows left pending at shutdown; they are sent on the next start");
                        }
                    }
                }
            }
        });
        RelayHandle { stop, quiet, task }
    }
}

/// Rows come in id order: the index of the first one past the lease's horizon (all of them without a
/// horizon), and the horizon moved past the page.
fn fresh_from(lease: Option<&mut RelayLease>, records: &[OutboxRecord]) -> usize {
    let Some(lease) = lease else {
        return records.len();
    };
    let fresh = match lease.horizon() {
        Some(after) => records.partition_point(|record| record.id <= after),
        None => records.len(),
    };
    if let Some(last) = records.last() {
        lease.published_up_to(last.id);
    }
    fresh
}

/// How often, at most, a relay whose broker holds messages until handled looks for rows left behind.
const SWEEP_INTERVAL: Duration = Duration::from_millis(50);

/// How long receipts gather before their rows are marked.
const MARK_DELAY: Duration = Duration::from_millis(20);

/// How long a stopping relay waits for the handlers of what it published.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// The next receipt, or never without a tracked relay.
async fn next_receipt(flight: Option<&mut InFlight>) -> Option<Receipt> {
    match flight {
        Some(flight) => flight.arrived.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
