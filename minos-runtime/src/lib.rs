//! Runtime of Minos for Rust. Users depend on the `minos` facade, which re-exports what is here.

pub mod auth;
pub mod dashboard;
pub mod discovery;
pub mod domain;
mod error;
pub mod gateway;
pub(crate) mod hash;
pub(crate) mod http;
pub(crate) mod keyed_lock;
pub mod launcher;
mod memory;
pub mod messaging;
#[doc(hidden)]
pub mod net;
pub mod registry;
mod repository;
pub mod retention;
pub mod routing;
pub mod saga;
pub(crate) mod scheduler;
pub mod schema;
pub mod store;
pub mod telemetry;
pub mod transaction;
pub mod views;

pub use domain::{
    Action, Condition, Entity, EntitySet, Event, ExternalEntity, FieldDiff, Model, ModelKind,
    Ordering, QueryValue, Ref, Referable, Root, RootEntity, SetAction, ValueObject, ValueObjectSet,
};
pub use error::{Error, Result};
pub use launcher::{Config, Launcher, RunningService};
pub use messaging::{BrokerClient, BrokerMessage, Reply};
pub use repository::{Find, Repository, RootEntityExt, RESERVED_FIELDS};
pub use routing::{Context, IntoResponse, Next, Request, Response, ServiceExt};
pub use views::{View, ViewExt, Views};

#[doc(hidden)]
pub mod __private {
    pub use crate::auth::Access;
    pub use crate::domain::{from_json, to_json, DomainError, Field, FieldDiff, Model, ModelKind};
    pub use crate::domain::{
        Entity, ExternalEntity, Referable, RootEntity, SetAction, ValueObject,
    };
    pub use crate::registry::{FieldSpec, ModelRegistration};
    pub use crate::routing::{service_instance, BuildFuture, Context, ServiceEntry, ServiceInit};
    pub use crate::routing::{
        BrokerKind, HandlerFuture, IntoResponse, MiddlewareEntry, Next, Request, Route, RouteEntry,
        Service, ServiceKind,
    };
    pub use crate::schema::{ModelSchema, Probe, SchemaFn, ViaAny, ViaSchema};
    pub use crate::views::{ColumnKind, View, ViewColumn, ViewDef, ViewEntry};
    pub use inventory;
    pub use schemars;
    pub use serde;
}
