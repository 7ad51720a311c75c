//! CQRS views on the embedded defaults (memory store, views in an in-memory SQLite database).
#![allow(missing_docs, unreachable_pub)]

const BACKEND: &str = "sqlite";

include!("views_support/cases.rs");
