//! A service's dead letters — the messages it parked on `{service}.dead-letter` after its handlers
//! failed — listed, shown and re-driven, from code ([`DeadLetters`]) and over HTTP (admins only):
//!
//! - `GET /dead-letters`: every parked message in short (identifier, original topic, error, and
//!   whether its re-driven copy was handled);
//! - `GET /dead-letters/{identifier}`: one whole, with its content and headers;
//! - `POST /dead-letters/{identifier}/redrive`: back to its original topic, for this service alone;
//! - `POST /dead-letters/redrive` with `{"identifiers": [...]}` or `{"all": true}`.
//!
//! A re-driven message's identifier is derived from the parked one's, so re-driving it twice sends the
//! same message twice, which the service's inbox handles once.

use serde_json::{json, Value};
use uuid::Uuid;

use super::{headers, redrive, topics, BrokerMessage, SharedBroker};
use crate::error::{Error, Result};
use crate::store::{InboxEntry, SharedStore};

/// The dead letters of one service.
#[derive(Clone, Debug)]
pub struct DeadLetters {
    broker: SharedBroker,
    store: SharedStore,
    service: String,
}

impl DeadLetters {
    /// The dead letters `service` parked on `broker`; `store` is the service's (its inbox tells which
    /// re-driven copies were handled).
    pub fn new(broker: SharedBroker, store: SharedStore, service: &str) -> Self {
        DeadLetters {
            broker,
            store,
            service: service.to_owned(),
        }
    }

    /// The dead letters of the service `context` runs.
    pub fn of(context: &crate::routing::Context) -> Self {
        DeadLetters::new(
            std::sync::Arc::clone(context.broker()),
            context.repository().store().clone(),
            context.name(),
        )
    }

    /// The topic they are parked on.
    pub fn topic(&self) -> String {
        topics::dead_letter(&self.service)
    }

    /// Every parked message the broker still keeps, oldest first (a message parked twice, once).
    pub async fn list(&self) -> Result<Vec<BrokerMessage>> {
        let topic = self.topic();
        let Some(kept) = self.broker.history(&topic).await? else {
            return Err(Error::with_status(
                501,
                format!(
                    "this broker keeps no history of `{topic}`: its dead letters cannot be listed"
                ),
            ));
        };
        let mut seen = std::collections::HashSet::new();
        let mut unique: Vec<BrokerMessage> = kept
            .into_iter()
            .rev()
            .filter(|message| seen.insert(message.identifier))
            .collect();
        unique.reverse();
        Ok(unique)
    }

    /// One parked message (404 when the topic has none with this identifier).
    pub async fn get(&self, identifier: Uuid) -> Result<BrokerMessage> {
        self.list()
            .await?
            .into_iter()
            .find(|message| message.identifier == identifier)
            .ok_or_else(|| {
                Error::not_found(format!("no dead letter {identifier} on `{}`", self.topic()))
            })
    }

    /// Whether the re-driven copy of `parked` was handled by the service.
    pub async fn handled(&self, parked: &BrokerMessage) -> Result<bool> {
        let copy = redrive(parked, &self.service)?;
        Ok(self
            .store
            .is_processed(&InboxEntry::new(self.service.clone(), copy.identifier))
            .await?)
    }

