-- The lead's main number and consent expiry as columns of their own, indexed as they
-- were. A claim and a completion change indexed columns (state, next_at), so PostgreSQL
-- writes a new entry into every index of the lead (no HOT update), and the two indexes
-- over expressions of lead_json parsed each lead's JSON for it: twice per statement,
-- on every lead of every push (about a third of the claim's and the completion's time).
-- SQLite updates only the indexes whose columns a statement changes: it keeps its
-- expression indexes, and its schema has no such step.
-- The old indexes go first: the backfill then writes no entry into them (500,000 leads:
-- 10 s, against 19 s after them). The step holds the leads table until it commits, so
-- the replicas of a rolling upgrade pause their pushes meanwhile (docs/replicas.md).
DROP INDEX leads_phone;
DROP INDEX leads_consent;
ALTER TABLE leads ADD COLUMN phone TEXT, ADD COLUMN consent_until TEXT;
UPDATE leads SET phone = CAST(lead_json AS jsonb) ->> 'phone',
    consent_until = CAST(lead_json AS jsonb) ->> 'consent_until';
-- Kept by the database on every write of lead_json, whoever writes it (a pull's upsert,
-- a retry naming the number it sent, `syncd state copy`): never out of step with it.
CREATE FUNCTION leads_json_fields() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.phone := CAST(NEW.lead_json AS jsonb) ->> 'phone';
    NEW.consent_until := CAST(NEW.lead_json AS jsonb) ->> 'consent_until';
    RETURN NEW;
END $$;
CREATE TRIGGER leads_json_fields BEFORE INSERT OR UPDATE OF lead_json ON leads
    FOR EACH ROW EXECUTE FUNCTION leads_json_fields();
CREATE INDEX leads_phone ON leads (phone);
CREATE INDEX leads_consent ON leads (consent_until)
    WHERE delivered_hash IS NOT NULL AND action = 'upsert' AND consent_until IS NOT NULL;
