//! Application transaction entries and their status machine.
//!
//! A transaction is pending while writes are added to it, reserving/reserved while its participants check
//! that nothing conflicts, committing/committed once its writes go to its destination (the enclosing
//! transaction, or the store itself at the top level), or rejected, after which its writes vanish.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Where a transaction stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransactionStatus {
    /// Writes may be added.
    Pending,
    /// Checking that no sibling transaction touched the same versions.
    Reserving,
    /// Checked; waiting for commit or reject.
    Reserved,
    /// Its writes are moving to the destination.
    Committing,
    /// Done; final.
    Committed,
    /// Abandoned, its writes gone; final.
    Rejected,
}

impl TransactionStatus {
    /// The lowercase name used on the wire and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            TransactionStatus::Pending => "pending",
            TransactionStatus::Reserving => "reserving",
            TransactionStatus::Reserved => "reserved",
            TransactionStatus::Committing => "committing",
            TransactionStatus::Committed => "committed",
            TransactionStatus::Rejected => "rejected",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(text: &str) -> Option<Self> {
        [
            TransactionStatus::Pending,
            TransactionStatus::Reserving,
            TransactionStatus::Reserved,
            TransactionStatus::Committing,
            TransactionStatus::Committed,
            TransactionStatus::Rejected,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    /// Whether `self → next` is allowed: pending → {pending, reserving, reserved, rejected}; reserving →
    /// {reserved, rejected}; reserved → {committing, rejected}; committing → committed; committed and
    /// rejected are final. (Pending → reserved directly: a reservation with no roots to claim.)
    pub fn can_become(self, next: TransactionStatus) -> bool {
        use TransactionStatus::*;
        matches!(
            (self, next),
            (Pending, Pending | Reserving | Reserved | Rejected)
                | (Reserving, Reserved | Rejected)
                | (Reserved, Committing | Rejected)
                | (Committing, Committed)
        )
    }

    /// Whether no transition leaves this status.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TransactionStatus::Committed | TransactionStatus::Rejected
        )
    }
}

/// A transition that the status machine does not allow.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("transaction {uuid} cannot go from {from:?} to {to:?}")]
pub struct InvalidTransition {
    /// The transaction.
    pub uuid: Uuid,
    /// Its status.
    pub from: TransactionStatus,
    /// The status asked for.
    pub to: TransactionStatus,
}

/// The current time at the precision stores keep.
fn now_micros() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// One application transaction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransactionEntry {
    /// Identity (a saga's transaction has the saga execution's uuid).
    pub uuid: Uuid,
    /// Where it stands.
    pub status: TransactionStatus,
    /// The enclosing transaction; `None` at the top level.
    pub destination: Option<Uuid>,
    /// Last change of status.
    pub updated_at: DateTime<Utc>,
}

impl TransactionEntry {
    /// A new pending transaction inside `destination` (or at the top level).
    pub fn new(uuid: Uuid, destination: Option<Uuid>) -> Self {
        TransactionEntry {
            uuid,
            status: TransactionStatus::Pending,
            destination,
            updated_at: now_micros(),
        }
    }

    /// Moves to `next` if the status machine allows it; a conflict error otherwise (HTTP 409).
    pub fn transition(&mut self, next: TransactionStatus) -> Result<(), InvalidTransition> {
        if !self.status.can_become(next) {
            return Err(InvalidTransition {
                uuid: self.uuid,
                from: self.status,
                to: next,
            });
        }
        self.status = next;
        self.updated_at = now_micros();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::TransactionStatus::*;
    use super::*;

    const ALL: [TransactionStatus; 6] = [
        Pending, Reserving, Reserved, Committing, Committed, Rejected,
    ];

    #[test]
    fn exactly_the_allowed_transitions() {
        let allowed = [
            (Pending, Pending),
            (Pending, Reserving),
            (Pending, Reserved),
            (Pending, Rejected),
            (Reserving, Reserved),
            (Reserving, Rejected),
            (Reserved, Committing),
            (Reserved, Rejected),
            (Committing, Committed),
        ];
        for from in ALL {
            for to in ALL {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from:?} -> {to:?}"
                );
            }
        }
        assert!(Committed.is_final() && Rejected.is_final() && !Reserved.is_final());
        for status in ALL {
            assert_eq!(TransactionStatus::parse(status.as_str()), Some(status));
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::json!(status.as_str())
            );
        }
    }

    #[test]
    fn entries_move_through_a_commit_and_refuse_going_back() {
        let mut entry = TransactionEntry::new(Uuid::now_v7(), None);
        for next in [Reserving, Reserved, Committing, Committed] {
            entry.transition(next).unwrap();
        }
        let error = entry.transition(Pending).unwrap_err();
        assert_eq!((error.from, error.to), (Committed, Pending));
        assert_eq!(entry.status, Committed);
        let json = serde_json::to_value(&entry).unwrap();
        assert_eq!(json["status"], serde_json::json!("committed"));
    }
}
