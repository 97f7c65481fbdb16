-- A sink's ledger of its leads (syncd/state/ledger.py; tables of migrations 15 and 16).

-- name: ledger_get
SELECT number, alternatives, mode, schedule, held, late, late_at, late_until, sent_hash,
    sent_at, check_at, calls, newest_call, disposition, ref, valid_until
FROM sink_ledger WHERE sink = ? AND key = ?;

-- name: ledger_place
INSERT INTO sink_ledger (sink, key, number, alternatives, mode, schedule, held, late,
    late_at, late_until, sent_hash, sent_at, check_at, ref, valid_until)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (sink, key) DO UPDATE SET number = excluded.number,
    alternatives = excluded.alternatives, mode = excluded.mode,
    schedule = excluded.schedule, held = excluded.held, late = excluded.late,
    late_at = excluded.late_at, late_until = excluded.late_until,
    sent_hash = excluded.sent_hash, sent_at = excluded.sent_at, check_at = excluded.check_at,
    ref = excluded.ref, valid_until = excluded.valid_until;

-- name: ledger_point
-- The lead placed last under a number owns it.
INSERT INTO sink_ledger_numbers (sink, number, key) VALUES (?, ?, ?)
ON CONFLICT (sink, number) DO UPDATE SET key = excluded.key;

-- name: ledger_unplace
UPDATE sink_ledger SET number = NULL, alternatives = NULL, mode = NULL, schedule = NULL,
    held = NULL, late = NULL, late_at = NULL, late_until = NULL, sent_hash = NULL,
    sent_at = NULL, check_at = NULL, ref = NULL, valid_until = NULL
WHERE sink = ? AND key = ?;

-- name: ledger_release
-- Only while the number still points at this lead: another may own it since.
DELETE FROM sink_ledger_numbers WHERE sink = ? AND number = ? AND key = ?;

-- name: ledger_owner
SELECT key FROM sink_ledger_numbers WHERE sink = ? AND number = ?;

-- name: ledger_set_calls
INSERT INTO sink_ledger (sink, key, calls) VALUES (?, ?, ?)
ON CONFLICT (sink, key) DO UPDATE SET calls = excluded.calls;

-- name: ledger_set_newest_call
INSERT INTO sink_ledger (sink, key, newest_call) VALUES (?, ?, ?)
ON CONFLICT (sink, key) DO UPDATE SET newest_call = excluded.newest_call;

-- name: ledger_set_disposition
INSERT INTO sink_ledger (sink, key, disposition) VALUES (?, ?, ?)
ON CONFLICT (sink, key) DO UPDATE SET disposition = excluded.disposition;
