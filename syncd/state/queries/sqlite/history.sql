-- What the store knows of one lead key, across sinks (`syncd explain KEY`).

-- name: lead_history
SELECT sink, state, hash, attempts, last_error, vendor_ref, origin, line, lead_json,
    updated_at, delivered_at
FROM leads WHERE key = ?;
