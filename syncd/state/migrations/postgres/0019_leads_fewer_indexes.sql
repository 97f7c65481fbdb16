-- Fewer index entries per write of a lead. A pull's insert, a claim and a completion
-- each write a new version of the lead, never a HOT update (its state is indexed): an
-- entry into every index of the leads table whose predicate the version matches. Three
-- indexes took an entry of every lead for statements that do without them:
-- - leads_by_key (key): a lead's history by key alone reads the primary key (sink, key),
--   once per sink, the sinks found by a loose scan of it (queries/postgres/history.sql);
-- - leads_inflight (lease_holder) of the leads in flight: a replica renews and gives back
--   its claims naming their sinks, read by sink and state (leads_queued);
-- - leads_run (run_id) becomes leads_run_counted, of the leads the run history counts
--   (delivered or refused) alone: a claim and a pull's insert add no entry to it.
-- One replica pushing 50,000 leads, WAL records per lead: the claim 10.2 -> 7.1, the
-- completion 8.1 -> 7.1, the pull's insert 8.0 -> 6.0 (docs/replicas.md).
-- A replica still on the previous syncd keeps working beside it: its statements still
-- run, some slower (its heartbeat's renewal reads the leads in flight of every sink, a
-- lead's history and the run history's counts read every lead) until it is upgraded.
-- The new index is built first: the build holds the leads table against writes only
-- (reads go on); the drops, last, take it whole until the step commits, a moment. At
-- 1,000,000 leads the step took 0.6 s on a 2-core machine at load 2; the replicas of a
-- rolling upgrade pause their pulls and pushes meanwhile.
CREATE INDEX leads_run_counted ON leads (run_id)
    WHERE state IN ('delivered', 'rejected', 'failed');
DROP INDEX leads_run;
DROP INDEX leads_by_key;
DROP INDEX leads_inflight;
