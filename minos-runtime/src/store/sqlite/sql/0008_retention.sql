-- Retention removes inbox entries by age: an index on when each was recorded.
CREATE INDEX inbox_processed_at ON inbox (processed_at);
