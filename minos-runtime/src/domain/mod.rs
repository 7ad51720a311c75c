//! The domain layer: models, events and queries. No IO.

mod condition;
mod event;
mod field;
mod model;
mod reference;
mod root;
mod saga;
mod sets;
mod transaction;

pub(crate) use condition::lookup_segments;
pub use condition::{Comparison, Condition, Direction, Document, FieldPath, Ordering, QueryValue};
pub(crate) use event::ENTITY_SET_TYPE_PREFIX;
pub use event::{Action, DomainMessage, Event, FieldDiff, SetAction};
pub use field::{from_json, to_json, Field};
pub use model::{Entity, ExternalEntity, Model, ModelKind, Referable, RootEntity, ValueObject};
pub use reference::Ref;
pub use root::{Meta, Root};
pub use saga::ExecutionStatus;
pub use sets::{EntitySet, ValueObjectSet};
pub use transaction::{InvalidTransition, TransactionEntry, TransactionStatus};

use uuid::Uuid;

/// Errors of the domain layer: diffs that cannot be applied, values that do not (de)serialize.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DomainError {
    /// A field value did not serialize or deserialize.
    #[error("field `{field}`: {source}")]
    Field {
        /// The field.
        field: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// A JSON value did not serialize.
    #[error("JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// A diff does not fit the field it names.
    #[error("field `{field}`: {reason}")]
    InvalidDiff {
        /// The field.
        field: String,
        /// Why.
        reason: String,
    },
    /// A diff names a field the model does not have.
    #[error("`{model}` has no field `{field}`")]
    UnknownField {
        /// The model's name.
        model: &'static str,
        /// The unknown field.
        field: String,
    },
    /// An event does not follow the root's current version.
    #[error("event version {version} of {uuid} does not follow version {}", expected - 1)]
    OutOfOrder {
        /// The root.
        uuid: Uuid,
        /// The event's version.
        version: u64,
        /// The version that would follow.
        expected: u64,
    },
    /// A stream does not start with a creation.
    #[error("the events of {uuid} do not start with a creation")]
    MissingCreate {
        /// The root.
        uuid: Uuid,
    },
    /// A stream goes on after its deletion.
    #[error("the events of {uuid} go on after its deletion")]
    EventAfterDelete {
        /// The root.
        uuid: Uuid,
    },
}
