-- What `syncd status` (and the status page) reads, read through small indexes instead of
-- every lead: the same indexes as SQLite's migration 14, for the same statements.
-- Partial indexes hold only the rows their statement asks for, so a lead's writes pay
-- for one only while the lead is in one of its states: every lead passes through the
-- outbox (leads_queued), the other states are rare.
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
