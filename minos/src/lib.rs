#![doc = include_str!("../../README.md")]

// Lets code inside this crate's own tests and doctests expand `::minos::…` paths like user code does.
extern crate self as minos;

pub use minos_macros::{entity, external_entity, root_entity, value_object};
pub use minos_runtime::{
    domain, registry, store, Action, Condition, Entity, EntitySet, Error, Event, ExternalEntity,
    FieldDiff, Find, Model, ModelKind, Ordering, Ref, Referable, Repository, Result, Root,
    RootEntity, RootEntityExt, SetAction, ValueObject, ValueObjectSet, RESERVED_FIELDS,
};

pub use chrono;
pub use serde_json;
pub use uuid::{self, Uuid};

/// What a service module needs: `use minos::prelude::*;`.
pub mod prelude {
    pub use crate::{
        entity, external_entity, root_entity, value_object, Condition, EntitySet, Ordering, Ref,
        Repository, Root, RootEntityExt, ValueObjectSet,
    };
    pub use chrono::{DateTime, Utc};
    pub use serde::{Deserialize, Serialize};
    pub use serde_json::json;
    pub use uuid::Uuid;
}

#[cfg(feature = "testing")]
pub mod testing;

#[doc(hidden)]
pub mod __private {
    pub use minos_runtime::__private::*;
}