    /// Sends the parked messages with these identifiers back to their original topics, for this
    /// service alone; answers the messages sent. Every one is found and checked before any is sent
    /// (an unknown identifier or an undecodable message sends nothing).
    pub async fn redrive(&self, identifiers: &[Uuid]) -> Result<Vec<BrokerMessage>> {
        let parked = self.list().await?;
        let chosen = identifiers
            .iter()
            .map(|identifier| {
                parked
                    .iter()
                    .find(|message| message.identifier == *identifier)
                    .ok_or_else(|| {
                        Error::not_found(format!(
                            "no dead letter {identifier} on `{}`",
                            self.topic()
                        ))
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        self.send(chosen).await
    }

    /// Re-drives every parked message the broker keeps.
    pub async fn redrive_all(&self) -> Result<Vec<BrokerMessage>> {
        let parked = self.list().await?;
        self.send(parked.iter().collect()).await
    }

    async fn send(&self, chosen: Vec<&BrokerMessage>) -> Result<Vec<BrokerMessage>> {
        let copies = chosen
            .iter()
            .map(|message| redrive(message, &self.service))
            .collect::<Result<Vec<_>>>()?;
        for copy in &copies {
            self.broker.publish(copy.clone()).await?;
            tracing::info!(
                identifier = %copy.identifier,
                topic = %copy.topic,
                "dead letter re-driven"
            );
        }
        Ok(copies)
    }
}

/// A parked message in short: identifier, original topic and error.
pub fn summary(parked: &BrokerMessage) -> Value {
    json!({
        "identifier": parked.identifier,
        "original_topic": parked.payload.headers.get(headers::ORIGINAL_TOPIC),
        "error": parked.payload.headers.get(headers::ERROR),
    })
}

/// A parked message whole: [`summary`] with its content and headers.
pub fn details(parked: &BrokerMessage) -> Value {
    let mut value = summary(parked);
    value["content"] = parked.payload.content.clone();
    value["headers"] = json!(parked.payload.headers);
    value
}

/// `GET /dead-letters`.
fn list_endpoint(_request: crate::routing::Request) -> crate::routing::HandlerFuture {
    Box::pin(async move {
        let letters = DeadLetters::of(&crate::routing::Context::current()?);
        let mut listed = Vec::new();
        for parked in letters.list().await? {
            let mut value = summary(&parked);
            // An undecodable message cannot be re-driven: it was never handled either.
            value["redriven_and_handled"] = json!(letters.handled(&parked).await.unwrap_or(false));
            listed.push(value);
        }
        Ok(crate::routing::Response::json(listed))
    })
}

/// `GET /dead-letters/{identifier}`.
fn show_endpoint(request: crate::routing::Request) -> crate::routing::HandlerFuture {
    Box::pin(async move {
        let identifier: Uuid = request.param("identifier")?;
        let letters = DeadLetters::of(&crate::routing::Context::current()?);
        let parked = letters.get(identifier).await?;
        let mut value = details(&parked);
        value["redriven_and_handled"] = json!(letters.handled(&parked).await.unwrap_or(false));
        Ok(crate::routing::Response::json(value))
    })
}

fn redriven(copies: &[BrokerMessage]) -> crate::routing::Response {
    crate::routing::Response::json(json!({
        "redriven": copies
            .iter()
            .map(|copy| json!({
                "identifier": copy.payload.headers.get(headers::REDRIVEN_FROM),
                "topic": copy.topic,
                "sent_as": copy.identifier,
            }))
            .collect::<Vec<_>>()
    }))
}

/// `POST /dead-letters/{identifier}/redrive`.
fn redrive_one_endpoint(request: crate::routing::Request) -> crate::routing::HandlerFuture {
    Box::pin(async move {
        let identifier: Uuid = request.param("identifier")?;
        let letters = DeadLetters::of(&crate::routing::Context::current()?);
        Ok(redriven(&letters.redrive(&[identifier]).await?))
    })
}

/// What `POST /dead-letters/redrive` takes.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RedriveBody {
    #[serde(default)]
    identifiers: Vec<Uuid>,
    #[serde(default)]
    all: bool,
}

/// `POST /dead-letters/redrive` with `{"identifiers": [...]}` or `{"all": true}`.
fn redrive_endpoint(request: crate::routing::Request) -> crate::routing::HandlerFuture {
    Box::pin(async move {
        let body: RedriveBody = request.content()?;
        let letters = DeadLetters::of(&crate::routing::Context::current()?);
        let copies = match (body.all, body.identifiers.is_empty()) {
            (true, true) => letters.redrive_all().await?,
            (false, false) => letters.redrive(&body.identifiers).await?,
            (true, false) => {
                return Err(Error::bad_request(
                    "give either `identifiers` or `all: true`, not both",
                ))
            }
            (false, true) => return Err(Error::bad_request(
                "name the dead letters to re-drive: {\"identifiers\": [...]} or {\"all\": true}",
            )),
        };
        Ok(redriven(&copies))
    })
}

/// The HTTP routes of a service's dead letters.
pub(crate) fn http_routes() -> [(&'static str, &'static str, crate::routing::HandlerFn); 4] {
    [
        ("GET", "/dead-letters", list_endpoint),
        ("GET", "/dead-letters/{identifier}", show_endpoint),
        ("POST", "/dead-letters/redrive", redrive_endpoint),
        (
            "POST",
            "/dead-letters/{identifier}/redrive",
            redrive_one_endpoint,
        ),
    ]
}
