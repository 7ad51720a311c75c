//! Runtime of Minos for Rust. Users depend on the `minos` facade, which re-exports what is here.

pub mod domain;
mod error;
pub mod registry;
mod repository;
pub mod store;

pub use domain::{
    Action, Condition, Entity, EntitySet, Event, ExternalEntity, FieldDiff, Model, ModelKind,
    Ordering, Ref, Referable, Root, RootEntity, SetAction, ValueObject, ValueObjectSet,
};
pub use error::{Error, Result};
pub use repository::{Find, Repository, RootEntityExt, RESERVED_FIELDS};

#[doc(hidden)]
pub mod __private {
    pub use crate::domain::{from_json, to_json, DomainError, Field, FieldDiff, Model, ModelKind};
    pub use crate::domain::{Entity, ExternalEntity, Referable, RootEntity, ValueObject};
    pub use crate::registry::ModelRegistration;
    pub use inventory;
    pub use serde;
}
