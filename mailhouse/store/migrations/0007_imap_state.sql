-- IMAP keeps every message's state of a selected folder in memory: this index
-- covers the queries that load it, the STATUS counts and SEARCH by date, so a
-- 100,000-message folder is read from the index only, not from the wide rows
-- with their cached parse.
CREATE INDEX IF NOT EXISTS messages_state
    ON messages(folder_id, uid, flags, keywords, modseq, size, internal_date);

-- IMAP subscriptions to names that have no folder (subscribed before it was
-- created, or kept after it was deleted: RFC 9051 §6.3.7 never drops them on
-- its own). A subscription of an existing folder is folders.subscribed.
CREATE TABLE IF NOT EXISTS imap_subscriptions (
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    PRIMARY KEY (account_id, name)
) WITHOUT ROWID;
