
    ALTER TABLE leads ADD COLUMN waits_for TEXT;
    