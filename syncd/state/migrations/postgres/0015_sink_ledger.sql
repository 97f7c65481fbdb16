-- A sink's memory of each lead at its dialer, in typed columns (issue 30, point 7): the
-- same tables as SQLite's migration 15. uContact kept these as JSON in `kv` rows of
-- string scopes, ~1 KB a lead. The columns' meanings are the sink's
-- (syncd/sinks/ucontact/ledger.py).
CREATE TABLE sink_ledger (
    sink TEXT NOT NULL, key TEXT NOT NULL,
    number TEXT, alternatives TEXT, mode TEXT, schedule TEXT, held TEXT,
    late TEXT, late_at DOUBLE PRECISION, late_until DOUBLE PRECISION, sent_hash TEXT,
    sent_at DOUBLE PRECISION, check_at DOUBLE PRECISION,
    calls TEXT, newest_call DOUBLE PRECISION, disposition TEXT,
    PRIMARY KEY (sink, key));
CREATE TABLE sink_ledger_numbers (
    sink TEXT NOT NULL, number TEXT NOT NULL, key TEXT NOT NULL,
    PRIMARY KEY (sink, number));
CREATE INDEX sink_ledger_numbers_key ON sink_ledger_numbers (sink, key);
-- A lead's ledger goes with the lead, whatever deletes it.
CREATE FUNCTION sink_ledger_with_lead() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM sink_ledger WHERE sink = OLD.sink AND key = OLD.key;
    DELETE FROM sink_ledger_numbers WHERE sink = OLD.sink AND key = OLD.key;
    RETURN OLD;
END $$;
CREATE TRIGGER sink_ledger_with_lead AFTER DELETE ON leads
    FOR EACH ROW EXECUTE FUNCTION sink_ledger_with_lead();
-- What uContact stored in kv moves over (a store upgraded mid-doubt keeps its checks):
-- scopes ucontact.<sink>.lead / .phone / .calls / .newest, and ucontact.dispositions
-- (name <sink>/<key>). The sink's own state (scope ucontact.<sink>) stays in kv. Every
-- value was written by json.dumps (or isoformat, for .newest).
INSERT INTO sink_ledger (sink, key, number, alternatives, mode, schedule, held, late,
    late_at, late_until, sent_hash, sent_at, check_at)
SELECT substr(scope, 10, length(scope) - 14), name,
    v ->> 'destination',
    NULLIF(v ->> 'alternatives', '[]'),
    v ->> 'mode', v ->> 'calldate', v ->> 'held', v ->> 'late',
    CAST(v ->> 'at' AS DOUBLE PRECISION), CAST(v ->> 'until' AS DOUBLE PRECISION),
    NULLIF(v ->> 'hash', ''), CAST(v ->> 'added_at' AS DOUBLE PRECISION),
    CAST(v ->> 'check_at' AS DOUBLE PRECISION)
FROM (SELECT scope, name, CAST(value AS jsonb) AS v FROM kv
      WHERE scope LIKE 'ucontact.%.lead') AS placed
WHERE v ->> 'destination' IS NOT NULL;
INSERT INTO sink_ledger_numbers (sink, number, key)
SELECT substr(scope, 10, length(scope) - 15), name, value
FROM kv WHERE scope LIKE 'ucontact.%.phone';
INSERT INTO sink_ledger (sink, key, calls)
SELECT substr(scope, 10, length(scope) - 15), name, value
FROM kv WHERE scope LIKE 'ucontact.%.calls' AND value != '[]'
ON CONFLICT (sink, key) DO UPDATE SET calls = excluded.calls;
INSERT INTO sink_ledger (sink, key, newest_call)
SELECT substr(scope, 10, length(scope) - 16), name,
    extract(epoch FROM CAST(value AS timestamptz))
FROM kv WHERE scope LIKE 'ucontact.%.newest'
ON CONFLICT (sink, key) DO UPDATE SET newest_call = excluded.newest_call;
INSERT INTO sink_ledger (sink, key, disposition)
SELECT split_part(name, '/', 1), substr(name, strpos(name, '/') + 1), value
FROM kv WHERE scope = 'ucontact.dispositions' AND strpos(name, '/') > 0
ON CONFLICT (sink, key) DO UPDATE SET disposition = excluded.disposition;
DELETE FROM kv WHERE scope = 'ucontact.dispositions' OR scope LIKE 'ucontact.%.lead'
    OR scope LIKE 'ucontact.%.phone' OR scope LIKE 'ucontact.%.calls'
    OR scope LIKE 'ucontact.%.newest';
