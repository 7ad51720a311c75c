//! Sagas: multi-service operations as a sequence of local and remote steps with compensations,
//! executed as a persisted state machine inside an application transaction.

mod definition;
mod execution;
mod http;
mod jobs;
mod manager;
mod two_phase;

pub use definition::{
    find, registered, Conditional, Saga, SagaBuilder, SagaDefinition, SagaDefinitionError,
    SagaRegistration,
};
pub(crate) use http::http_routes;
pub(crate) use jobs::spawn_jobs;
pub use manager::{SagaManager, SagaServiceExt};

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use uuid::Uuid;

pub use crate::domain::ExecutionStatus;
use crate::error::{Error, Result};
use crate::store::ExecutionRecord;

/// Saga and transaction settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SagaConfig {
    /// How long an execution may wait for remote replies before it fails and compensates.
    pub timeout_ms: u64,
    /// How long the end of a saga waits for each participant's reserve/commit/reject answer.
    pub command_timeout_ms: u64,
    /// Transactions left reserved (or committing) longer than this are rejected (or finished).
    pub reserved_max_ms: u64,
    /// Transactions left pending longer than this are rejected (their saga ended without them); keep
    /// it above the longest `timeout_ms` of the sagas that call this service.
    pub pending_max_ms: u64,
    /// An execution left `running` and unchanged this long was interrupted (its process stopped
    /// mid-step) and is resumed by any replica; keep it above the longest local step.
    pub resume_after_ms: u64,
    /// How often timeouts and stale transactions are looked for.
    pub tidy_interval_ms: u64,
}

impl Default for SagaConfig {
    fn default() -> Self {
        SagaConfig {
            timeout_ms: 60_000,
            command_timeout_ms: 10_000,
            reserved_max_ms: 60_000,
            pending_max_ms: 600_000,
            resume_after_ms: 30_000,
            tidy_interval_ms: 5_000,
        }
    }
}

/// The free-form state a saga carries from step to step, persisted with its execution.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SagaContext(Map<String, Value>);

impl SagaContext {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value under `key`, decoded; a 400 error naming the key when absent or of another shape.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<T> {
        let value = self
            .0
            .get(key)
            .ok_or_else(|| Error::bad_request(format!("the saga context has no `{key}`")))?;
        serde_json::from_value(value.clone())
            .map_err(|e| Error::bad_request(format!("saga context `{key}`: {e}")))
    }

    /// Sets `key` (a value that does not serialize is stored as `null`).
    pub fn set(&mut self, key: impl Into<String>, value: impl Serialize) {
        self.0.insert(
            key.into(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
    }

    /// This context with `key` set.
    pub fn with(mut self, key: impl Into<String>, value: impl Serialize) -> Self {
        self.set(key, value);
        self
    }

    /// Whether `key` is set.
    pub fn contains(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// Removes `key` and returns its value: a secret a step needed (a card number, a password hash)
    /// should not stay in the stored execution once that step is done.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.0.remove(key)
    }

    /// The raw values.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }
}

impl From<Value> for SagaContext {
    /// An object's keys; any other value under `"value"`.
    fn from(value: Value) -> Self {
        match value {
            Value::Object(map) => SagaContext(map),
            Value::Null => SagaContext::default(),
            other => SagaContext::default().with("value", other),
        }
    }
}

impl From<Map<String, Value>> for SagaContext {
    fn from(map: Map<String, Value>) -> Self {
        SagaContext(map)
    }
}

/// The command a remote step sends: a topic and its content.
#[derive(Clone, Debug, PartialEq)]
pub struct SagaRequest {
    topic: String,
    content: std::result::Result<Value, String>,
}

impl SagaRequest {
    /// A request to `topic` with `content` (anything serializable).
    pub fn new(topic: impl Into<String>, content: impl Serialize) -> Self {
        SagaRequest {
            topic: topic.into(),
            content: serde_json::to_value(content).map_err(|e| e.to_string()),
        }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub(crate) fn into_parts(self) -> Result<(String, Value)> {
        let content = self.content.map_err(|e| {
            Error::bad_request(format!("saga request to `{}`: content: {e}", self.topic))
        })?;
        Ok((self.topic, content))
    }
}

/// The reply a remote step received.
#[derive(Clone, Debug, PartialEq)]
pub struct SagaResponse {
    /// 2xx success, 4xx refused by the remote handler, 5xx failed.
    pub status: u16,
    content: Value,
    headers: BTreeMap<String, String>,
}

impl SagaResponse {
    /// A reply.
    pub fn new(status: u16, content: Value, headers: BTreeMap<String, String>) -> Self {
        SagaResponse {
            status,
            content,
            headers,
        }
    }

    /// The content, decoded.
    pub fn content<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.content.clone())
            .map_err(|e| Error::bad_request(format!("unexpected reply content: {e}")))
    }

    /// The content as JSON.
    pub fn json(&self) -> &Value {
        &self.content
    }

    /// The reply's headers.
    pub fn headers(&self) -> &BTreeMap<String, String> {
        &self.headers
    }

    /// The error text of a refused or failed reply (`{"error": ...}`), else the content.
    pub fn message(&self) -> String {
        match self.content.get("error").and_then(Value::as_str) {
            Some(text) => text.to_owned(),
            None => self.content.to_string(),
        }
    }
}

/// The request a paused execution waits on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Waiting {
    /// The request's identifier (its reply carries it too).
    pub identifier: Uuid,
    /// Where it was sent.
    pub topic: String,
}

