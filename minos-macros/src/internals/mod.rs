//! Parsing and validation. Never generates code.

pub(crate) mod ast;
pub(crate) mod attr;
pub(crate) mod check;
pub(crate) mod ctxt;
pub(crate) mod service;
pub(crate) mod spec;
pub(crate) mod symbol;
pub(crate) mod view;
