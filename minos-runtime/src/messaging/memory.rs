//! The in-process broker: topics, consumer groups and fan-out inside one process.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::{mpsc, Notify};

use super::{Broker, BrokerMessage, Delivery, Hold, Strategy, Subscription, Tracked};
use crate::error::Result;

/// Delivers messages between the services of one process. Messages to a topic nobody subscribed to are
/// dropped, as a broker with no retention would. It remembers the consumer groups (services)
/// subscribed in this process: a message the outbox relay publishes while a group has no member left
/// counts as not handled, so its row stays in the outbox and goes out again (see
/// [`Broker::holds_until_handled`]); dead letters (`*.dead-letter` topics) are also kept,
/// the last [`MemoryBroker::DEAD_LETTERS_KEPT`] of each topic, so they can be listed and re-driven.
///
/// It counts the messages it delivered that are not handled yet; past [`MemoryBroker::HELD_MAX`],
/// the outbox relay waits ([`Broker::ready_for_more`]), so a burst of writes faster than their
/// handlers waits in the outbox on disk instead of growing the process's memory.
#[derive(Debug, Default)]
pub struct MemoryBroker {
    topics: Mutex<HashMap<String, Vec<Group>>>,
    held: Arc<Held>,
    dead_letters: Mutex<HashMap<String, VecDeque<BrokerMessage>>>,
}

/// Deliveries not acknowledged or dropped yet, and a wake-up when they fall below the limit.
#[derive(Debug, Default)]
struct Held {
    count: AtomicUsize,
    below: Notify,
}

/// One delivery held in memory, with its relayed message's tracker.
struct Holding {
    held: Arc<Held>,
    tracked: Option<Tracked>,
    acknowledged: bool,
}

impl Holding {
    fn new(held: &Arc<Held>, tracked: Option<Tracked>) -> Self {
        held.count.fetch_add(1, Ordering::Relaxed);
        Holding {
            held: Arc::clone(held),
            tracked,
            acknowledged: false,
        }
    }
}

impl Hold for Holding {
    fn acknowledged(&mut self) {
        self.acknowledged = true;
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        if !self.acknowledged {
            if let Some(tracked) = &self.tracked {
                tracked.dropped_unhandled();
            }
        }
        // The relay waits only while the count is at or past the limit: wake it when it falls below.
        if self.held.count.fetch_sub(1, Ordering::Relaxed) == MemoryBroker::HELD_MAX {
            self.held.below.notify_waiters();
        }
    }
}

#[derive(Debug)]
struct Group {
    name: String,
    members: Vec<mpsc::UnboundedSender<Delivery>>,
    next: usize,
    /// A consumer group ([`Broker::subscribe`]), remembered once its members are gone: a relayed
    /// message for it then counts as not handled and stays in the outbox. A listener's own group
    /// ([`Broker::listen`]) is forgotten.
    durable: bool,
}

impl MemoryBroker {
    /// Unhandled deliveries past which the outbox relay waits: two of its default pages. More buys no
    /// throughput (the handlers set the pace) and raises the heap's peak, whose fragments stay resident
    /// after a burst (4,096 held about 1 MB more after one, on the quickstart).
    pub const HELD_MAX: usize = 512;

    /// Dead letters kept per dead-letter topic (the oldest go first).
    pub const DEAD_LETTERS_KEPT: usize = 1000;

    /// A broker with no subscriptions.
    pub fn new() -> Self {
        Self::default()
    }

