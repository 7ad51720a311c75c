-- The roots a reserved transaction will change, one holder per root among transactions with the same
-- destination (the nil uuid stands for the top level), until it commits or is rejected.
CREATE TABLE transaction_claims (
    destination TEXT NOT NULL,
    root TEXT NOT NULL,
    transaction_uuid TEXT NOT NULL,
    PRIMARY KEY (destination, root)
);
CREATE INDEX transaction_claims_transaction ON transaction_claims (transaction_uuid);
