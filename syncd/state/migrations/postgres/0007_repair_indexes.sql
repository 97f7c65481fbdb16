-- A repair, for stores made by an early syncd. Migration 1 was edited in place after it
-- had shipped (never again: a change is a new file), so a store it made before then
-- lacks leads_inflight (a dead replica's leases are found by it) and has leads_outbox
-- without `key` (a claim then sorts the outbox). Every index of the schema is created
-- here if missing, and leads_outbox is rebuilt if it is the early one; on a store that
-- has them all this changes nothing.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_indexes
               WHERE schemaname = current_schema() AND indexname = 'leads_outbox'
               AND indexdef NOT LIKE '%(sink, state, next_at, key)') THEN
        DROP INDEX leads_outbox;
    END IF;
END
$$;
CREATE INDEX IF NOT EXISTS leads_outbox ON leads (sink, state, next_at, key);
CREATE INDEX IF NOT EXISTS leads_by_key ON leads (key);
CREATE INDEX IF NOT EXISTS leads_phone ON leads ((lead_json::jsonb ->> 'phone'));
CREATE INDEX IF NOT EXISTS leads_inflight ON leads (lease_holder) WHERE state = 'inflight';
CREATE INDEX IF NOT EXISTS rejects_origin ON rejects (source, origin, line);
CREATE INDEX IF NOT EXISTS rejects_run ON rejects (run_id);
CREATE INDEX IF NOT EXISTS events_key ON events (key, sink);
CREATE INDEX IF NOT EXISTS events_at ON events (at);
CREATE INDEX IF NOT EXISTS dnc_unchecked ON dnc_numbers (list, checked);
CREATE INDEX IF NOT EXISTS dnc_blocked_list ON dnc_blocked (list);
CREATE INDEX IF NOT EXISTS leads_consent ON leads ((lead_json::jsonb ->> 'consent_until'))
    WHERE delivered_hash IS NOT NULL AND action = 'upsert'
    AND (lead_json::jsonb ->> 'consent_until') IS NOT NULL;
