-- 001: pages loaded (captures), the observations they carry, and the files already read.

CREATE SEQUENCE capture_id_seq START 1;

-- One row per page loaded: a dump file, a WARC record or a live fetch.
CREATE TABLE captures (
    id             BIGINT PRIMARY KEY,
    source         VARCHAR NOT NULL,
    origin         VARCHAR NOT NULL,         -- file path, path#record, or URL
    url            VARCHAR,                  -- the page's URL when known
    captured_at    TIMESTAMPTZ,              -- capture time when the container gives one
    loaded_at      TIMESTAMPTZ NOT NULL,
    content_hash   VARCHAR NOT NULL,         -- sha1 of the page body
    page_key       VARCHAR NOT NULL UNIQUE,  -- identifies a load: hash, source, time, date
    outcome        VARCHAR NOT NULL,         -- ok, no_ticker, undated, inconsistent
    header_date    DATE,                     -- the date printed after the ticker
    quote_date     DATE,                     -- the date the quotes were stored under
    date_basis     VARCHAR,                  -- header, capture, given
    parser_version INTEGER NOT NULL,
    copies         INTEGER NOT NULL DEFAULT 0,
    detail         VARCHAR                   -- problems found on the page, one per line
);

-- Each distinct set of values seen for (source, pair, date). Revision 1 is the first
-- seen; a later capture with other values adds revision 2, never overwrites.
CREATE TABLE observations (
    source       VARCHAR NOT NULL,
    pair         VARCHAR NOT NULL,
    date         DATE NOT NULL,
    revision     INTEGER NOT NULL,
    rate         DECIMAL(20, 10) NOT NULL,   -- US dollars per one unit of the base
    rate_text    VARCHAR NOT NULL,           -- exactly as printed: '0.00008'
    change_pct   DECIMAL(12, 4) NOT NULL,
    change_text  VARCHAR NOT NULL,           -- exactly as printed: '-0' keeps its sign
    capture_id   BIGINT NOT NULL,            -- the capture that first showed these values
    PRIMARY KEY (source, pair, date, revision)
);

-- Every capture's reading of every pair: which revision it showed.
CREATE TABLE sightings (
    capture_id BIGINT NOT NULL,
    source     VARCHAR NOT NULL,
    pair       VARCHAR NOT NULL,
    date       DATE NOT NULL,
    revision   INTEGER NOT NULL
);

-- Files backfill has read, so a re-run skips the unchanged ones at the cost of a stat.
CREATE TABLE loaded_files (
    file_key  VARCHAR PRIMARY KEY,           -- path, size, mtime, source, --date, parser
    path      VARCHAR NOT NULL,
    pages     INTEGER NOT NULL,
    loaded_at TIMESTAMPTZ NOT NULL
);

-- The daily series: for each source, pair and date, the values of the latest capture
-- (by capture time where known, then by load order).
CREATE VIEW daily AS
SELECT o.source, o.pair, o.date, o.rate, o.rate_text, o.change_pct, o.change_text,
       o.revision, s.capture_id
FROM sightings s
JOIN captures c ON c.id = s.capture_id
JOIN observations o
  ON o.source = s.source AND o.pair = s.pair AND o.date = s.date AND o.revision = s.revision
QUALIFY row_number() OVER (
    PARTITION BY s.source, s.pair, s.date
    ORDER BY c.captured_at DESC NULLS LAST, c.id DESC
) = 1;
