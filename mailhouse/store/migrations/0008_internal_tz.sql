-- The UTC offset the internal date was stated in (minutes east of UTC), so
-- IMAP shows an APPEND's date-time as given and SEARCH BEFORE/ON/SINCE use its
-- own calendar date (RFC 9051 §6.4.4). Rows stored before read as +0000.
ALTER TABLE messages ADD COLUMN internal_tz INTEGER NOT NULL DEFAULT 0;

-- SEARCH by date reads the offset too: keep that query on the index alone.
DROP INDEX IF EXISTS messages_state;
CREATE INDEX messages_state
    ON messages(folder_id, uid, flags, keywords, modseq, size, internal_date, internal_tz);
