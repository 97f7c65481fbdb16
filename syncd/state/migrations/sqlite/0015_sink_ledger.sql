-- A sink's memory of each lead at its dialer, in typed columns (issue 30, point 7): what
-- it last placed there, the call ids it counted, the newest call its outcome is from,
-- the disposition it last sent. uContact kept these as JSON in `kv` rows of string
-- scopes, ~1 KB a lead; here they are one narrow row, and the number -> lead index a
-- row per number form. The columns' meanings are the sink's (syncd/sinks/ucontact/ledger.py).
CREATE TABLE sink_ledger (
    sink TEXT NOT NULL, key TEXT NOT NULL,
    number TEXT, alternatives TEXT, mode TEXT, schedule TEXT, held TEXT,
    late TEXT, late_at REAL, late_until REAL, sent_hash TEXT, sent_at REAL, check_at REAL,
    calls TEXT, newest_call REAL, disposition TEXT,
    PRIMARY KEY (sink, key)) WITHOUT ROWID;
CREATE TABLE sink_ledger_numbers (
    sink TEXT NOT NULL, number TEXT NOT NULL, key TEXT NOT NULL,
    PRIMARY KEY (sink, number)) WITHOUT ROWID;
CREATE INDEX sink_ledger_numbers_key ON sink_ledger_numbers (sink, key);
-- A lead's ledger goes with the lead, whatever deletes it.
CREATE TRIGGER sink_ledger_with_lead AFTER DELETE ON leads BEGIN
    DELETE FROM sink_ledger WHERE sink = old.sink AND key = old.key;
    DELETE FROM sink_ledger_numbers WHERE sink = old.sink AND key = old.key;
END;
-- What uContact stored in kv moves over (a store upgraded mid-doubt keeps its checks):
-- scopes ucontact.<sink>.lead / .phone / .calls / .newest, and ucontact.dispositions
-- (name <sink>/<key>). The sink's own state (scope ucontact.<sink>) stays in kv.
INSERT INTO sink_ledger (sink, key, number, alternatives, mode, schedule, held, late,
    late_at, late_until, sent_hash, sent_at, check_at)
SELECT substr(scope, 10, length(scope) - 14), name,
    json_extract(value, '$.destination'),
    NULLIF(json_extract(value, '$.alternatives'), '[]'),
    json_extract(value, '$.mode'), json_extract(value, '$.calldate'),
    json_extract(value, '$.held'), json_extract(value, '$.late'),
    json_extract(value, '$.at'), json_extract(value, '$.until'),
    NULLIF(json_extract(value, '$.hash'), ''), json_extract(value, '$.added_at'),
    json_extract(value, '$.check_at')
FROM kv WHERE scope LIKE 'ucontact.%.lead' AND json_valid(value)
    AND json_extract(value, '$.destination') IS NOT NULL;
INSERT INTO sink_ledger_numbers (sink, number, key)
SELECT substr(scope, 10, length(scope) - 15), name, value
FROM kv WHERE scope LIKE 'ucontact.%.phone';
INSERT INTO sink_ledger (sink, key, calls)
SELECT substr(scope, 10, length(scope) - 15), name, value
FROM kv WHERE scope LIKE 'ucontact.%.calls' AND json_valid(value) AND value != '[]'
ON CONFLICT (sink, key) DO UPDATE SET calls = excluded.calls;
-- An ISO time with its offset; whole seconds, as the call records give them.
INSERT INTO sink_ledger (sink, key, newest_call)
SELECT substr(scope, 10, length(scope) - 16), name, CAST(strftime('%s', value) AS REAL)
FROM kv WHERE scope LIKE 'ucontact.%.newest' AND strftime('%s', value) IS NOT NULL
ON CONFLICT (sink, key) DO UPDATE SET newest_call = excluded.newest_call;
INSERT INTO sink_ledger (sink, key, disposition)
SELECT substr(name, 1, instr(name, '/') - 1), substr(name, instr(name, '/') + 1), value
FROM kv WHERE scope = 'ucontact.dispositions' AND instr(name, '/') > 0
ON CONFLICT (sink, key) DO UPDATE SET disposition = excluded.disposition;
DELETE FROM kv WHERE scope = 'ucontact.dispositions' OR scope LIKE 'ucontact.%.lead'
    OR scope LIKE 'ucontact.%.phone' OR scope LIKE 'ucontact.%.calls'
    OR scope LIKE 'ucontact.%.newest';
