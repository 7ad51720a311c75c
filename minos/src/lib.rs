#![doc = include_str!("../../README.md")]

// Lets code inside this crate's own tests and doctests expand `::minos::…` paths like user code does.
extern crate self as minos;

pub use minos_macros::{
    command_service, enroute, entity, external_entity, middleware, query_service, root_entity,
    schema, value_object, view,
};
pub use minos_runtime::{
    auth, dashboard, discovery, domain, gateway, launcher, messaging, registry, retention, routing,
    saga, store, telemetry, transaction, views, Action, BrokerClient, BrokerMessage, Condition,
    Config, Context, Entity, EntitySet, Error, Event, ExternalEntity, FieldDiff, Find,
    IntoResponse, Launcher, Model, ModelKind, Next, Ordering, QueryValue, Ref, Referable, Reply,
    Repository, Request, Response, Result, Root, RootEntity, RootEntityExt, RunningService,
    ServiceExt, SetAction, ValueObject, ValueObjectSet, View, ViewExt, Views, RESERVED_FIELDS,
};

pub use chrono;
/// JSON Schemas (the `schemars` crate), for implementing `JsonSchema` by hand; `#[schema]` derives it.
pub use schemars;
pub use serde_json;
/// Logging from handlers: `minos::tracing::info!(...)`. Lines written inside a handler carry its span's
/// fields (`service`, `trace_id`, `handler`, the message's id) in text and JSON logs, and are shipped
/// with `log.aggregate`.
pub use tracing;
pub use uuid::{self, Uuid};

/// What a service module needs: `use minos::prelude::*;`.
///
/// It brings `Result` (= `minos::Result`, whose error type defaults to [`Error`]), the attributes,
/// the entity operations ([`RootEntityExt`]), requests and where they came from ([`Origin`](routing::Origin)),
/// the service [`Context`], sagas and their [`SagaManager`](saga::SagaManager), explicit transactions
/// ([`TransactionScope`](transaction::TransactionScope), `repository.transactions()`) with their statuses,
/// and `json!`.
pub mod prelude {
    pub use crate::routing::Origin;
    pub use crate::saga::{
        Conditional, ExecutionStatus, Saga, SagaContext, SagaExecution, SagaManager, SagaRequest,
        SagaResponse, SagaServiceExt,
    };
    pub use crate::transaction::{TransactionScope, TransactionStatus};
    pub use crate::{
        command_service, enroute, entity, external_entity, middleware, query_service, root_entity,
        schema, value_object, view, Condition, Context, EntitySet, Error, Next, Ordering, Ref,
        Repository, Request, Response, Result, Root, RootEntityExt, ServiceExt, ValueObjectSet,
        ViewExt, Views,
    };
    pub use chrono::{DateTime, Utc};
    pub use serde_json::{json, Value};
    pub use uuid::Uuid;
}

#[cfg(feature = "testing")]
pub mod testing;

#[doc(hidden)]
pub mod __private {
    pub use minos_runtime::__private::*;
}
