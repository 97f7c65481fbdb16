-- The leads become a table with row ids, their key an index beside it. A table
-- WITHOUT ROWID keeps each whole row inside its primary key's tree: with a lead's JSON
-- in it (about 500 bytes a row, where SQLite advises under 200), an export whose keys
-- do not come in the store's order (e-mail addresses, UUIDs, an export by date) split
-- and rewrote the tree's pages all over: 65 us a lead inserted against 24 us here, and
-- 21.5 against 13 in the key's order. Rows are now appended; only the narrow index of
-- keys is written out of order.
-- A claim takes the leads due in the order they were queued (next_at, then row id, which
-- the outbox's index holds): a batch's rows lie together in the table. In key order, as
-- before, an export whose keys are scattered had each batch read rows all over it.
-- The pull's look-up compares each row of an export with leads_raw alone (key, raw
-- hash, origin: about a fifth of a lead's row): through the table it read most pages
-- from disk when the keys came out of order (2.2 s for 200,000 unchanged rows, 0.56 s
-- through the index).
-- The step copies every lead once: 5.5 s for 200,000 leads on a 2-core machine.
CREATE TABLE leads_new (
    sink TEXT NOT NULL, key TEXT NOT NULL,
    hash TEXT NOT NULL, raw_hash TEXT, lead_json TEXT NOT NULL,
    action TEXT NOT NULL DEFAULT 'upsert', state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL DEFAULT 0,
    lease_until REAL, last_error TEXT, vendor_ref TEXT, delivered_hash TEXT,
    origin TEXT, line INTEGER, run_id TEXT, klass TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, delivered_at REAL, waits_for TEXT,
    dial_until REAL, claim_token TEXT, source TEXT, doubt_number TEXT,
    PRIMARY KEY (sink, key));
INSERT INTO leads_new (sink, key, hash, raw_hash, lead_json, action, state, attempts,
    next_at, lease_until, last_error, vendor_ref, delivered_hash, origin, line, run_id,
    klass, created_at, updated_at, delivered_at, waits_for, dial_until, claim_token,
    source, doubt_number)
SELECT sink, key, hash, raw_hash, lead_json, action, state, attempts,
    next_at, lease_until, last_error, vendor_ref, delivered_hash, origin, line, run_id,
    klass, created_at, updated_at, delivered_at, waits_for, dial_until, claim_token,
    source, doubt_number
FROM leads;
-- Its indexes and the trigger keeping each sink's ledger go with it; made again below.
DROP TABLE leads;
ALTER TABLE leads_new RENAME TO leads;
CREATE INDEX leads_outbox ON leads (sink, state, next_at);
CREATE INDEX leads_phone ON leads (json_extract(lead_json, '$.phone'));
CREATE INDEX leads_consent ON leads (json_extract(lead_json, '$.consent_until'))
    WHERE delivered_hash IS NOT NULL AND action = 'upsert'
    AND json_extract(lead_json, '$.consent_until') IS NOT NULL;
CREATE INDEX leads_run ON leads (run_id);
CREATE INDEX leads_removals ON leads (sink)
    WHERE action = 'delete' AND delivered_hash IS NOT NULL
    AND state IN ('pending', 'inflight', 'held');
CREATE INDEX leads_queued ON leads (sink, state, updated_at)
    WHERE state IN ('pending', 'inflight');
CREATE INDEX leads_held ON leads (sink, state, last_error) WHERE state = 'held';
CREATE INDEX leads_failed ON leads (sink, state, last_error)
    WHERE state IN ('failed', 'rejected');
CREATE INDEX leads_waiting ON leads (sink, key) WHERE waits_for IS NOT NULL;
CREATE INDEX leads_withdrawals ON leads (attempts)
    WHERE action = 'delete' AND state IN ('pending', 'inflight');
CREATE INDEX leads_raw ON leads (sink, key, raw_hash, origin);
CREATE TRIGGER sink_ledger_with_lead AFTER DELETE ON leads BEGIN
    DELETE FROM sink_ledger WHERE sink = old.sink AND key = old.key;
    DELETE FROM sink_ledger_numbers WHERE sink = old.sink AND key = old.key;
END;
