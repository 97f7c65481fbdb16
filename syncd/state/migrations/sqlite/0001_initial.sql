
    CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE cursors (
        source TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at REAL NOT NULL);
    CREATE TABLE leads (
        sink TEXT NOT NULL, key TEXT NOT NULL,
        hash TEXT NOT NULL, raw_hash TEXT, lead_json TEXT NOT NULL,
        action TEXT NOT NULL DEFAULT 'upsert', state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL DEFAULT 0,
        lease_until REAL, last_error TEXT, vendor_ref TEXT, delivered_hash TEXT,
        origin TEXT, line INTEGER, run_id TEXT, klass TEXT,
        created_at REAL NOT NULL, updated_at REAL NOT NULL, delivered_at REAL,
        PRIMARY KEY (sink, key)) WITHOUT ROWID;
    CREATE INDEX leads_outbox ON leads (sink, state, next_at);
    CREATE TABLE rejects (
        id INTEGER PRIMARY KEY, run_id TEXT, source TEXT NOT NULL, sink TEXT NOT NULL,
        origin TEXT, line INTEGER, key TEXT, reason TEXT NOT NULL, row_json TEXT,
        created_at REAL NOT NULL);
    CREATE INDEX rejects_origin ON rejects (source, origin, line);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY, at REAL NOT NULL, sink TEXT NOT NULL, key TEXT NOT NULL,
        kind TEXT NOT NULL, detail TEXT);
    CREATE INDEX events_key ON events (key, sink);
    CREATE TABLE outcomes (
        sink TEXT NOT NULL, key TEXT NOT NULL, version INTEGER NOT NULL,
        observed_at REAL NOT NULL, status TEXT, raw_status TEXT, disposition TEXT,
        attempts INTEGER, last_dialed_at REAL, agent TEXT, call_id TEXT,
        recording_url TEXT, raw_json TEXT, content_hash TEXT NOT NULL,
        PRIMARY KEY (sink, key));
    CREATE TABLE writeback_marks (
        writeback TEXT NOT NULL, sink TEXT NOT NULL, key TEXT NOT NULL,
        version INTEGER NOT NULL, written_at REAL NOT NULL,
        PRIMARY KEY (writeback, sink, key));
    CREATE TABLE agents (
        sink TEXT NOT NULL, login TEXT NOT NULL, status TEXT, description TEXT,
        duration_s INTEGER, changed_at REAL, observed_at REAL NOT NULL, raw_json TEXT,
        version INTEGER NOT NULL DEFAULT 1, PRIMARY KEY (sink, login));
    CREATE TABLE kv (scope TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL,
        PRIMARY KEY (scope, name));
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY, mode TEXT, started_at REAL NOT NULL, finished_at REAL,
        summary_json TEXT);
    