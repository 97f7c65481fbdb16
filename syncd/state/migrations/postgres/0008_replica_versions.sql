-- Each replica says which syncd it runs and the schema that syncd knows, so that
-- `syncd status` shows a rolling upgrade's mixed versions (a replica started before
-- this step leaves them empty until it restarts).
ALTER TABLE replicas ADD COLUMN syncd_version TEXT;
ALTER TABLE replicas ADD COLUMN knows_schema INTEGER;
