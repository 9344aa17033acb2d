-- Foreign keys are enforced: deleting an orphaned blob checks that no message or
-- queue entry still points at it. Without these indexes each check scanned both
-- tables, making every expunge and every finished queue entry slower as the store
-- grew (quadratic overall).
CREATE INDEX IF NOT EXISTS messages_blob ON messages(blob_id);
CREATE INDEX IF NOT EXISTS queue_blob ON queue(blob_id);
