-- Ameyo's memory of each lead moves from `kv` into the sink ledger (issue 30, point 7),
-- as uContact's did in migration 15: one JSON kv row per lead (scope
-- ameyo.delivered:<sink>, name = the lead key) becomes columns of the lead's ledger
-- row, which goes with the lead. Two columns any dialer with ids of its own may use:
-- its id for what it holds, and until when it may dial it. The meanings are the
-- sink's (syncd/sinks/ameyo/ledger.py): phone1 -> number, the record's digest ->
-- sent_hash, call_at -> schedule, customer -> ref, validity -> valid_until.
ALTER TABLE sink_ledger ADD COLUMN ref TEXT;
ALTER TABLE sink_ledger ADD COLUMN valid_until TEXT;
-- Every value was written by json.dumps of a dict with those five keys. A missing
-- phone1 becomes '' (a row with no number reads as nothing delivered; '' as a phone1
-- that differs, as the kv row read).
INSERT INTO sink_ledger (sink, key, number, schedule, sent_hash, ref, valid_until)
SELECT substr(scope, 17), name,
    COALESCE(json_extract(value, '$.phone1'), ''), json_extract(value, '$.call_at'),
    json_extract(value, '$.record'), json_extract(value, '$.customer'),
    json_extract(value, '$.validity')
FROM kv WHERE scope LIKE 'ameyo.delivered:%' AND json_valid(value)
    AND json_type(value) = 'object' AND value != '{}'
ON CONFLICT (sink, key) DO UPDATE SET number = excluded.number,
    schedule = excluded.schedule, sent_hash = excluded.sent_hash, ref = excluded.ref,
    valid_until = excluded.valid_until;
DELETE FROM kv WHERE scope LIKE 'ameyo.delivered:%';
