-- Events: one row per committed change, in global order.
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('create', 'update', 'delete')),
    data TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (uuid, version)
);
CREATE INDEX events_name ON events (name, id);

-- Snapshots: the latest state per root, written in the same transaction as its event. data NULL = deleted.
CREATE TABLE snapshots (
    uuid TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    data TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX snapshots_name ON snapshots (name);

-- Outbox: domain messages written with their event, waiting for the relay.
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    identifier TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    key TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at TEXT NOT NULL,
    sent_at TEXT
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;
