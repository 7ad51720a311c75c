-- Events: one row per committed change, in global order.
CREATE TABLE events (
    id BIGSERIAL PRIMARY KEY,
    uuid UUID NOT NULL,
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('create', 'update', 'delete')),
    data JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    UNIQUE (uuid, version)
);
CREATE INDEX events_name ON events (name, id);

-- Snapshots: the latest state per root, written in the same transaction as its events. data NULL = deleted.
-- seq keeps insertion order, the default order of query results.
CREATE TABLE snapshots (
    uuid UUID PRIMARY KEY,
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    data JSONB,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    seq BIGSERIAL NOT NULL
);
CREATE INDEX snapshots_name ON snapshots (name, seq);

-- Outbox: domain messages written with their event, waiting for the relay.
CREATE TABLE outbox (
    id BIGSERIAL PRIMARY KEY,
    identifier UUID NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    key TEXT NOT NULL,
    payload JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    sent_at TIMESTAMPTZ
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;
