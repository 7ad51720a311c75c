//! The names of the message headers the runtime reads and writes. Services in other languages set and
//! read the same names (see the README's wire format).

/// The transactions a command runs inside: comma-separated uuids, outermost first (sent by saga steps).
pub const TRANSACTIONS: &str = "transactions";

/// The saga execution a remote step's command, its reply and compensations belong to.
pub const SAGA: &str = "saga";

/// The user a request runs for: the verified subject of its token when the service checks tokens.
pub const USER: &str = "user";

/// The caller's access token, `Bearer <token>`, passed on with the requests a handler makes.
pub const AUTHORIZATION: &str = "authorization";

/// When the caller's token was accepted (seconds since the epoch): requests a handler makes are
/// verified as of then, so work started with a valid token is not refused when it expires later.
pub const AUTH_AT: &str = "auth_at";

/// On a reply to a command that ran inside transactions: the services that wrote in them,
/// comma-separated (the saga reserves, then commits or rejects, in each).
pub const RELATED_SERVICES: &str = "related_services";

/// On a reply to a command that ran inside a top-level transaction and wrote only new roots: the name of
/// the service that ran it. Such writes cannot be refused by a reservation, so the saga commits them
/// without one (one phase) unless another of its steps there changed existing roots.
pub const ONE_PHASE: &str = "one_phase";

/// When a request (a command or query) stops being worth running: milliseconds since the epoch. Set
/// from the sender's timeout; a service does not run a request whose deadline has passed (its sender
/// gave up), so history on a long-lived broker is never executed again.
pub const DEADLINE: &str = "deadline";

/// On a domain event published from a store's outbox: where the store's log put the event
/// (`COMMIT.ID`, as view positions are written). A handler in the service that wrote it (any replica)
/// waits for its views to reach that position without reading the log.
pub const POSITION: &str = "position";

/// On a dead-lettered message: why handling it failed.
pub const ERROR: &str = "error";

/// On a dead-lettered message: the topic it was sent to.
pub const ORIGINAL_TOPIC: &str = "original_topic";

/// On a re-driven dead letter: the service it is for (the one that parked it). Every other
/// service subscribed to the topic skips it, having handled the original.
pub const REDRIVEN_FOR: &str = "redriven_for";

/// On a re-driven dead letter: the identifier of the message that was parked.
pub const REDRIVEN_FROM: &str = "redriven_from";
