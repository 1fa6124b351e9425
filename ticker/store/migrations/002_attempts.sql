-- 002: every live fetch attempt (ticker scrape, ticker run) and what came of it.

-- One row per source per scrape: the HTTP exchange, its outcome and what it stored.
-- id is made by ticker (a UUID), so an attempt recorded late (the database was locked
-- during its job) is never recorded twice.
CREATE TABLE attempts (
    id             VARCHAR PRIMARY KEY,
    source         VARCHAR NOT NULL,
    url            VARCHAR NOT NULL,         -- the configured URL
    final_url      VARCHAR,                  -- after redirects
    started_at     TIMESTAMPTZ NOT NULL,     -- also the capture time of the page fetched
    duration_ms    INTEGER NOT NULL,
    http_status    INTEGER,                  -- NULL when no response arrived
    bytes          BIGINT NOT NULL DEFAULT 0, -- body bytes read
    outcome        VARCHAR NOT NULL,         -- ok, not_modified, no_ticker, http_error, ...
    error          VARCHAR,                  -- what went wrong, and how to fix it
    etag           VARCHAR,                  -- validators for the next conditional GET
    last_modified  VARCHAR,
    archive_path   VARCHAR,                  -- the WARC file the page was kept in
    capture_id     BIGINT,                   -- the captures row the page made, if stored
    new            INTEGER NOT NULL DEFAULT 0,  -- observations: new dates,
    already        INTEGER NOT NULL DEFAULT 0,  -- values already stored,
    revised        INTEGER NOT NULL DEFAULT 0,  -- other values for a stored date
    recorded_at    TIMESTAMPTZ NOT NULL      -- later than started_at when it waited on a lock
);
