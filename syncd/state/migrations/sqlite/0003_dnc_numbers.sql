
    CREATE TABLE dnc_numbers (
        list TEXT NOT NULL, number TEXT NOT NULL, origin TEXT, added_at REAL NOT NULL,
        checked INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (list, number)) WITHOUT ROWID;
    CREATE INDEX dnc_unchecked ON dnc_numbers (list, checked);
    CREATE INDEX leads_phone ON leads (json_extract(lead_json, '$.phone'));
    