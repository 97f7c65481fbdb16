-- History for the status page's charts (issue 28): per sink and hour, leads delivered,
-- the outbox's largest backlog, and how long leads took from being read to the dialer
-- (counts per latency bucket, syncd.core.latency). Pruned by retention.stats_days.
CREATE TABLE stats (
    sink TEXT NOT NULL, at REAL NOT NULL, metric TEXT NOT NULL,
    bucket INTEGER NOT NULL DEFAULT 0, n INTEGER NOT NULL,
    PRIMARY KEY (sink, at, metric, bucket)) WITHOUT ROWID;
CREATE INDEX stats_at ON stats (at);
-- The run history counts, per run, the leads it read that a dialer holds.
CREATE INDEX leads_run ON leads (run_id);