    /// Deliveries not handled yet.
    pub fn held(&self) -> usize {
        self.held.count.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Vec<Group>>> {
        self.topics
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl MemoryBroker {
    /// Delivers `message` to one member of each group subscribed to its topic (each member for
    /// multicast); `first` marks the deliveries as the message's first ones. Each delivery keeps a
    /// clone of `tracked` until it is acknowledged or dropped (none: the tracker goes at once).
    fn deliver(&self, message: BrokerMessage, first: bool, tracked: Option<Tracked>) {
        if message.topic.ends_with(super::topics::DEAD_LETTER_SUFFIX) {
            let mut kept = self
                .dead_letters
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let topic = kept.entry(message.topic.clone()).or_default();
            if topic.len() == Self::DEAD_LETTERS_KEPT {
                topic.pop_front();
            }
            topic.push_back(message.clone());
        }
        let mut topics = self.lock();
        let Some(groups) = topics.get_mut(&message.topic) else {
            tracing::debug!(topic = %message.topic, "no subscriber: message dropped");
            return;
        };
        // Every member that gets the message: a copy for each but the last, which takes it.
        let mut targets = Vec::new();
        for group in groups.iter_mut() {
            group.members.retain(|m| !m.is_closed());
            if group.members.is_empty() && group.durable {
                // A service whose consumers stopped has not handled it.
                if let Some(tracked) = &tracked {
                    tracked.dropped_unhandled();
                }
            }
            match message.strategy {
                Strategy::Multicast => targets.extend(group.members.iter()),
                Strategy::Unicast if !group.members.is_empty() => {
                    // Same key, same member: one root's messages keep their order within the group.
                    let index = match &message.key {
                        Some(key) => crate::hash::stable_hash(key) as usize % group.members.len(),
                        None => {
                            group.next = group.next.wrapping_add(1);
                            group.next % group.members.len()
                        }
                    };
                    targets.push(&group.members[index]);
                }
                Strategy::Unicast => {}
            }
        }
        // A multicast message reaches several members of one service: none of them is sure to be first.
        let first = first && message.strategy == Strategy::Unicast;
        let delivery = |message, tracked| {
            Delivery::new(message, None)
                .holding(Holding::new(&self.held, tracked))
                .first(first)
        };
        if let Some((last, rest)) = targets.split_last() {
            for member in rest {
                let _ = member.send(delivery(message.clone(), tracked.clone()));
            }
            let _ = last.send(delivery(message, tracked));
        }
        groups.retain(|g| g.durable || !g.members.is_empty());
    }

    fn join(&self, group: &str, topics: &[String], durable: bool) -> Subscription {
        let (sender, receiver) = mpsc::unbounded_channel();
        let mut all = self.lock();
        for topic in topics {
            let groups = all.entry(topic.clone()).or_default();
            match groups.iter_mut().find(|g| g.name == group) {
                Some(existing) => existing.members.push(sender.clone()),
                None => groups.push(Group {
                    name: group.to_owned(),
                    members: vec![sender.clone()],
                    next: 0,
                    durable,
                }),
            }
        }
        Subscription::new(receiver)
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, message: BrokerMessage) -> Result<()> {
        self.deliver(message, false, None);
        Ok(())
    }

    /// Each message reaches each group once, so the relay's fresh messages are first deliveries.
    async fn publish_relayed(
        &self,
        messages: Vec<BrokerMessage>,
        fresh: usize,
        tracked: Option<Vec<Tracked>>,
    ) -> Vec<Result<()>> {
        let mut tracked = tracked.map(Vec::into_iter);
        messages
            .into_iter()
            .enumerate()
            .map(|(i, message)| {
                let tracker = tracked.as_mut().and_then(Iterator::next);
                self.deliver(message, i >= fresh, tracker);
                Ok(())
            })
            .collect()
    }

    /// Its messages live in this process's memory until handled.
    fn holds_until_handled(&self) -> bool {
        true
    }

    /// Waits until fewer than [`HELD_MAX`](Self::HELD_MAX) deliveries are unhandled, or a second
    /// passed: a subscription nobody reads slows the relay down but never stops it.
    async fn ready_for_more(&self) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
        loop {
            let below = self.held.below.notified();
            tokio::pin!(below);
            below.as_mut().enable();
            if self.held() < Self::HELD_MAX {
                return;
            }
            if tokio::time::timeout_at(deadline, below).await.is_err() {
                return;
            }
        }
    }

    async fn history(&self, topic: &str) -> Result<Option<Vec<BrokerMessage>>> {
        if !topic.ends_with(super::topics::DEAD_LETTER_SUFFIX) {
            return Ok(None);
        }
        let kept = self
            .dead_letters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(Some(
            kept.get(topic)
                .map(|messages| messages.iter().cloned().collect())
                .unwrap_or_default(),
        ))
    }

    async fn subscribe(&self, group: &str, topics: &[String]) -> Result<Subscription> {
        Ok(self.join(group, topics, true))
    }

    async fn listen(&self, topic: &str) -> Result<Subscription> {
        let group = format!("{topic}.{}", uuid::Uuid::new_v4().simple());
        Ok(self.join(&group, &[topic.to_owned()], false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn the_relay_waits_while_too_many_deliveries_are_unhandled() {
        let broker = MemoryBroker::new();
        let topics = ["FooCreated".to_owned()];
        let mut sub = broker.subscribe("g", &topics).await.unwrap();
        for i in 0..MemoryBroker::HELD_MAX {
            broker
                .publish(BrokerMessage::new("FooCreated", json!(i)))
                .await
                .unwrap();
        }
        assert_eq!(broker.held(), MemoryBroker::HELD_MAX);
        // Full: it waits…
        let waited = tokio::time::timeout(
            std::time::Duration::from_millis(100),
            broker.ready_for_more(),
        )
        .await;
        assert!(
            waited.is_err(),
            "the relay must wait while the deliveries pile up"
        );
        // …until handled deliveries make room: one is enough.
        let handled = sub.next().await.unwrap();
        handled.ack();
        assert_eq!(broker.held(), MemoryBroker::HELD_MAX - 1);
        tokio::time::timeout(
            std::time::Duration::from_millis(100),
            broker.ready_for_more(),
        )
        .await
        .expect("room again");
        // A delivery dropped unhandled frees its place too.
        drop(sub.next().await.unwrap());
        assert_eq!(broker.held(), MemoryBroker::HELD_MAX - 2);
        // A subscription nobody reads slows the relay down but never stops it.
        for i in 0..10 {
            broker
                .publish(BrokerMessage::new("FooCreated", json!(i)))
                .await
                .unwrap();
        }
        let started = std::time::Instant::now();
        broker.ready_for_more().await;
        assert!(started.elapsed() >= std::time::Duration::from_millis(900));
        drop(sub);
        assert_eq!(broker.held(), 0, "a closed subscription holds nothing");
    }

    #[tokio::test]
    async fn each_group_gets_each_message_once() {
        let broker = MemoryBroker::new();
        let topics = ["FooCreated".to_owned()];
        let mut a1 = broker.subscribe("a", &topics).await.unwrap();
        let mut a2 = broker.subscribe("a", &topics).await.unwrap();
        let mut b = broker.subscribe("b", &topics).await.unwrap();
        for i in 0..4 {
            broker
                .publish(BrokerMessage::new("FooCreated", json!(i)))
                .await
                .unwrap();
        }
        let mut seen_a = Vec::new();
        for sub in [&mut a1, &mut a2] {
            while let Ok(Some(d)) =
                tokio::time::timeout(std::time::Duration::from_millis(20), sub.next()).await
            {
                seen_a.push(d.message.payload.content.as_i64().unwrap());
            }
        }
        seen_a.sort();
        assert_eq!(seen_a, [0, 1, 2, 3]);
        for i in 0..4 {
            assert_eq!(b.next().await.unwrap().message.payload.content, json!(i));
        }
    }

    #[tokio::test]
    async fn one_key_goes_to_one_member_in_order() {
        let broker = MemoryBroker::new();
        let topics = ["T".to_owned()];
        let mut subs = [
            broker.subscribe("g", &topics).await.unwrap(),
            broker.subscribe("g", &topics).await.unwrap(),
        ];
        for i in 0..10 {
            let mut m = BrokerMessage::new("T", json!(i));
            m.key = Some("root-1".into());
            broker.publish(m).await.unwrap();
        }
        let mut got = Vec::new();
        for sub in subs.iter_mut() {
            while let Ok(Some(d)) =
                tokio::time::timeout(std::time::Duration::from_millis(20), sub.next()).await
            {
                got.push(d.message.payload.content.as_i64().unwrap());
            }
        }
        assert_eq!(got, (0..10).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_relayed_message_for_a_service_whose_consumers_stopped_is_not_handled() {
        let broker = MemoryBroker::new();
        let (receipts, mut arrived) = crate::messaging::Receipts::channel();
        let topics = ["FooCreated".to_owned()];
        let mut a = broker.subscribe("a", &topics).await.unwrap();
        let b = broker.subscribe("b", &topics).await.unwrap();
        let listener = broker.listen("FooCreated").await.unwrap();
        drop((b, listener));
        let message = BrokerMessage::new("FooCreated", json!(1));
        broker
            .publish_relayed(vec![message], 0, Some(vec![receipts.track(1)]))
            .await;
        // `a` handles it; `b` is gone but remembered, the listener's own group forgotten.
        a.next().await.unwrap().ack();
        let receipt = arrived.recv().await.unwrap();
        assert_eq!((receipt.id, receipt.handled), (1, false));
        // Once `b` is back, a message reaching both is handled.
        let mut b = broker.subscribe("b", &topics).await.unwrap();
        let message = BrokerMessage::new("FooCreated", json!(2));
        broker
            .publish_relayed(vec![message], 0, Some(vec![receipts.track(2)]))
            .await;
        a.next().await.unwrap().ack();
        b.next().await.unwrap().ack();
        let receipt = arrived.recv().await.unwrap();
        assert_eq!((receipt.id, receipt.handled), (2, true));
    }
}
