-- The number of a version sent whose answer never came (a timeout, a cut-off push, a
-- crash mid-request): the dialer may hold a record under it. Kept until a version is
-- delivered or the lead's removal is, whatever happens meanwhile (the CRM changes the
-- lead, the dialer refuses a repeat as a duplicate, an operator retries a dead letter),
-- so a lead the CRM then deletes is removed from the dialer by that number. Before,
-- the doubt was read from `attempts`, which a change or a retry reset.
ALTER TABLE leads ADD COLUMN doubt_number TEXT;
-- The leads in doubt as the earlier rule saw them keep their doubt.
UPDATE leads SET doubt_number = json_extract(lead_json, '$.phone')
WHERE delivered_hash IS NULL AND action = 'upsert' AND attempts > 0
    AND state IN ('pending', 'held', 'failed') AND json_valid(lead_json);
-- Jodo's recording links now live with the lead's outcome (outcomes.recording_url):
-- the kv rows it kept per lead (scope jodo:<sink>:recording) go.
DELETE FROM kv WHERE scope LIKE 'jodo:%:recording';
