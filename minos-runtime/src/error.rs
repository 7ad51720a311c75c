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
        "no repository for this task: run inside a minos service, wrap the call in `repository.scope(...)`, \
         or call `Repository::set_default(...)` once at start-up"
    )]
    NoRepository,
    /// A caller tried to set a field minos manages.
    #[error("`{field}` is set by minos and cannot be supplied by the caller")]
    ReservedField {
        /// The field.
        field: String,
    },
    /// `find_one` found nothing.
    #[error("no {name} matches the condition")]
    NoMatch {
        /// The type looked for.
        name: &'static str,
    },
}

impl Error {
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

    /// Whether the root was deleted.
    pub fn is_deleted(&self) -> bool {
        matches!(self, Error::Store(StoreError::AlreadyDeleted { .. }))
    }

    /// The status a service answers with: 400 for bad input, 404 not found, 409 conflict,
    /// 410 deleted, 500 for failures of the service itself.
    pub fn status(&self) -> u16 {
        match self {
            Error::Store(StoreError::Conflict { .. }) => 409,
            Error::Store(StoreError::NotFound { .. }) | Error::NoMatch { .. } => 404,
            Error::Store(StoreError::AlreadyDeleted { .. }) => 410,
            Error::Store(StoreError::InvalidQuery(_)) | Error::ReservedField { .. } => 400,
            Error::Domain(_) => 400,
            _ => 500,
        }
    }
}
