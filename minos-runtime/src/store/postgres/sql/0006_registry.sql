-- Service instances of a registry, their leases and health, and the registry's version.
CREATE TABLE registry_instances (
    service TEXT NOT NULL,
    instance TEXT NOT NULL,
    address TEXT NOT NULL,
    port INTEGER NOT NULL,
    endpoints JSONB NOT NULL,
    status BOOLEAN NOT NULL,
    healthy BOOLEAN NOT NULL,
    registered_at TIMESTAMPTZ NOT NULL,
    last_seen TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (service, instance)
);
CREATE INDEX registry_instances_last_seen ON registry_instances (last_seen);
CREATE TABLE registry_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO registry_version (id, version) VALUES (1, 0);
