//! The Kafka broker on rdkafka: an idempotent producer awaiting acknowledgements from all replicas,
//! consumer groups per service, offsets committed only up to messages already handled, topics created
//! at start-up with a configured partition count.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

mod consume;
mod options;
mod producer;

use consume::consume;
pub use options::KafkaOptions;
use options::{Complaints, Role};
use producer::{DeadLetters, SharedProducer};

use super::{Broker, BrokerMessage, Delivery, Subscription};
use crate::error::{Error, Result};

/// A Kafka cluster as the broker of a service.
pub struct KafkaBroker {
    bootstrap: String,
    options: KafkaOptions,
    producer: Arc<SharedProducer>,
    admin: AdminClient<Complaints>,
    known_topics: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for KafkaBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBroker")
            .field("bootstrap", &self.bootstrap)
            .field("options", &self.options)
            .finish()
    }
}

fn kafka_error(context: &str, error: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::broker(format!("kafka {context}"), error)
}

impl KafkaBroker {
    /// Connects to the cluster at `bootstrap` (`host:port[,host:port]`).
    pub fn connect(bootstrap: &str, options: KafkaOptions) -> Result<Self> {
        options.check()?;
        let timeout_ms = options.publish_timeout.as_millis().to_string();
        // A publish goes out at once (`linger.ms` 0): a request and its reply cross the broker once
        // each, and waiting to fill batches would add to every hop (publishes made while a request is
        // in flight still go out together).
        let mut config = options.client_config_with(
            bootstrap,
            Role::Producer,
            &[("linger.ms", "0"), ("socket.nagle.disable", "true")],
        );
        config
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", &timeout_ms);
        let complaints = Complaints::default();
        let producer = SharedProducer::new(config, complaints.clone())?;
        let admin: AdminClient<Complaints> = options
            .client_config(bootstrap, Role::Admin)
            .create_with_context(complaints)
            .map_err(|e| kafka_error("admin client", e))?;
        Ok(KafkaBroker {
            bootstrap: bootstrap.to_owned(),
            options,
            producer,
            admin,
            known_topics: Mutex::new(HashSet::new()),
        })
    }

