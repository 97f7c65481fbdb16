-- Ameyo's memory of each lead moves from `kv` into the sink ledger (issue 30, point 7):
-- the same step as SQLite's migration 16. One JSON kv row per lead (scope
-- ameyo.delivered:<sink>, name = the lead key) becomes columns of the lead's ledger
-- row, which goes with the lead. Two columns any dialer with ids of its own may use:
-- its id for what it holds, and until when it may dial it. The meanings are the
-- sink's (syncd/sinks/ameyo/ledger.py): phone1 -> number, the record's digest ->
-- sent_hash, call_at -> schedule, customer -> ref, validity -> valid_until.
ALTER TABLE sink_ledger ADD COLUMN ref TEXT, ADD COLUMN valid_until TEXT;
-- Every value was written by json.dumps of a dict with those five keys. A missing
-- phone1 becomes '' (a row with no number reads as nothing delivered; '' as a phone1
-- that differs, as the kv row read).
INSERT INTO sink_ledger (sink, key, number, schedule, sent_hash, ref, valid_until)
SELECT substr(scope, 17), name, COALESCE(v ->> 'phone1', ''), v ->> 'call_at',
    v ->> 'record', v ->> 'customer', v ->> 'validity'
FROM (SELECT scope, name, CAST(value AS jsonb) AS v FROM kv
      WHERE scope LIKE 'ameyo.delivered:%') AS delivered
WHERE jsonb_typeof(v) = 'object' AND v != CAST('{}' AS jsonb)
ON CONFLICT (sink, key) DO UPDATE SET number = excluded.number,
    schedule = excluded.schedule, sent_hash = excluded.sent_hash, ref = excluded.ref,
    valid_until = excluded.valid_until;
DELETE FROM kv WHERE scope LIKE 'ameyo.delivered:%';
