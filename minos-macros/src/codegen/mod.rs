//! Code generation. Never reports user errors: everything here has passed `internals::check`.

pub(crate) mod model;
pub(crate) mod schema;
pub(crate) mod service;
pub(crate) mod view;
