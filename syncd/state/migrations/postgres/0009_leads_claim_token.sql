-- A claim's token (fencing): a push's results, requeues and lease renewals apply only
-- where the lead still carries the token of the claim that took it.
ALTER TABLE leads ADD COLUMN claim_token TEXT;
