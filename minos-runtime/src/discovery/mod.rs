//! Service discovery: what a registry stores about each service instance, how a request is resolved to
//! the instance that serves it, and the wire shapes a registry accepts (the same as the original Minos
//! registry, so services written with minos-python register too).
//!
//! The registry itself ([`Registry`], served by [`serve_registry`]; `minos discovery` runs it) keeps
//! instances in the project's stores, with leases renewed by heartbeats, health probes, and a version
//! that lets a gateway cache the table.

mod client;
mod registration;
mod registry;
mod server;
mod template;

pub use client::DiscoveryConfig;
pub(crate) use client::{RegistrationHandle, SelfRegistration};
pub use registration::{Endpoint, Registration, RegistrationError};
pub use registry::{Registry, RegistryConfig};
pub use server::{serve_registry, RegistryServer};
pub use template::{PathTemplate, Routes};
