-- The source a lead's version was read from: the speed-to-lead histogram counts each
-- delivery by source and sink (a sink may be fed by several sources).
ALTER TABLE leads ADD COLUMN source TEXT;
