
    ALTER TABLE events ADD COLUMN facts TEXT;
    ALTER TABLE rejects ADD COLUMN facts TEXT;
    