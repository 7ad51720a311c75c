-- The roots a reserved transaction will change, one holder per root among transactions with the same
-- destination (the nil uuid stands for the top level), until it commits or is rejected.
CREATE TABLE transaction_claims (
    destination UUID NOT NULL,
    root UUID NOT NULL,
    transaction_uuid UUID NOT NULL,
    PRIMARY KEY (destination, root)
);
CREATE INDEX transaction_claims_transaction ON transaction_claims (transaction_uuid);