/// One run of a saga: everything needed to resume it, stored at every pause and at the end.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SagaExecution {
    /// Identity; also the uuid of its transaction in every participant.
    pub uuid: Uuid,
    /// The saga's name.
    pub saga: String,
    /// Where it stands.
    pub status: ExecutionStatus,
    /// The context.
    pub context: SagaContext,
    /// The step being run (see the definition's step paths).
    pub cursor: Vec<usize>,
    /// The steps that ran, in order (compensated in reverse on failure).
    pub done: Vec<Vec<usize>>,
    /// The reply a paused execution waits for.
    pub waiting: Option<Waiting>,
    /// Services that wrote inside its transaction (they reserve, then commit or reject).
    pub related_services: BTreeSet<String>,
    /// Related services whose writes in its transaction are all new roots (every step there said so):
    /// nothing for them to reserve, so they skip the reservation round and only commit (or reject).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub one_phase: BTreeSet<String>,
    /// The transactions it runs inside, outermost first (a saga started inside another one's step).
    pub inherited: Vec<Uuid>,
    /// The user it runs for (the subject of the token of the request that started it).
    pub user: Option<String>,
    /// The caller's token, sent with its remote steps and compensations (verified as of when the
    /// request that started the saga was accepted, so a long saga is not refused when it expires).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<crate::auth::Caller>,
    /// The trace of the request that started it (W3C `traceparent`): its steps carry it when they are
    /// sent outside any handler (resumed after a restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// When it times out (failing and compensating).
    pub deadline: DateTime<Utc>,
    /// Start.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl SagaExecution {
    /// What a status endpoint shows: uuid, saga, status, context, error and participants.
    pub fn summary(&self) -> Value {
        json!({
            "uuid": self.uuid,
            "saga": self.saga,
            "status": self.status,
            "context": self.context,
            "error": self.error,
            "related_services": self.related_services,
            "done": self.done,
            "cursor": self.cursor,
            "waiting_for": self.waiting.as_ref().map(|w| &w.topic),
            "trace_id": self.trace.as_deref().and_then(|t| t.split('-').nth(1)),
            "created_at": crate::store::format_time(self.created_at),
            "updated_at": crate::store::format_time(self.updated_at),
        })
    }

    pub(crate) fn to_record(&self) -> ExecutionRecord {
        ExecutionRecord {
            uuid: self.uuid,
            saga: self.saga.clone(),
            status: self.status,
            data: serde_json::to_value(self).unwrap_or(Value::Null),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }

    /// The execution a store record holds (`store.execution(uuid)`, `store.executions(..)`).
    pub fn from_record(record: ExecutionRecord) -> Result<Self> {
        serde_json::from_value(record.data)
            .map_err(|e| Error::undecodable(format!("saga execution {}", record.uuid), e))
    }
}
