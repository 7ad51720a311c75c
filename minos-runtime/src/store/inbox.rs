//! The inbox: which messages each consumer handled, and the reply it sent for each command.

use async_trait::async_trait;
use serde_json::Value;
use uuid::Uuid;

use super::StoreError;

/// A consumer's record of a handled message. Two entries are the same entry when their consumer and
/// identifier are.
#[derive(Clone, Debug)]
pub struct InboxEntry {
    /// The consumer: the service (consumer group) that handled it.
    pub consumer: String,
    /// The message's identifier.
    pub identifier: Uuid,
    /// The reply sent for it (a command's: `{"status", "content", "headers"}`), kept with the entry so
    /// a redelivered command is answered again instead of leaving its sender waiting.
    pub reply: Option<Value>,
}

impl InboxEntry {
    /// The entry of `consumer` for message `identifier`, without a reply.
    pub fn new(consumer: impl Into<String>, identifier: Uuid) -> Self {
        InboxEntry {
            consumer: consumer.into(),
            identifier,
            reply: None,
        }
    }
}

impl PartialEq for InboxEntry {
    fn eq(&self, other: &Self) -> bool {
        self.consumer == other.consumer && self.identifier == other.identifier
    }
}

impl Eq for InboxEntry {}

impl std::hash::Hash for InboxEntry {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.consumer.hash(state);
        self.identifier.hash(state);
    }
}

/// The largest reply kept with an inbox entry (its JSON text); a larger one is sent but not kept.
pub const INBOX_REPLY_MAX: usize = 64 * 1024;

/// The reply of `entry` as stored: its JSON text, when it has one no larger than [`INBOX_REPLY_MAX`].
pub(crate) fn stored_reply_text(entry: &InboxEntry) -> Option<String> {
    let text = serde_json::to_string(entry.reply.as_ref()?).ok()?;
    (text.len() <= INBOX_REPLY_MAX).then_some(text)
}

/// The inbox port: which messages a consumer has handled.
#[async_trait]
pub trait InboxStore: Send + Sync {
    /// Whether the entry is recorded.
    async fn is_processed(&self, entry: &InboxEntry) -> Result<bool, StoreError>;

    /// The reply recorded with the entry, if it is recorded with one. The default keeps none.
    async fn recorded_reply(&self, entry: &InboxEntry) -> Result<Option<Value>, StoreError> {
        let _ = entry;
        Ok(None)
    }

    /// Records now the entries the store holds back to record together, and answers once those held
    /// before the call are recorded (an error when the database refuses them or that takes over 5 s).
    /// The PostgreSQL store holds those of handlers that wrote nothing and owe no reply for about 10
    /// ms (its look-ups see them meanwhile); a stopping service calls this after its consumers
    /// stopped. The default holds none.
    async fn settle(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
