//! The broker dispatcher: runs the handlers of each received message and publishes replies.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{invoke, BrokerKind, Context, Middleware, Origin, Request, Response, RouteTable};
use crate::error::Error;
use crate::messaging::memory::stable_hash;
use crate::messaging::{BrokerMessage, Delivery, Payload, Subscription};

/// Runs broker handlers. Messages with the same key (one root's events) are handled one at a time in
/// arrival order; different keys run in parallel on a few workers.
#[derive(Clone)]
pub struct Dispatcher {
    table: Arc<RouteTable>,
    chain: Arc<[Middleware]>,
    context: Context,
    retries: u32,
    workers: usize,
}

/// A running dispatcher.
#[derive(Debug)]
pub struct DispatcherHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl DispatcherHandle {
    /// Stops taking messages and waits for the ones being handled.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("routes", &self.table.entries().len())
            .field("middleware", &self.chain.len())
            .field("retries", &self.retries)
            .finish()
    }
}

impl Dispatcher {
    /// A dispatcher of `table`'s broker routes.
    pub fn new(table: Arc<RouteTable>, chain: Arc<[Middleware]>, context: Context) -> Self {
        Dispatcher {
            table,
            chain,
            context,
            retries: 3,
            workers: 4,
        }
    }

    /// How often a failing event handler is retried (with backoff) before the failure is logged.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Handles one message: runs its handlers, and replies when a reply topic is set.
    pub async fn dispatch(&self, message: BrokerMessage) {
        let handlers = self.table.broker_handlers(&message.topic);
        if handlers.is_empty() {
            tracing::warn!(topic = %message.topic, "no handler for this topic");
            self.reply(
                &message,
                Err(Error::not_found(format!(
                    "no handler for topic `{}`",
                    message.topic
                ))),
            )
            .await;
            return;
        }
        for (entry, kind) in handlers {
            let request = Request::from_parts(
                message.payload.content.clone(),
                Default::default(),
                message.payload.headers.clone(),
                Origin::Broker {
                    topic: message.topic.clone(),
                    identifier: message.identifier,
                    reply_topic: message.reply_topic.clone(),
                },
            );
            match kind {
                BrokerKind::Command | BrokerKind::Query => {
                    let result = invoke(&self.chain, entry.handler, request, &self.context).await;
                    self.reply(&message, result).await;
                }
                BrokerKind::Event => {
                    let mut attempt = 0;
                    loop {
                        match invoke(&self.chain, entry.handler, request.clone(), &self.context)
                            .await
                        {
                            Ok(_) => break,
                            Err(error) if attempt < self.retries => {
                                attempt += 1;
                                let wait = Duration::from_millis(50 << attempt.min(8));
                                tracing::warn!(%error, topic = %message.topic, handler = %entry.location(), attempt, "event handler failed; retrying");
                                tokio::time::sleep(wait).await;
                            }
                            Err(error) => {
                                tracing::error!(%error, topic = %message.topic, identifier = %message.identifier, handler = %entry.location(), "event handler failed after retries");
                                break;
                            }
                        }
                    }
                }
            }
        }
    }

    async fn reply(&self, request: &BrokerMessage, result: Result<Response, Error>) {
        let Some(reply_topic) = &request.reply_topic else {
            if let Err(error) = &result {
                tracing::warn!(%error, topic = %request.topic, "handler failed and nobody waits for the reply");
            }
            return;
        };
        let response = match result {
            Ok(response) => response,
            Err(error) => Response::from_error(&error),
        };
        let mut headers = request.payload.headers.clone();
        headers.extend(response.headers().clone());
        let reply = BrokerMessage {
            topic: reply_topic.clone(),
            identifier: request.identifier,
            reply_topic: None,
            payload: Payload {
                content: response.content().clone(),
                status: response.status(),
                headers,
            },
            ..BrokerMessage::new(reply_topic.clone(), serde_json::Value::Null)
        };
        if let Err(error) = self.context.broker().publish(reply).await {
            tracing::error!(%error, topic = %reply_topic, "could not publish a reply");
        }
    }

    /// Handles `subscription` in the background until stopped.
    pub fn spawn(self, mut subscription: Subscription) -> DispatcherHandle {
        let (stop, mut stopped) = watch::channel(false);
        let this = Arc::new(self);
        let task = tokio::spawn(async move {
            let mut senders = Vec::new();
            let mut workers = Vec::new();
            for _ in 0..this.workers {
                let (sender, mut receiver) = mpsc::unbounded_channel::<Delivery>();
                let this = Arc::clone(&this);
                senders.push(sender);
                workers.push(tokio::spawn(async move {
                    while let Some(delivery) = receiver.recv().await {
                        this.dispatch(delivery.message.clone()).await;
                        delivery.ack();
                    }
                }));
            }
            loop {
                tokio::select! {
                    delivery = subscription.next() => match delivery {
                        Some(delivery) => {
                            let key = delivery
                                .message
                                .key
                                .clone()
                                .unwrap_or_else(|| delivery.message.identifier.to_string());
                            let _ = senders[stable_hash(&key) % senders.len()].send(delivery);
                        }
                        None => break,
                    },
                    _ = stopped.changed() => break,
                }
            }
            drop(senders);
            for worker in workers {
                let _ = worker.await;
            }
        });
        DispatcherHandle { stop, task }
    }
}
