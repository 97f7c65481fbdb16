-- What `syncd status` (and the status page) reads, read through small indexes instead of
-- every lead: on a million leads these statements scanned the table, 2 s in all (1 s
-- for the held leads of gate_counts alone). Partial indexes hold only the rows their
-- statement asks for, so a lead's writes pay for one only while the lead is in one of
-- its states. Every lead passes through the outbox: leads_queued costs a first sync
-- about 4 us a lead (3 index writes: queued, claimed, delivered); the other states are
-- rare and their indexes cost the outbox's leads a test of their WHERE.
-- The state column is in each index although its WHERE fixes it: SQLite reads a row's
-- state again unless the index carries it.
-- oldest_pending, and the pending count per sink
CREATE INDEX leads_queued ON leads (sink, state, updated_at)
    WHERE state IN ('pending', 'inflight');
-- gate_counts: the held leads by the code of their reason
CREATE INDEX leads_held ON leads (sink, state, last_error) WHERE state = 'held';
-- failure_reasons
CREATE INDEX leads_failed ON leads (sink, state, last_error)
    WHERE state IN ('failed', 'rejected');
-- waiting: the leads set aside behind another lead of their number
CREATE INDEX leads_waiting ON leads (sink, key) WHERE waits_for IS NOT NULL;
-- failing_withdrawals: the queued removals, most tried first
CREATE INDEX leads_withdrawals ON leads (attempts)
    WHERE action = 'delete' AND state IN ('pending', 'inflight');
-- gate_counts: the rows the gate blocked, among every refused row kept
CREATE INDEX rejects_blocked ON rejects (sink, reason) WHERE reason LIKE 'blocked (%';
-- outcome_counts: per dialer, its outcomes, those of the last 24 hours and the latest
CREATE INDEX outcomes_observed ON outcomes (sink, observed_at);
-- refused_writebacks
CREATE INDEX writeback_refused ON writeback_marks (writeback, refused)
    WHERE refused IS NOT NULL;
-- last_run, recent_runs: the newest runs first
CREATE INDEX runs_started ON runs (started_at);
