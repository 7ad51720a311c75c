-- Saga executions: the persisted state of each run, written at every pause and at the end.
CREATE TABLE saga_executions (
    uuid TEXT PRIMARY KEY,
    saga TEXT NOT NULL,
    status TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX saga_executions_status ON saga_executions (status, updated_at);
