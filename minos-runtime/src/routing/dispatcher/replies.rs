//! Replies to commands and queries: published with retries, and kept in the inbox so that a
//! redelivered command is answered again.

use std::time::Duration;

use super::Dispatcher;
use crate::error::Error;
use crate::messaging::{headers, BrokerMessage, Payload};
use crate::routing::Response;
use crate::store::InboxEntry;

/// How many times a reply is published before it is given up (the requester then times out).
const REPLY_ATTEMPTS: u32 = 4;

impl Dispatcher {
    /// Answers a redelivered command again with the reply kept in the inbox, when there is one: its
    /// first reply may have been lost (the service stopped between committing and replying).
    pub(super) async fn reply_again(&self, message: &BrokerMessage, inbox: &InboxEntry) {
        if message.reply_topic.is_none() {
            return;
        }
        let store = self.context.repository().store();
        let kept = match store.recorded_reply(inbox).await {
            Ok(Some(kept)) => kept,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, "could not read the reply kept in the inbox");
                return;
            }
        };
        tracing::info!(identifier = %message.identifier, topic = %message.topic, "redelivered command: answered again with its kept reply");
        self.reply(message, Ok(kept_response(&kept))).await;
    }

    /// Answers `request` with `result` on its reply topic, when it has one.
    pub(super) async fn reply(&self, request: &BrokerMessage, result: Result<Response, Error>) {
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
        let mut reply_headers = request.payload.headers.clone();
        reply_headers.extend(response.headers().clone());
        // The reply's parent is the handler that answered.
        crate::telemetry::trace::inject_replacing(&mut reply_headers);
        if request.payload.headers.contains_key(headers::TRANSACTIONS) {
            // The saga reserves, then commits or rejects, the transaction in every service that ran one
            // of its steps.
            let name = self.context.name();
            let services = match reply_headers.get(headers::RELATED_SERVICES) {
                Some(existing) if existing.split(',').any(|s| s == name) => existing.clone(),
                Some(existing) if !existing.is_empty() => format!("{existing},{name}"),
                _ => name.to_owned(),
            };
            reply_headers.insert(headers::RELATED_SERVICES.into(), services);
        }
        let reply = BrokerMessage {
            topic: reply_topic.clone(),
            identifier: request.identifier,
            reply_topic: None,
            payload: Payload {
                content: response.content().clone(),
                status: response.status(),
                headers: reply_headers,
            },
            ..BrokerMessage::new(reply_topic.clone(), serde_json::Value::Null)
        };
        // The requester waits for this reply, and the request is acknowledged once this returns: a
        // publish that fails is tried again (after 50, 200 and 800 ms) while the request's deadline
        // allows.
        let mut pause = Duration::from_millis(50);
        for attempt in 1..=REPLY_ATTEMPTS {
            let error = match self.context.broker().publish(reply.clone()).await {
                Ok(()) => return,
                Err(error) => error,
            };
            let late = request
                .deadline()
                .is_some_and(|deadline| chrono::Utc::now() + pause > deadline);
            if attempt == REPLY_ATTEMPTS || late {
                tracing::error!(%error, topic = %reply_topic, attempts = attempt, "could not publish a reply: the requester will time out");
                return;
            }
            tracing::warn!(%error, topic = %reply_topic, attempt, "could not publish a reply: trying again");
            tokio::time::sleep(pause).await;
            pause *= 4;
        }
    }
}

/// `inbox` with `response` as its reply (read back by [`kept_response`]), when the message expects one.
pub(super) fn with_reply(
    message: &BrokerMessage,
    mut inbox: InboxEntry,
    response: &Response,
) -> InboxEntry {
    if message.reply_topic.is_some() {
        inbox.reply = Some(serde_json::json!({
            "status": response.status(),
            "content": response.content(),
            "headers": response.headers(),
        }));
    }
    inbox
}

/// The response a reply kept by [`with_reply`] stands for.
fn kept_response(kept: &serde_json::Value) -> Response {
    let status = kept["status"]
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .unwrap_or(200);
    let headers = kept["headers"].as_object().into_iter().flatten();
    headers
        .filter_map(|(name, value)| Some((name, value.as_str()?)))
        .fold(
            Response::json(kept["content"].clone()).with_status(status),
            |response, (name, value)| response.with_header(name.clone(), value),
        )
}
