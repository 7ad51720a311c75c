-- The reply sent for a command, kept with its inbox entry so a redelivered command is answered again. Text,
-- not JSONB: a reply may hold what JSONB refuses (the NUL character).
ALTER TABLE inbox ADD COLUMN reply TEXT;
