
    CREATE TABLE dnc_staging (
        list TEXT NOT NULL, number TEXT NOT NULL, origin TEXT NOT NULL,
        PRIMARY KEY (list, number));
    CREATE TABLE dnc_versions (
        list TEXT NOT NULL, version INTEGER NOT NULL, file TEXT NOT NULL, mode TEXT NOT NULL,
        rows INTEGER NOT NULL, numbers INTEGER NOT NULL, added INTEGER NOT NULL,
        removed INTEGER NOT NULL, loaded_at DOUBLE PRECISION NOT NULL,
        file_date DOUBLE PRECISION NOT NULL, sha256 TEXT NOT NULL,
        PRIMARY KEY (list, version));
    CREATE TABLE dnc_blocked (
        sink TEXT NOT NULL, key TEXT NOT NULL, list TEXT NOT NULL, hash TEXT NOT NULL,
        raw_hash TEXT, lead_json TEXT NOT NULL, blocked_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (sink, key));
    CREATE INDEX dnc_blocked_list ON dnc_blocked (list);
    