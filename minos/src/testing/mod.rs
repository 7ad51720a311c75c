//! Test helpers (feature `testing`): sample models and the store conformance suite.

pub mod conformance;
pub mod http;
pub mod models;
#[cfg(feature = "postgres")]
pub mod postgres;
