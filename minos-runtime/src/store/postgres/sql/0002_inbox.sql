-- Inbox: the messages each consumer has handled, written in the same transaction as the handler's
-- events, so a redelivered message is recognised and skipped.
CREATE TABLE inbox (
    consumer TEXT NOT NULL,
    identifier UUID NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, identifier)
);
