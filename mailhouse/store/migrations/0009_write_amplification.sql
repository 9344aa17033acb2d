-- Each index is one more B-tree page rewritten (in the WAL, then again at the
-- checkpoint) per commit, and an index keyed by Message-ID is the worst kind:
-- its keys are random, so every delivery in a batch dirties a page of its own.
-- Counted in the WAL of a receive benchmark (17.7 deliveries a commit): 90 pages
-- a commit, 38 of them for the two Message-ID indexes.
--
-- Nothing looks messages up by Message-ID or queue id (the journey does that).
DROP INDEX IF EXISTS messages_message_id;
DROP INDEX IF EXISTS messages_queue_id;

-- The journey finds a Message-ID through the event that opens each queue id's
-- journey ("received", or "dsn" for a notice made here), then every event of those
-- queue ids: one entry per message instead of one per event.
DROP INDEX IF EXISTS journey_message;
CREATE INDEX IF NOT EXISTS journey_opening ON journey(message_id) WHERE kind IN ('received', 'dsn');
