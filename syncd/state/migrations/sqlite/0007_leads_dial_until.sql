
    ALTER TABLE leads ADD COLUMN dial_until REAL;
    