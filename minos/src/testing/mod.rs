//! The store conformance suite (feature `testing`), for every store backend, this crate's and others'.
//!
//! [`conformance`] holds the cases and [`conformance_tests!`](crate::conformance_tests) generates one
//! test per case; [`models`] holds the models the suite stores.

pub mod conformance;
pub mod models;
