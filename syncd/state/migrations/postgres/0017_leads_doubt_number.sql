-- The number of a version sent whose answer never came: the same step as SQLite's
-- migration 17. The dialer may hold a record under it; kept until a version is
-- delivered or the lead's removal is, whatever happens meanwhile (the CRM changes the
-- lead, the dialer refuses a repeat as a duplicate, an operator retries a dead letter).
ALTER TABLE leads ADD COLUMN doubt_number TEXT;
-- The leads in doubt as the earlier rule saw them keep their doubt.
UPDATE leads SET doubt_number = CAST(lead_json AS jsonb) ->> 'phone'
WHERE delivered_hash IS NULL AND action = 'upsert' AND attempts > 0
    AND state IN ('pending', 'held', 'failed');
-- Jodo's recording links now live with the lead's outcome (outcomes.recording_url).
DELETE FROM kv WHERE scope LIKE 'jodo:%:recording';
