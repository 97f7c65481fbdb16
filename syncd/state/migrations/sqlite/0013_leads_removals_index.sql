-- The queued removals of leads the dialer holds (queued_removals: each push of new leads
-- asks for them): read through this index, not by scanning every lead of the sink
-- (25 ms a batch at 100,000 leads, growing with the store). PostgreSQL has had it
-- since its migration 11.
CREATE INDEX leads_removals ON leads (sink)
    WHERE action = 'delete' AND delivered_hash IS NOT NULL
    AND state IN ('pending', 'inflight', 'held');
