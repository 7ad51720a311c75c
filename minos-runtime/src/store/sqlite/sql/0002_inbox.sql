-- Inbox: the messages each consumer has handled, written in the same transaction as the handler's
-- events, so a redelivered message is recognised and skipped.
CREATE TABLE inbox (
    consumer TEXT NOT NULL,
    identifier TEXT NOT NULL,
    processed_at TEXT NOT NULL,
    PRIMARY KEY (consumer, identifier)
);
