//! Test helpers (feature `testing`): sample models and the store conformance suite.

pub mod bench;
pub mod conformance;
pub mod http;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod models;
#[cfg(feature = "postgres")]
pub mod postgres;
