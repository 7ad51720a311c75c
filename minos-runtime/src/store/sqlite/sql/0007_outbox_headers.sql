-- The headers an outbox message is published with (the trace context of the handler that wrote it).
ALTER TABLE outbox ADD COLUMN headers TEXT;
