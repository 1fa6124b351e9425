-- 004: what `ticker recover` listed from the public web archives, and what became of it.

-- One row per listing of an archive's index: the range and scope asked for, and where a
-- listing under way goes on (a resume key, a page number), so a run killed at any moment
-- resumes it. Common Crawl has one listing per crawl.
CREATE TABLE recover_listings (
    archive    VARCHAR NOT NULL,           -- wayback, commoncrawl
    source     VARCHAR NOT NULL,
    scope      VARCHAR NOT NULL,           -- site (every page of the host), page
    crawl      VARCHAR NOT NULL,           -- a Common Crawl crawl; '' for the Wayback Machine
    since      VARCHAR NOT NULL,           -- the days asked for (YYYY-MM-DD; '' for no bound)
    until      VARCHAR NOT NULL,
    pass_from  VARCHAR NOT NULL,           -- the first capture time of the pass under way
    resume     VARCHAR,                    -- where that pass goes on; NULL: from its start
    complete   BOOLEAN NOT NULL DEFAULT false,
    listed_at  TIMESTAMPTZ,                -- when a pass last ran to its end
    urlkey     VARCHAR,                    -- scope page: the page's key in the index
    PRIMARY KEY (archive, source, scope, crawl, since, until)
);

CREATE SEQUENCE recover_capture_id_seq START 1;

-- One row per capture an index listed (HTML pages and revisits only), and what became of
-- it. A row listed twice is kept once.
CREATE TABLE recover_captures (
    id           BIGINT NOT NULL DEFAULT nextval('recover_capture_id_seq'),
    archive      VARCHAR NOT NULL,
    source       VARCHAR NOT NULL,
    url          VARCHAR NOT NULL,         -- the page's original URL
    captured_at  TIMESTAMPTZ NOT NULL,     -- the capture time the index gives
    day          DATE NOT NULL,            -- its day in the source's time zone
    day_second   INTEGER NOT NULL,         -- seconds into that day: spreads --per-day
    urlkey       VARCHAR,                  -- the index's key of the URL
    mimetype     VARCHAR,                  -- warc/revisit for a revisit
    status       VARCHAR,                  -- HTTP status; '-' for a revisit
    digest       VARCHAR,                  -- of the payload: a revisit has its original's
    warc_file    VARCHAR,                  -- Common Crawl: the WARC file and byte range
    warc_offset  BIGINT,
    warc_length  BIGINT,
    state        VARCHAR NOT NULL DEFAULT 'listed',  -- listed, stored, moved, skipped, failed
    reason       VARCHAR,                  -- why it was skipped, or could not be fetched
    served_at    TIMESTAMPTZ,              -- the capture the archive served (a redirect;
                                           -- moved: it was of another day)
    archive_path VARCHAR,                  -- the WARC file it was kept in
    capture_id   BIGINT                    -- the captures row it made
);
