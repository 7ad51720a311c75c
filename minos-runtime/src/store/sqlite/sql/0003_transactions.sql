-- Application transactions and the writes each one holds until it commits or is rejected.
CREATE TABLE transactions (
    uuid TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    destination TEXT,
    updated_at TEXT NOT NULL
);
CREATE INDEX transactions_status ON transactions (status, updated_at);

CREATE TABLE transaction_writes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    transaction_uuid TEXT NOT NULL,
    event TEXT NOT NULL,
    messages TEXT NOT NULL
);
CREATE INDEX transaction_writes_transaction ON transaction_writes (transaction_uuid, id);
