//! Messaging: the broker envelope, the broker port with its in-process adapter, the outbox relay and
//! the request/reply client.

mod client;
pub mod dead_letters;
pub mod headers;
#[cfg(feature = "kafka")]
pub mod kafka;
mod memory;
mod receipts;
mod relay;
pub mod topics;

pub use client::{BrokerClient, Reply};
pub use dead_letters::DeadLetters;
#[cfg(feature = "kafka")]
pub use kafka::{KafkaBroker, KafkaOptions};
pub use memory::MemoryBroker;
pub use receipts::{Receipt, Receipts, Tracked};
pub use relay::{OutboxRelay, RelayHandle};

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::error::{Error, Result};

/// Version of the JSON envelope below; readers reject versions they do not know.
pub const WIRE_VERSION: u32 = 1;

/// Whether a message goes to one consumer of each group or to every instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// One consumer of each consumer group (service) gets it.
    #[default]
    Unicast,
    /// Every subscribed instance gets it.
    Multicast,
}

/// The content, status and headers of a message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    /// The JSON content.
    pub content: Value,
    /// 200 success, 400 error of the request, 500 failure of the service (replies); 200 otherwise.
    #[serde(default = "ok_status")]
    pub status: u16,
    /// Free headers: `user`, `saga`, `transactions`, …
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn ok_status() -> u16 {
    200
}

fn wire_version() -> u32 {
    WIRE_VERSION
}

/// A message on the broker. Its JSON form is the wire format (see the README).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BrokerMessage {
    /// Envelope version ([`WIRE_VERSION`]).
    #[serde(default = "wire_version")]
    pub version: u32,
    /// Where it goes.
    pub topic: String,
    /// Unique id; a reply carries the id of its request.
    pub identifier: Uuid,
    /// Where the reply goes, if one is wanted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_topic: Option<String>,
    /// Delivery strategy.
    #[serde(default)]
    pub strategy: Strategy,
    /// Content, status and headers.
    pub payload: Payload,
    /// Partitioning key (the root's uuid for domain events); travels as the broker's message key.
    #[serde(skip)]
    pub key: Option<String>,
}

impl BrokerMessage {
    /// A message with status 200, no headers and a new identifier.
    pub fn new(topic: impl Into<String>, content: Value) -> Self {
        BrokerMessage {
            version: WIRE_VERSION,
            topic: topic.into(),
            identifier: Uuid::now_v7(),
            reply_topic: None,
            strategy: Strategy::Unicast,
            payload: Payload {
                content,
                status: 200,
                headers: BTreeMap::new(),
            },
            key: None,
        }
    }