    /// An error of the cluster's clients, with what librdkafka last complained about (a refused
    /// certificate, a failed login), which the error itself often does not say.
    fn explained(
        &self,
        context: &str,
        error: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        match self.admin.inner().context().last() {
            Some(reason) => Error::broker(format!("kafka {context} ({reason})"), error),
            None => kafka_error(context, error),
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.known_topics
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Creates the topics that do not exist yet (an existing topic is left as it is).
    pub async fn ensure_topics(&self, topics: &[String]) -> Result<()> {
        let missing: Vec<&String> = {
            let known = self.known();
            topics.iter().filter(|t| !known.contains(*t)).collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let new: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|t| {
                NewTopic::new(
                    t,
                    self.options.partitions,
                    TopicReplication::Fixed(self.options.replication),
                )
            })
            .collect();
        // A broker that cannot be reached (or refuses this client) fails the publish within its timeout.
        let options = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(10)))
            .request_timeout(Some(self.options.publish_timeout));
        let results = self
            .admin
            .create_topics(&new, &options)
            .await
            .map_err(|e| self.explained("creating topics", e))?;
        for result in results {
            match result {
                Ok(topic) => {
                    self.known().insert(topic);
                }
                Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    self.known().insert(topic);
                }
                Err((topic, code)) => {
                    return Err(kafka_error(&format!("creating topic `{topic}`"), code))
                }
            }
        }
        self.wait_until_listed(&missing).await
    }

    /// Waits (up to 10 s) until the cluster's metadata lists `topics` with their partitions: a consumer
    /// subscribing to a topic the metadata does not list yet is not assigned its partitions until a
    /// later rebalance.
    async fn wait_until_listed(&self, topics: &[&String]) -> Result<()> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let wanted: Vec<String> = topics.iter().map(|t| (*t).clone()).collect();
        loop {
            let producer = self.producer.get();
            let names = wanted.clone();
            let listed = tokio::task::spawn_blocking(move || {
                let metadata = producer
                    .client()
                    .fetch_metadata(None, Duration::from_secs(2))
                    .map_err(|e| kafka_error("reading the cluster metadata", e))?;
                Ok::<bool, Error>(names.iter().all(|name| {
                    metadata.topics().iter().any(|t| {
                        t.name() == name && t.error().is_none() && !t.partitions().is_empty()
                    })
                }))
            })
            .await
            .map_err(|e| Error::broker("kafka: reading the cluster metadata", e))??;
            if listed {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(Error::broker_message(format!(
                    "topics {wanted:?} were created but the cluster does not list them after 10 s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[async_trait]
impl Broker for KafkaBroker {
    async fn publish(&self, message: BrokerMessage) -> Result<()> {
        self.ensure_topics(std::slice::from_ref(&message.topic))
            .await?;
        let payload = message.to_json();
        let key = message
            .key
            .clone()
            .unwrap_or_else(|| message.identifier.to_string());
        self.producer
            .send(&message.topic, &key, &payload, self.options.publish_timeout)
            .await
            .map_err(|e| kafka_error(&format!("publishing to `{}`", message.topic), e))
    }

    async fn history(&self, topic: &str) -> Result<Option<Vec<BrokerMessage>>> {
        let read = async {
            let mut tail = self.tail(topic, false).await?;
            let mut kept = Vec::new();
            while let Some(message) = tail.recv().await {
                kept.push(message);
            }
            Ok::<_, Error>(kept)
        };
        match tokio::time::timeout(Duration::from_secs(30), read).await {
            Ok(kept) => kept.map(Some),
            Err(_) => Err(Error::broker_message(format!(
                "kafka: reading `{topic}` took more than 30 s"
            ))),
        }
    }

    async fn ping(&self) -> Result<()> {
        let producer = self.producer.get();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, Duration::from_secs(2))
                .map(|_| ())
        })
        .await
        .map_err(|e| Error::broker("kafka: reading the cluster metadata", e))?
        .map_err(|e| self.explained("reading the cluster metadata", e))
    }

    async fn publish_all(&self, messages: Vec<BrokerMessage>) -> Vec<Result<()>> {
        let mut topics: Vec<String> = messages.iter().map(|m| m.topic.clone()).collect();
        topics.sort();
        topics.dedup();
        if let Err(error) = self.ensure_topics(&topics).await {
            let text = error.to_string();
            return messages
                .iter()
                .map(|_| Err(Error::broker_message(text.clone())))
                .collect();
        }
        let encoded: Vec<(String, String, Vec<u8>)> = messages
            .iter()
            .map(|m| {
                let key = m.key.clone().unwrap_or_else(|| m.identifier.to_string());
                (m.topic.clone(), key, m.to_json())
            })
            .collect();
        // Every send is queued, in order, before any delivery report is awaited: the idempotent
        // producer keeps that order per partition while the reports come back together.
        let sends = encoded.iter().map(|(topic, key, payload)| {
            self.producer
                .send(topic, key, payload, self.options.publish_timeout)
        });
        futures_util::future::join_all(sends)
            .await
            .into_iter()
            .zip(&encoded)
            .map(|(result, (topic, _, _))| {
                result.map_err(|e| kafka_error(&format!("publishing to `{topic}`"), e))
            })
            .collect()
    }

    async fn subscribe(&self, group: &str, topics: &[String]) -> Result<Subscription> {
        self.ensure_topics(topics).await?;
        // A new group starts from now, not from the topics' history (which another service, or this
        // one before its database was wiped, handled long ago).
        match self.start_new_group_at_end(group, topics).await {
            Ok(0) => {}
            Ok(partitions) => {
                tracing::info!(%group, partitions, "new consumer group: starting at the end of its topics")
            }
            Err(error) => {
                tracing::warn!(%group, %error, "could not set where a new consumer group starts; partitions without a committed offset start at their end")
            }
        }
        let fetch_wait_ms = self.options.fetch_wait.as_millis().to_string();
        let consumer: StreamConsumer = self
            .options
            .client_config_with(
                &self.bootstrap,
                Role::Consumer,
                &[
                    ("session.timeout.ms", "10000"),
                    // A subscribed topic the cluster did not list yet (just created) is assigned at the
                    // next metadata refresh: keep that soon, not the default five minutes.
                    ("topic.metadata.refresh.interval.ms", "1000"),
                    ("socket.nagle.disable", "true"),
                ],
            )
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "latest")
            .set("enable.partition.eof", "false")
            // Hand messages over as soon as they are there: latency matters more than fetch sizes here
            // (some brokers hold an empty fetch for its whole wait even when a message arrives).
            .set("fetch.wait.max.ms", &fetch_wait_ms)
            .create()
            .map_err(|e| kafka_error("consumer", e))?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&names)
            .map_err(|e| kafka_error("subscribing", e))?;
        let (sender, receiver) = mpsc::unbounded_channel();
        let dead_letters = DeadLetters {
            producer: Arc::clone(&self.producer),
            topic: super::topics::dead_letter(group),
            timeout: self.options.publish_timeout,
        };
        self.ensure_topics(std::slice::from_ref(&dead_letters.topic))
            .await?;
        tokio::spawn(consume(consumer, sender, dead_letters));
        Ok(Subscription::new(receiver))
    }

    async fn listen(&self, topic: &str) -> Result<Subscription> {
        self.ensure_topics(&[topic.to_owned()]).await?;
        let fetch_wait_ms = self.options.fetch_wait.as_millis().to_string();
        let consumer: StreamConsumer = self
            .options
            .client_config_with(
                &self.bootstrap,
                Role::Consumer,
                &[("socket.nagle.disable", "true")],
            )
            // Partitions are assigned by hand: the group joins nothing and commits nothing.
            .set(
                "group.id",
                format!("{topic}.{}", uuid::Uuid::new_v4().simple()),
            )
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", &fetch_wait_ms)
            .create()
            .map_err(|e| kafka_error("consumer", e))?;
        // Every partition from its current end: what is published from now on.
        let ends = self.ends(&[topic.to_owned()]).await?;
        consumer
            .assign(&ends)
            .map_err(|e| kafka_error("assigning the reply topic", e))?;
        let (sender, receiver) = mpsc::unbounded_channel();
        let topic = topic.to_owned();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    received = consumer.recv() => match received {
                        Ok(message) => match BrokerMessage::from_json(message.payload().unwrap_or_default()) {
                            Ok(decoded) => {
                                if sender.send(Delivery::new(decoded, None)).is_err() {
                                    return;
                                }
                            }
                            Err(error) => tracing::warn!(%error, %topic, "undecodable reply: dropped"),
                        },
                        Err(error) => {
                            tracing::warn!(%error, %topic, "kafka consumer error; continuing");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    },
                    _ = sender.closed() => return,
                }
            }
        });
        Ok(Subscription::new(receiver))
    }
}

