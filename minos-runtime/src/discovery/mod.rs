//! Service discovery: what a registry stores about each service instance, how a request is resolved to
//! the instance that serves it, and the wire shapes a registry accepts (the same as the original Minos
//! registry, so services written with minos-python register too).
//!
//! This module holds the parts every registry and client share: registrations and their validation,
//! path templates and the rule that picks the most specific route.

mod registration;
mod template;

pub use registration::{Endpoint, Registration, RegistrationError};
pub use template::{PathTemplate, Routes};
