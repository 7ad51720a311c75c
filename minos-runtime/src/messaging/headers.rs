//! The names of the message headers the runtime reads and writes. Services in other languages set and
//! read the same names (see the README's wire format).

/// The transactions a command runs inside: comma-separated uuids, outermost first (sent by saga steps).
pub const TRANSACTIONS: &str = "transactions";

/// The saga execution a remote step's command, its reply and compensations belong to.
pub const SAGA: &str = "saga";

/// The user a request runs for (a uuid).
pub const USER: &str = "user";

/// On a reply to a command that ran inside transactions: the services that wrote in them,
/// comma-separated (the saga reserves, then commits or rejects, in each).
pub const RELATED_SERVICES: &str = "related_services";

/// On a dead-lettered message: why handling it failed.
pub const ERROR: &str = "error";

/// On a dead-lettered message: the topic it was sent to.
pub const ORIGINAL_TOPIC: &str = "original_topic";
