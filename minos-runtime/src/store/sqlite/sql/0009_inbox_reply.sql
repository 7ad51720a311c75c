-- The reply sent for a command, kept with its inbox entry so a redelivered command is answered again.
ALTER TABLE inbox ADD COLUMN reply TEXT;
