//! The outbox relay: publishes messages committed with their events, in commit order, and marks them
//! sent only once the broker has them. On start it first drains what an earlier run left behind.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::{BrokerMessage, SharedBroker};
use crate::error::Result;
use crate::store::{OutboxRecord, RelayLease, SharedStore};

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
    task: JoinHandle<()>,
}

impl RelayHandle {
    /// Publishes what is pending, then stops.
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
    /// out twice; consumers skip the repeats through their inbox).
    pub async fn relay_pending(&self) -> Result<usize> {
        self.relay_under(None).await
    }

    /// [`relay_pending`](Self::relay_pending) under `lease`: rows past its horizon go out as first
    /// deliveries, and each page published moves the horizon past it
    /// ([`RelayLease::horizon`]).
    async fn relay_under(&self, mut lease: Option<&mut RelayLease>) -> Result<usize> {
        let mut sent = 0;
        loop {
            self.broker.ready_for_more().await;
            let records = self.store.pending(self.batch).await?;
            if records.is_empty() {
                return Ok(sent);
            }
            let messages = records.iter().map(outbox_message).collect();
            // Rows come in id order: the fresh ones are a tail.
            let fresh = match lease.as_ref().and_then(|lease| lease.horizon()) {
                Some(after) => records.partition_point(|record| record.id <= after),
                None => records.len(),
            };
            if let (Some(lease), Some(last)) = (lease.as_mut(), records.last()) {
                lease.published_up_to(last.id);
            }
            let results = self.broker.publish_relayed(messages, fresh).await;
            // Only the rows before the first failure count as sent, so order holds; rows after it are
            // published again (consumers drop the repeats through their inbox).
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
                sent += done.len();
                if let Some(metrics) = &self.metrics {
                    metrics.outbox_published(done.len());
                }
            }
            if let Some(error) = failure {
                return Err(error);
            }
            // A short page was the whole backlog: rows committed since then woke the relay (their
            // commit's notification waits for it), so it reads again only after that.
            if records.len() < self.batch {
                return Ok(sent);
            }
        }
    }

    /// Runs the relay in the background until stopped. Only the process holding the store's relay lease
    /// publishes; the others wait and take over when it goes away.
    pub fn spawn(self) -> RelayHandle {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            let mut lease: Option<RelayLease> = None;
            loop {
                // A lease whose lock died with its connection may be another relay's by now.
                if lease.as_ref().is_some_and(|held| !held.is_held()) {
                    tracing::warn!("outbox relay: lost the relay lease; asking again");
                    lease = None;
                }
                if lease.is_none() {
                    match self.store.relay_lease().await {
                        Ok(Some(granted)) => lease = Some(granted),
                        Ok(None) => tracing::debug!("another process relays this outbox; waiting"),
                        Err(error) => {
                            tracing::warn!(%error, "outbox relay: could not ask for the relay lease")
                        }
                    }
                }
                if let Some(held) = lease.as_mut() {
                    match self.relay_under(Some(held)).await {
                        Ok(_) => backoff = Duration::from_millis(100),
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
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(self.poll) => {}
                    _ = stopped.changed() => {}
                }
            }
            if let Some(held) = lease.as_mut() {
                if let Err(error) = self.relay_under(Some(held)).await {
                    tracing::warn!(%error, "outbox relay: rows left pending at shutdown; they are sent on the next start");
                }
            }
        });
        RelayHandle { stop, task }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Action, DomainMessage, Event};
    use crate::messaging::{Broker, MemoryBroker};
    use crate::store::{MemoryStore, Store};
    use uuid::Uuid;

    async fn write(store: &dyn Store, n: u64) -> Uuid {
        let uuid = Uuid::now_v7();
        let event = Event {
            uuid,
            name: "Foo".into(),
            version: 1,
            action: Action::Create,
            created_at: chrono::Utc::now(),
            fields_diff: Vec::new(),
        };
        let message = DomainMessage {
            identifier: Uuid::now_v7(),
            topic: "FooCreated".into(),
            key: uuid.to_string(),
            content: serde_json::json!(n),
            headers: Default::default(),
        };
        store
            .commit_unit(&[(event, vec![message])], None)
            .await
            .unwrap();
        uuid
    }

    /// The next delivery's content and whether it is marked as a first delivery.
    async fn next(received: &mut crate::messaging::Subscription) -> (serde_json::Value, bool) {
        let (message, first, acknowledge) =
            tokio::time::timeout(Duration::from_secs(5), received.next())
                .await
                .expect("published")
                .expect("open")
                .into_parts();
        acknowledge.ack();
        (message.payload.content, first)
    }

    #[tokio::test]
    async fn rows_written_after_the_lease_go_out_as_first_deliveries() {
        let store: SharedStore = Arc::new(MemoryStore::new());
        let broker = Arc::new(MemoryBroker::new());
        let mut received = broker
            .subscribe("g", &["FooCreated".to_owned()])
            .await
            .unwrap();
        // Written before the relay holds its lease: an earlier relay may have published it.
        write(store.as_ref(), 0).await;
        let wake = Arc::new(Notify::new());
        let relay = OutboxRelay::new(
            Arc::clone(&store),
            Arc::clone(&broker) as SharedBroker,
            Arc::clone(&wake),
        )
        .poll_interval(Duration::from_millis(20))
        .spawn();
        assert_eq!(next(&mut received).await, (serde_json::json!(0), false));
        for n in 1..=3 {
            write(store.as_ref(), n).await;
            wake.notify_one();
            assert_eq!(next(&mut received).await, (serde_json::json!(n), true));
        }
        // One relay per store: a second one waits for the lease.
        assert!(store.relay_lease().await.unwrap().is_none());
        relay.stop().await;
        let lease = store.relay_lease().await.unwrap().expect("released");
        assert_eq!(lease.horizon(), Some(4), "the last row written");
        drop(lease);
        // A message published by anything but the relay may be a repeat.
        broker
            .publish(BrokerMessage::new("FooCreated", serde_json::json!(4)))
            .await
            .unwrap();
        assert_eq!(next(&mut received).await, (serde_json::json!(4), false));
        // A relay without a lease's horizon marks nothing as first.
        write(store.as_ref(), 5).await;
        OutboxRelay::new(Arc::clone(&store), broker.clone(), wake)
            .relay_pending()
            .await
            .unwrap();
        assert_eq!(next(&mut received).await, (serde_json::json!(5), false));
    }
}