    /// Decodes the wire format, refusing unknown envelope versions.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let message: BrokerMessage =
            serde_json::from_slice(bytes).map_err(|e| format!("undecodable message: {e}"))?;
        if message.version != WIRE_VERSION {
            return Err(format!(
                "unsupported envelope version {} (this service reads version {WIRE_VERSION})",
                message.version
            ));
        }
        Ok(message)
    }

    /// The request's deadline (`deadline` header), if it has one that parses.
    pub fn deadline(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let millis = self
            .payload
            .headers
            .get(headers::DEADLINE)?
            .parse::<i64>()
            .ok()?;
        chrono::DateTime::from_timestamp_millis(millis)
    }

    /// Sets the deadline header to `at` (kept when one is already set).
    pub fn set_deadline(&mut self, at: chrono::DateTime<chrono::Utc>) {
        self.payload
            .headers
            .entry(headers::DEADLINE.to_owned())
            .or_insert_with(|| at.timestamp_millis().to_string());
    }

    /// Encodes the wire format.
    pub fn to_json(&self) -> Vec<u8> {
        // A message holds only JSON values and strings: serializing it cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A received message; acknowledging it tells the broker it was handled.
pub struct Delivery {
    /// The message.
    pub message: BrokerMessage,
    ack: Option<Box<dyn FnOnce() + Send>>,
    /// Held until the delivery is acknowledged or dropped (the in-process broker counts with it the
    /// messages it holds in memory, and learns whether each was handled).
    held: Option<Box<dyn Hold>>,
    /// Whether this is provably the message's first delivery to this consumer (see
    /// [`Broker::publish_relayed`]): no earlier delivery can have been handled, so the consumer need not
    /// look its inbox up before handling it (the commit still checks it).
    first: bool,
}

/// What acknowledges a delivery whose message was taken out ([`Delivery::into_parts`]); dropping it
/// unacknowledged has the broker deliver the message again where it can.
pub(crate) struct Acknowledge {
    ack: Option<Box<dyn FnOnce() + Send>>,
    held: Option<Box<dyn Hold>>,
}

impl Acknowledge {
    /// Marks the message handled.
    pub(crate) fn ack(mut self) {
        acknowledge(&mut self.ack, &mut self.held);
    }
}

/// What a delivery holds until it is acknowledged or dropped.
pub(crate) trait Hold: Send + Sync {
    /// The delivery was acknowledged (dropping the hold without this call means it was not).
    fn acknowledged(&mut self);
}

fn acknowledge(ack: &mut Option<Box<dyn FnOnce() + Send>>, held: &mut Option<Box<dyn Hold>>) {
    if let Some(ack) = ack.take() {
        ack();
    }
    if let Some(held) = held.as_mut() {
        held.acknowledged();
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("message", &self.message)
            .finish()
    }
}

impl Delivery {
    /// A delivery with an acknowledgement callback.
    pub fn new(message: BrokerMessage, ack: Option<Box<dyn FnOnce() + Send>>) -> Self {
        Delivery {
            message,
            ack,
            held: None,
            first: false,
        }
    }

    /// This delivery, marked as the message's first to its consumer.
    pub(crate) fn first(mut self, first: bool) -> Self {
        self.first = first;
        self
    }

    /// The message, whether this is provably its first delivery, and what acknowledges it: the
    /// message moves out without a copy.
    pub(crate) fn into_parts(self) -> (BrokerMessage, bool, Acknowledge) {
        (
            self.message,
            self.first,
            Acknowledge {
                ack: self.ack,
                held: self.held,
            },
        )
    }

    /// This delivery, holding `hold` until it is acknowledged or dropped.
    pub(crate) fn holding(mut self, hold: impl Hold + 'static) -> Self {
        self.held = Some(Box::new(hold));
        self
    }

    /// Marks the message handled.
    pub fn ack(mut self) {
        acknowledge(&mut self.ack, &mut self.held);
    }
}

/// Messages of one subscription, in arrival order.
pub struct Subscription {
    receiver: mpsc::UnboundedReceiver<Delivery>,
}

impl Subscription {
    /// A subscription reading from `receiver`.
    pub fn new(receiver: mpsc::UnboundedReceiver<Delivery>) -> Self {
        Subscription { receiver }
    }

    /// The next delivery; `None` once the broker closed the subscription.
    pub async fn next(&mut self) -> Option<Delivery> {
        self.receiver.recv().await
    }
}

/// The broker port.
#[async_trait]
pub trait Broker: Send + Sync + fmt::Debug + 'static {
    /// Publishes a message (returns once the broker has it).
    async fn publish(&self, message: BrokerMessage) -> Result<()>;

    /// Publishes messages in order; answers for each. Messages with one key keep their order. The
    /// default publishes one at a time; brokers that can pipeline do so.
    async fn publish_all(&self, messages: Vec<BrokerMessage>) -> Vec<Result<()>> {
        let mut results = Vec::with_capacity(messages.len());
        for message in messages {
            results.push(self.publish(message).await);
        }
        results
    }

    /// Publishes the outbox relay's `messages`, in order, like [`publish_all`](Self::publish_all);
    /// those from index `fresh` on were never published before (the relay publishes each row of its
    /// outbox once while it holds the lease, and these rows were committed after it took the lease).
    /// A broker that delivers each published message exactly once to each consumer group (the
    /// in-process broker) marks those deliveries as first ones, so consumers skip their inbox look-up;
    /// a broker that may deliver a message again (Kafka, after a rebalance) ignores `fresh`, which is
    /// the default.
    ///
    /// `tracked` is given only to a broker that [holds messages until they are
    /// handled](Self::holds_until_handled): one tracker per message, which each of its deliveries keeps
    /// until it is acknowledged or dropped.
    async fn publish_relayed(
        &self,
        messages: Vec<BrokerMessage>,
        fresh: usize,
        tracked: Option<Vec<Tracked>>,
    ) -> Vec<Result<()>> {
        let _ = (fresh, tracked);
        self.publish_all(messages).await
    }

    /// Whether a published message lives only in this process's memory until its consumers handled it
    /// (the in-process broker). The outbox relay then marks a row sent only once every delivery of its
    /// message was acknowledged, through the trackers it hands to
    /// [`publish_relayed`](Self::publish_relayed): a crash before that leaves the row to be published
    /// again on the next start, instead of losing the message with the process's memory. A broker
    /// that stores what it acknowledges (Kafka) answers `false`, the default: a row is marked sent once
    /// published.
    fn holds_until_handled(&self) -> bool {
        false
    }

    /// Subscribes `group` to `topics`: each unicast message reaches one subscription of each group.
    async fn subscribe(&self, group: &str, topics: &[String]) -> Result<Subscription>;

    /// Every message published on `topic` from now on, for this subscriber alone (no consumer group,
    /// nothing committed): how an instance reads its service's reply topic. The default subscribes a
    /// group of its own.
    async fn listen(&self, topic: &str) -> Result<Subscription> {
        let group = format!("{topic}.{}", Uuid::new_v4().simple());
        self.subscribe(&group, &[topic.to_owned()]).await
    }

    /// Whether the broker answers now (the health check). In-process brokers always do.
    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    /// Waits while the broker holds too many undelivered messages in this process's memory. The
    /// outbox relay calls it before each batch, so a burst of writes waits in the durable outbox
    /// instead of in memory. Brokers that keep messages elsewhere (Kafka) answer at once.
    async fn ready_for_more(&self) {}

    /// The messages the broker still keeps on `topic`, oldest first: how a service lists its dead
    /// letters. `None` when the broker keeps no history of the topic (the default).
    async fn history(&self, topic: &str) -> Result<Option<Vec<BrokerMessage>>> {
        let _ = topic;
        Ok(None)
    }
}

