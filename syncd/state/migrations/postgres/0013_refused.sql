-- Rows refused before, remembered by their raw content (issue 27): a re-sync refuses a
-- row read again with the same raw hash under the same fingerprint from here, without
-- mapping or validating it again (syncd.core.refusals). One row per lead key and sink,
-- the last refusal; pruned with the rejects (retention.rejects_days): a row forgotten is
-- only mapped again.
CREATE TABLE refused (
    sink TEXT NOT NULL, key TEXT NOT NULL, raw_hash TEXT NOT NULL,
    fingerprint TEXT NOT NULL, blocked INTEGER NOT NULL DEFAULT 0, reason TEXT NOT NULL,
    facts TEXT, refused_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (sink, key));
CREATE INDEX refused_at ON refused (refused_at);
