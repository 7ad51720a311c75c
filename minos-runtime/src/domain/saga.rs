//! Where a saga execution stands (stored with it, shown by its status endpoints).

use serde::{Deserialize, Serialize};

/// Where an execution stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionStatus {
    /// Not started.
    Created,
    /// Running steps (or committing at the end).
    Running,
    /// Waiting for a remote step's reply (persisted).
    Paused,
    /// Every step ran and the participants committed.
    Finished,
    /// A step failed: compensations ran and the participants rejected.
    Errored,
}

impl ExecutionStatus {
    /// The lowercase name used on the wire and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::Created => "created",
            ExecutionStatus::Running => "running",
            ExecutionStatus::Paused => "paused",
            ExecutionStatus::Finished => "finished",
            ExecutionStatus::Errored => "errored",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(text: &str) -> Option<Self> {
        [
            ExecutionStatus::Created,
            ExecutionStatus::Running,
            ExecutionStatus::Paused,
            ExecutionStatus::Finished,
            ExecutionStatus::Errored,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    /// Whether the execution ended.
    pub fn is_final(self) -> bool {
        matches!(self, ExecutionStatus::Finished | ExecutionStatus::Errored)
    }
}
