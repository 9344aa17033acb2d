-- What the webmail and the HTTP API need beyond the mailbox tables.

-- API bearer tokens: only a SHA-256 of the secret is kept (the secret has 256 bits
-- of entropy, so a slow hash would add nothing); the token names its row id so a
-- lookup is one primary-key read.
CREATE TABLE api_tokens (
    id         INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    hash       TEXT NOT NULL,                -- hex SHA-256 of the secret part
    created    REAL NOT NULL,
    last_used  REAL
);
CREATE INDEX api_tokens_account ON api_tokens(account_id);

-- Folder lists show total and unread counts: with this covering index they are
-- counted from the index alone, not by reading every (large) message row.
CREATE INDEX messages_folder_flags ON messages(folder_id, flags);
