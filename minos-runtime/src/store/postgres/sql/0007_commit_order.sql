-- Commit order: ids are taken when rows are inserted, not when their transactions commit, so a reader
-- following ids could pass an id whose transaction commits later and never see it. Each event also
-- records the number of the transaction that wrote it; readers order by (xact, id) and read only
-- transactions older than every one still running (pg_snapshot_xmin), whose order can no longer change.
-- Rows written before this migration share its transaction number and keep their id order.
ALTER TABLE events ADD COLUMN xact BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint);
CREATE INDEX events_commit_order ON events (name, xact, id);