impl KafkaBroker {
    /// Every message of `topic` the cluster still keeps, oldest first per partition; then, with
    /// `follow`, every new one. Without `follow` the receiver closes once the messages that were there
    /// when it started are read. Nothing is committed (how `minos logs` reads the log topic).
    pub async fn tail(&self, topic: &str, follow: bool) -> Result<mpsc::Receiver<BrokerMessage>> {
        self.ensure_topics(&[topic.to_owned()]).await?;
        let ends = self.ends(&[topic.to_owned()]).await?;
        let consumer: StreamConsumer = self
            .options
            .client_config(&self.bootstrap, Role::Consumer)
            .set(
                "group.id",
                format!("{topic}.tail.{}", uuid::Uuid::new_v4().simple()),
            )
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "50")
            .create()
            .map_err(|e| kafka_error("consumer", e))?;
        let mut starts = TopicPartitionList::new();
        // The partitions with messages to read before the history is done: partition → its end.
        let mut remaining: HashMap<i32, i64> = HashMap::new();
        for element in ends.elements() {
            starts
                .add_partition_offset(topic, element.partition(), Offset::Beginning)
                .map_err(|e| kafka_error("listing partitions", e))?;
            if let Offset::Offset(end) = element.offset() {
                if end > 0 {
                    remaining.insert(element.partition(), end);
                }
            }
        }
        consumer
            .assign(&starts)
            .map_err(|e| kafka_error("assigning the topic", e))?;
        // Bounded: a slow reader slows the reading down instead of piling the topic up in memory.
        let (sender, receiver) = mpsc::channel(1024);
        let topic = topic.to_owned();
        tokio::spawn(async move {
            loop {
                if !follow && remaining.is_empty() {
                    return;
                }
                let received = tokio::select! {
                    received = consumer.recv() => received,
                    _ = sender.closed() => return,
                    // A partition whose old messages were deleted may never reach its recorded end.
                    _ = tokio::time::sleep(Duration::from_secs(5)), if !follow => return,
                };
                match received {
                    Ok(message) => {
                        if let Some(end) = remaining.get(&message.partition()) {
                            if message.offset() + 1 >= *end {
                                remaining.remove(&message.partition());
                            }
                        }
                        match BrokerMessage::from_json(message.payload().unwrap_or_default()) {
                            Ok(decoded) => {
                                if sender.send(decoded).await.is_err() {
                                    return;
                                }
                            }
                            Err(error) => {
                                tracing::debug!(%error, %topic, "undecodable message: skipped")
                            }
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, %topic, "kafka consumer error; continuing");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        Ok(receiver)
    }

    /// Every partition of `topics` at its current end (high watermark).
    async fn ends(&self, topics: &[String]) -> Result<TopicPartitionList> {
        let producer = self.producer.get();
        let topics = topics.to_vec();
        tokio::task::spawn_blocking(move || {
            let client = producer.client();
            let mut ends = TopicPartitionList::new();
            for topic in &topics {
                let metadata = client
                    .fetch_metadata(Some(topic), Duration::from_secs(5))
                    .map_err(|e| kafka_error("reading the cluster metadata", e))?;
                for found in metadata.topics().iter().filter(|t| t.name() == topic) {
                    for partition in found.partitions() {
                        let (_, high) = client
                            .fetch_watermarks(topic, partition.id(), Duration::from_secs(5))
                            .map_err(|e| kafka_error("reading where a topic ends", e))?;
                        ends.add_partition_offset(topic, partition.id(), Offset::Offset(high))
                            .map_err(|e| kafka_error("listing partitions", e))?;
                    }
                }
            }
            Ok(ends)
        })
        .await
        .map_err(|e| Error::broker("kafka: reading where topics end", e))?
    }

    /// Commits, for `group`, the current end of every partition of `topics` it has no committed
    /// offset for (a group that never consumed them). Returns how many.
    async fn start_new_group_at_end(&self, group: &str, topics: &[String]) -> Result<usize> {
        let ends = self.ends(topics).await?;
        let bootstrap = self.bootstrap.clone();
        let options = self.options.clone();
        let group = group.to_owned();
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = options
                .client_config(&bootstrap, Role::Consumer)
                .set("group.id", &group)
                .set("enable.auto.commit", "false")
                .create()
                .map_err(|e| kafka_error("consumer", e))?;
            let mut asked = TopicPartitionList::new();
            for element in ends.elements() {
                asked.add_partition(element.topic(), element.partition());
            }
            let committed = consumer
                .committed_offsets(asked, Duration::from_secs(5))
                .map_err(|e| kafka_error("reading the group's offsets", e))?;
            let mut start = TopicPartitionList::new();
            for element in committed.elements() {
                if matches!(element.offset(), Offset::Offset(_)) {
                    continue;
                }
                if let Some(end) = ends.find_partition(element.topic(), element.partition()) {
                    start
                        .add_partition_offset(element.topic(), element.partition(), end.offset())
                        .map_err(|e| kafka_error("listing partitions", e))?;
                }
            }
            if start.count() > 0 {
                consumer
                    .commit(&start, CommitMode::Sync)
                    .map_err(|e| kafka_error("committing where the new group starts", e))?;
            }
            Ok(start.count())
        })
        .await
        .map_err(|e| Error::broker("kafka: setting where a group starts", e))?
    }
}
