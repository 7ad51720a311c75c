-- Application transactions and the writes each one holds until it commits or is rejected.
CREATE TABLE transactions (
    uuid UUID PRIMARY KEY,
    status TEXT NOT NULL,
    destination UUID,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX transactions_status ON transactions (status, updated_at);

CREATE TABLE transaction_writes (
    id BIGSERIAL PRIMARY KEY,
    transaction_uuid UUID NOT NULL,
    event JSONB NOT NULL,
    messages JSONB NOT NULL
);
CREATE INDEX transaction_writes_transaction ON transaction_writes (transaction_uuid, id);
