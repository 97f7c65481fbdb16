-- What the store knows of one lead key, across sinks (`syncd explain KEY`).

-- name: lead_history
-- The leads table has no index of keys alone (migration 19: every write of a lead paid
-- an entry in it for this statement only): the key is looked up in the primary key
-- (sink, key) once per sink, the sinks found by a loose scan of the same index, one
-- probe per sink (PostgreSQL has no skip scan of its own).
SELECT sink, state, hash, attempts, last_error, vendor_ref, origin, line, lead_json,
    updated_at, delivered_at
FROM leads
WHERE sink = ANY(ARRAY(
        WITH RECURSIVE sinks(sink) AS (
            SELECT min(sink) FROM leads
            UNION ALL
            SELECT (SELECT min(l.sink) FROM leads l WHERE l.sink > sinks.sink)
            FROM sinks WHERE sinks.sink IS NOT NULL)
        SELECT sink FROM sinks WHERE sink IS NOT NULL))
    AND key = $1;
