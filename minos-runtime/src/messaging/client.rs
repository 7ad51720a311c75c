//! Request/reply over the broker: a private reply topic per client, replies matched by identifier.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{oneshot, OnceCell};
use uuid::Uuid;

use super::{BrokerMessage, SharedBroker};
use crate::error::{Error, Result};

type Pending = Arc<Mutex<HashMap<Uuid, oneshot::Sender<BrokerMessage>>>>;

/// Sends commands and queries to other services and waits for their replies.
#[derive(Clone, Debug)]
pub struct BrokerClient {
    broker: SharedBroker,
    reply_topic: String,
    pending: Pending,
    listening: Arc<OnceCell<()>>,
    timeout: Duration,
}

/// A reply: status, content and headers.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    /// 200 success, 400 refused, 500 failed.
    pub status: u16,
    /// The content.
    pub content: Value,
    /// The headers.
    pub headers: std::collections::BTreeMap<String, String>,
}

impl Reply {
    /// Whether the status is below 400.
    pub fn is_success(&self) -> bool {
        self.status < 400
    }

    /// The content as `T` if the reply is a success, else the error it carries.
    pub fn into_content<T: DeserializeOwned>(self) -> Result<T> {
        if !self.is_success() {
            let message = self
                .content
                .get("error")
                .and_then(Value::as_str)
                .map_or_else(|| self.content.to_string(), str::to_owned);
            return Err(Error::with_status(self.status, message));
        }
        serde_json::from_value(self.content)
            .map_err(|e| Error::bad_request(format!("unexpected reply content: {e}")))
    }
}

impl BrokerClient {
    /// A client of `service`: its replies come back on `{service}.replies`, one topic for every
    /// instance and restart of the service, which each instance reads from the moment it starts.
    pub fn new(broker: SharedBroker, service: &str) -> Self {
        BrokerClient {
            broker,
            reply_topic: super::topics::client_replies(service),
            pending: Arc::default(),
            listening: Arc::new(OnceCell::new()),
            timeout: Duration::from_secs(10),
        }
    }

    /// The default time to wait for a reply.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// This client's reply topic.
    pub fn reply_topic(&self) -> &str {
        &self.reply_topic
    }

    /// Publishes `content` to `topic` without waiting for anything.
    pub async fn publish(&self, topic: &str, content: impl Serialize) -> Result<()> {
        let content =
            serde_json::to_value(content).map_err(|e| Error::bad_request(e.to_string()))?;
        let mut message = BrokerMessage::new(topic, content);
        if let Some(caller) = crate::auth::Caller::current() {
            caller.add_to(&mut message.payload.headers);
        }
        crate::telemetry::trace::inject_current(&mut message.payload.headers);
        self.broker.publish(message).await
    }

    /// Sends `content` to `topic` and waits for the reply.
    pub async fn send(&self, topic: &str, content: impl Serialize) -> Result<Reply> {
        let content =
            serde_json::to_value(content).map_err(|e| Error::bad_request(e.to_string()))?;
        self.request(BrokerMessage::new(topic, content), self.timeout)
            .await
    }

    /// Sends `message` (its reply topic is set to this client's) and waits up to `timeout` for the reply.
    /// The message carries that deadline: a service that receives it later does not run it.
    pub async fn request(&self, mut message: BrokerMessage, timeout: Duration) -> Result<Reply> {
        self.listen().await?;
        message.reply_topic = Some(self.reply_topic.clone());
        let now = chrono::Utc::now();
        message.set_deadline(
            chrono::Duration::from_std(timeout)
                .ok()
                .and_then(|timeout| now.checked_add_signed(timeout))
                .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC),
        );
        if let Some(caller) = crate::auth::Caller::current() {
            caller.add_to(&mut message.payload.headers);
        }
        crate::telemetry::trace::inject_current(&mut message.payload.headers);
        let identifier = message.identifier;
        let topic = message.topic.clone();
        let (sender, receiver) = oneshot::channel();
        self.lock().insert(identifier, sender);
        if let Err(error) = self.broker.publish(message).await {
            self.lock().remove(&identifier);
            return Err(error);
        }
        match tokio::time::timeout(timeout, receiver).await {
            Ok(Ok(reply)) => Ok(Reply {
                status: reply.payload.status,
                content: reply.payload.content,
                headers: reply.payload.headers,
            }),
            Ok(Err(_)) => Err(Error::broker_message("the reply listener stopped")),
            Err(_) => {
                self.lock().remove(&identifier);
                Err(Error::Timeout {
                    topic,
                    timeout_ms: timeout.as_millis() as u64,
                })
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, oneshot::Sender<BrokerMessage>>> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Subscribes to this client's reply topic now rather than on the first request (with Kafka, joining
    /// the consumer group takes a moment; a service does this at start).
    pub async fn prepare(&self) -> Result<()> {
        self.listen().await
    }

    async fn listen(&self) -> Result<()> {
        self.listening
            .get_or_try_init(|| async {
                let mut subscription = self.broker.listen(&self.reply_topic).await?;
                let pending = Arc::clone(&self.pending);
                tokio::spawn(async move {
                    while let Some(delivery) = subscription.next().await {
                        let message = delivery.message.clone();
                        delivery.ack();
                        tracing::trace!(topic = %message.topic, identifier = %message.identifier, "reply received");
                        let waiter = pending
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner())
                            .remove(&message.identifier);
                        match waiter {
                            Some(waiter) => {
                                let _ = waiter.send(message);
                            }
                            None => tracing::debug!(identifier = %message.identifier, "reply nobody waits for (timed out?)"),
                        }
                    }
                });
                Ok(())
            })
            .await
            .map(|_| ())
    }
}
