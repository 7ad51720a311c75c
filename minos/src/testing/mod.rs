//! Testing services (feature `testing`): start a service, or several sharing one in-process broker, in
//! one line; talk to it over HTTP with an async client and over the broker; wait for what happens in
//! the background. Also the store conformance suite, for every store backend, this crate's and others'.
//!
//! ```no_run
//! use minos::prelude::*;
//! use minos::testing::{eventually, TestService};
//!
//! # async fn example() -> minos::Result<()> {
//! let foo = TestService::named("foo").await?;   // memory store, in-process broker, a free port
//! let created = foo.http().post("/foos", json!({"bar": "x"})).await?;
//! assert_eq!(created.status, 200);
//! let uuid = created.json()["uuid"].as_str().unwrap().to_owned();
//! let read = foo.http().get(&format!("/foos/{uuid}")).await?;
//! assert_eq!(read.json()["bar"], json!("x"));
//! eventually("the FooCreated handler ran", std::time::Duration::from_secs(5), || async {
//!     true // check something the handler did
//! })
//! .await;
//! foo.stop().await;
//! # Ok(())
//! # }
//! ```
//!
//! [`conformance`] holds the store cases and [`conformance_tests!`](crate::conformance_tests) generates
//! one test per case; [`models`] holds the models the suite stores.

pub mod conformance;
mod http;
pub mod models;
mod scenario;
mod service;

pub use http::{TestClient, TestResponse};
pub use scenario::{Outcome, Scenario};
pub use service::{eventually, test_config, TestService};
