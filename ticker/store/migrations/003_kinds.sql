-- 003: observations of kinds that publish no day's change (an official reference rate).

-- A kind of source that publishes only the rate stores NULL for the change; the ticker
-- always prints one.
ALTER TABLE observations ALTER COLUMN change_pct DROP NOT NULL;
ALTER TABLE observations ALTER COLUMN change_text DROP NOT NULL;
