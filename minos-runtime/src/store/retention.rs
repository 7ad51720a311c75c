//! Retention: the rows a service keeps only for a while (published outbox messages, inbox entries,
//! ended saga executions and transactions), removed in batches once they are old enough.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreError;

/// A kind of row that retention removes once it has been finished for long enough.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Retained {
    /// Outbox messages published before the cut-off (unsent ones are never removed).
    Outbox,
    /// Inbox entries (which messages a consumer handled) recorded before the cut-off.
    Inbox,
    /// Saga executions that finished or errored before the cut-off (running and paused ones stay).
    Sagas,
    /// Transaction entries committed or rejected before the cut-off, with anything they still held.
    Transactions,
}

impl Retained {
    /// Every kind.
    pub const ALL: [Retained; 4] = [
        Retained::Outbox,
        Retained::Inbox,
        Retained::Sagas,
        Retained::Transactions,
    ];

    /// The lowercase name used in configuration, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Retained::Outbox => "outbox",
            Retained::Inbox => "inbox",
            Retained::Sagas => "sagas",
            Retained::Transactions => "transactions",
        }
    }
}

/// The retention port: removing finished rows.
#[async_trait]
pub trait RetentionStore: Send + Sync {
    /// Removes up to `limit` rows of `kind` finished before `before` and answers how many it removed.
    /// Safe to run from several processes sharing the store at once: each row is removed once, and
    /// rows another process is removing are skipped rather than waited for.
    async fn purge(
        &self,
        kind: Retained,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<u64, StoreError>;
}
