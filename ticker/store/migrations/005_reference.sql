-- 005: who published an observation (the bank behind an official reference rate).

-- NULL where the source does not say (the ticker never does).
ALTER TABLE observations ADD COLUMN publisher VARCHAR;

-- The daily series, now with the publisher of each day's values.
CREATE OR REPLACE VIEW daily AS
SELECT o.source, o.pair, o.date, o.rate, o.rate_text, o.change_pct, o.change_text,
       o.revision, s.capture_id, o.publisher
FROM sightings s
JOIN captures c ON c.id = s.capture_id
JOIN observations o
  ON o.source = s.source AND o.pair = s.pair AND o.date = s.date AND o.revision = s.revision
QUALIFY row_number() OVER (
    PARTITION BY s.source, s.pair, s.date
    ORDER BY c.captured_at DESC NULLS LAST, c.id DESC
) = 1;
