//! Scaffolding shared by the workspace's own tests, benchmarks and examples; not published.
//!
//! Every helper that reaches an outside service reads its address from the environment and panics,
//! naming the address, when the service does not answer: a test that needs it never passes without it.
//! The store conformance suite and the models it stores are not here: they are public, in
//! `minos::testing` (feature `testing`), for authors of other stores.

pub mod bench;
pub mod http;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod otlp;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod process;
pub mod relay;