/// A shared broker.
pub type SharedBroker = Arc<dyn Broker>;

/// The message that re-drives a dead letter parked by service `service` (read from its
/// `{service}.dead-letter` topic): the original topic, content and headers, for that service alone
/// ([`headers::REDRIVEN_FOR`]; the other services subscribed to the topic handled the original).
///
/// Its identifier is derived from the parked message's, so re-driving one dead letter twice gives
/// the same message twice, which the service's inbox handles once.
pub fn redrive(parked: &BrokerMessage, service: &str) -> Result<BrokerMessage> {
    let original = parked
        .payload
        .headers
        .get(headers::ORIGINAL_TOPIC)
        .filter(|topic| !topic.is_empty())
        .ok_or_else(|| {
            Error::bad_request(format!(
                "message {} has no `{}` header: not a dead letter",
                parked.identifier,
                headers::ORIGINAL_TOPIC
            ))
        })?;
    if parked.payload.content.get("raw").is_some()
        && parked
            .payload
            .content
            .as_object()
            .is_some_and(|c| c.len() == 1)
    {
        return Err(Error::bad_request(format!(
            "message {} was parked because it could not be decoded ({}): re-driving it would fail the same way; fix its producer and send it again",
            parked.identifier,
            parked.payload.headers.get(headers::ERROR).map_or("no error recorded", String::as_str)
        )));
    }
    let mut message = parked.clone();
    message.topic = original.clone();
    message.identifier = Uuid::new_v5(&parked.identifier, b"minos.redrive");
    message.reply_topic = None;
    let kept = &mut message.payload.headers;
    kept.remove(headers::ERROR);
    kept.remove(headers::ORIGINAL_TOPIC);
    kept.insert(headers::REDRIVEN_FOR.into(), service.to_owned());
    kept.insert(headers::REDRIVEN_FROM.into(), parked.identifier.to_string());
    Ok(message)
}

#[cfg(test)]
mod redrive_tests {
    use super::*;

    #[test]
    fn a_dead_letter_goes_back_to_its_topic_for_its_service_once() {
        let mut parked = BrokerMessage::new("foo.dead-letter", serde_json::json!({"uuid": "x"}));
        parked
            .payload
            .headers
            .insert(headers::ERROR.into(), "boom".into());
        parked
            .payload
            .headers
            .insert(headers::ORIGINAL_TOPIC.into(), "FooCreated".into());
        parked
            .payload
            .headers
            .insert("traceparent".into(), "00-a-b-01".into());
        let again = redrive(&parked, "foo").unwrap();
        assert_eq!(again.topic, "FooCreated");
        assert_eq!(again.payload.content, parked.payload.content);
        assert_ne!(again.identifier, parked.identifier);
        assert_eq!(
            again.identifier,
            redrive(&parked, "foo").unwrap().identifier,
            "same id twice"
        );
        assert_eq!(
            again
                .payload
                .headers
                .get(headers::REDRIVEN_FOR)
                .map(String::as_str),
            Some("foo")
        );
        assert!(!again.payload.headers.contains_key(headers::ERROR));
        assert_eq!(
            again.payload.headers.get("traceparent").map(String::as_str),
            Some("00-a-b-01")
        );

        let plain = BrokerMessage::new("FooCreated", serde_json::json!({}));
        assert!(redrive(&plain, "foo")
            .unwrap_err()
            .to_string()
            .contains("not a dead letter"));
        let mut raw = BrokerMessage::new("foo.dead-letter", serde_json::json!({"raw": "{oops"}));
        raw.payload
            .headers
            .insert(headers::ORIGINAL_TOPIC.into(), "FooCreated".into());
        assert!(redrive(&raw, "foo")
            .unwrap_err()
            .to_string()
            .contains("could not be decoded"));
    }
}
