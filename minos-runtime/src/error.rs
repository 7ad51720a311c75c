//! The error type of every public operation.

use crate::domain::DomainError;
use crate::store::StoreError;

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong. `status()` gives the HTTP-style status a service reports for it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store refused or failed (conflict, not found, deleted, backend error).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A value did not fit its model.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// An entity operation ran with no repository to use.
    #[error(
        "no repository for this task: run inside a minos handler, wrap the call in `repository.scope(...)` \
         (a task spawned from a handler: `Context::current()?.scope(...)`), or opt into a process-wide \
         one with `Repository::set_default(...)`"
    )]
    NoRepository,
    /// Something that needs the service (its broker, sagas, configuration) ran outside its handlers.
    #[error(
        "no service context: this runs outside a minos handler (a task spawned from a handler keeps the \
         context when spawned as `tokio::spawn(context.scope(...))`)"
    )]
    NoContext,
    /// A caller tried to set a field minos manages.
    #[error("`{field}` is set by minos and cannot be supplied by the caller")]
    ReservedField {
        /// The field.
        field: String,
    },
    /// A transaction was asked for a status change its status machine forbids.
    #[error(transparent)]
    Transaction(#[from] crate::domain::InvalidTransition),
    /// A handler's answer with a status, e.g. `Error::bad_request("bar is empty")`.
    #[error("{message}")]
    Status {
        /// HTTP-style status (400–599).
        status: u16,
        /// What the caller is told.
        message: String,
    },
    /// A broker failed or refused a message.
    #[error("broker: {message}")]
    Broker {
        /// What failed, with the broker's own words.
        message: String,
        /// The broker client's error, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A request through the broker got no reply in time.
    #[error("no reply on `{topic}` within {timeout_ms} ms")]
    Timeout {
        /// The topic the request was sent to.
        topic: String,
        /// The time waited.
        timeout_ms: u64,
    },
    /// The service's configuration is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// The HTTP server cannot listen on its address.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// `host:port`.
        address: String,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// A service type's constructor failed when the service started.
    #[error("service `{service}` could not be built: {source}")]
    ServiceInit {
        /// The service type.
        service: String,
        /// What its constructor answered.
        #[source]
        source: Box<Error>,
    },
    /// A saga definition is invalid (found when the service starts, or when the saga first runs).
    #[error("saga `{saga}`: {source}")]
    InvalidSaga {
        /// The saga's name.
        saga: String,
        /// The problems found.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A stored execution names a saga this binary does not declare.
    #[error("saga `{saga}` is not registered in this binary: declare it with `saga!`")]
    UnknownSaga {
        /// The saga's name.
        saga: String,
    },
    /// Stored or received data does not decode (a saga execution, another service's snapshot).
    #[error("{what} does not decode: {source}")]
    Undecodable {
        /// What was read.
        what: String,
        /// Why it does not decode.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A caller without a valid token, or without a role the route needs (401/403).
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// The route table is invalid (duplicates, no routes).
    #[error("routes: {0}")]
    Routes(String),
    /// An I/O failure of the service itself (binding a port, signals).
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// `find_one` found nothing.
    #[error("no {name} matches the condition")]
    NoMatch {
        /// The type looked for.
        name: &'static str,
    },
}

impl Error {
    /// An error answered with `status` (clamped to 400–599) and `message`.
    pub fn with_status(status: u16, message: impl Into<String>) -> Self {
        Error::Status {
            status: status.clamp(400, 599),
            message: message.into(),
        }
    }

    /// 400: the request is wrong.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::with_status(400, message)
    }

    /// A broker failure: `message` (with the client's own words) and the client's error as its source.
    pub fn broker(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        let source = source.into();
        Error::Broker {
            message: format!("{}: {source}", message.into()),
            source: Some(source),
        }
    }

    /// A broker failure without an underlying client error.
    pub fn broker_message(message: impl Into<String>) -> Self {
        Error::Broker {
            message: message.into(),
            source: None,
        }
    }

    /// Data that does not decode: `what` names it.
    pub fn undecodable(
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Undecodable {
            what: what.into(),
            source: source.into(),
        }
    }

    /// 404: what the request names does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::with_status(404, message)
    }

    /// The message a caller may see: the error itself below 500, a generic text for the service's own
    /// failures (their details go to the log, never to the caller).
    pub fn public_message(&self) -> String {
        if self.status() < 500 || matches!(self, Error::Status { .. } | Error::Timeout { .. }) {
            self.to_string()
        } else {
            "internal error".to_owned()
        }
    }

    /// Whether this is an optimistic-concurrency conflict (someone else changed the root first).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Store(StoreError::Conflict { .. }))
    }

    /// Whether the root or match was not found.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::Store(StoreError::NotFound { .. }) | Error::NoMatch { .. }
        )
    }

    /// Whether the store could not be reached (try again later), as opposed to refusing the operation.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Store(StoreError::Unavailable { .. }))
    }

    /// Whether the root was deleted.
    pub fn is_deleted(&self) -> bool {
        matches!(self, Error::Store(StoreError::AlreadyDeleted { .. }))
    }

    /// The status a service answers with: 400 for bad input, 404 not found, 409 conflict,
    /// 410 deleted, 500 for failures of the service itself.
    pub fn status(&self) -> u16 {
        match self {
            Error::Store(
                StoreError::Conflict { .. }
                | StoreError::UnknownTransaction { .. }
                | StoreError::TransactionClosed { .. }
                | StoreError::TransactionChanged { .. },
            )
            | Error::Transaction(_) => 409,
            Error::Store(StoreError::NotFound { .. }) | Error::NoMatch { .. } => 404,
            Error::Store(StoreError::AlreadyDeleted { .. }) => 410,
            Error::Store(StoreError::InvalidQuery(_)) | Error::ReservedField { .. } => 400,
            Error::Domain(_) => 400,
            Error::Status { status, .. } => *status,
            Error::Auth(error) => error.status(),
            Error::Timeout { .. } => 504,
            Error::Store(StoreError::Unavailable { .. }) => 503,
            _ => 500,
        }
    }
}
