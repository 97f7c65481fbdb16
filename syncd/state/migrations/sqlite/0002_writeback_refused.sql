
    ALTER TABLE writeback_marks ADD COLUMN refused TEXT;
    