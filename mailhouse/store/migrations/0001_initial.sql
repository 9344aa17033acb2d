-- mailhouse schema, version 1. Each migration file runs once, in order, in one
-- transaction; PRAGMA user_version records the last one applied.

CREATE TABLE domains (
    id      INTEGER PRIMARY KEY,
    name    TEXT NOT NULL UNIQUE,
    created REAL NOT NULL
);

CREATE TABLE accounts (
    id            INTEGER PRIMARY KEY,
    address       TEXT NOT NULL UNIQUE,      -- lower-cased local@domain
    domain_id     INTEGER NOT NULL REFERENCES domains(id),
    password_hash TEXT NOT NULL,
    created       REAL NOT NULL,
    quota         INTEGER                    -- bytes; NULL: unlimited
);

CREATE TABLE aliases (
    id        INTEGER PRIMARY KEY,
    address   TEXT NOT NULL UNIQUE,          -- local@domain, or @domain for the catch-all
    domain_id INTEGER NOT NULL REFERENCES domains(id),
    targets   TEXT NOT NULL,                 -- JSON list of addresses
    created   REAL NOT NULL
);

CREATE TABLE folders (
    id            INTEGER PRIMARY KEY,
    account_id    INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,             -- UTF-8, "/" as the hierarchy separator
    special_use   TEXT,                      -- \Sent, \Drafts, ... or NULL
    uidvalidity   INTEGER NOT NULL,
    uidnext       INTEGER NOT NULL DEFAULT 1,
    highestmodseq INTEGER NOT NULL DEFAULT 1,
    subscribed    INTEGER NOT NULL DEFAULT 1,
    UNIQUE (account_id, name)
);

-- A message's bytes are stored once, however many mailboxes hold it; small bodies
-- live in the row (one fsync of the WAL covers them), large ones in a file.
CREATE TABLE blobs (
    id    INTEGER PRIMARY KEY,
    size  INTEGER NOT NULL,
    data  BLOB,                              -- the bytes, or NULL when in a file
    path  TEXT,                              -- relative to data_dir/blobs
    refs  INTEGER NOT NULL DEFAULT 0         -- messages + queue entries using it
);

CREATE TABLE messages (
    id            INTEGER PRIMARY KEY,
    folder_id     INTEGER NOT NULL REFERENCES folders(id) ON DELETE CASCADE,
    uid           INTEGER NOT NULL,
    blob_id       INTEGER NOT NULL REFERENCES blobs(id),
    internal_date REAL NOT NULL,
    size          INTEGER NOT NULL,
    flags         INTEGER NOT NULL DEFAULT 0, -- bit set of the IMAP system flags
    keywords      TEXT NOT NULL DEFAULT '',   -- space-separated keywords
    modseq        INTEGER NOT NULL,
    queue_id      TEXT,                       -- the receiving transaction, for the journey
    message_id    TEXT,                       -- Message-ID header, without <>
    parse         TEXT NOT NULL,              -- JSON: envelope, MIME tree with offsets, summary
    UNIQUE (folder_id, uid)
);
CREATE INDEX messages_message_id ON messages(message_id);
CREATE INDEX messages_queue_id ON messages(queue_id);

CREATE TABLE queue (
    id            TEXT PRIMARY KEY,           -- queue id, as in logs and 250 replies
    blob_id       INTEGER NOT NULL REFERENCES blobs(id),
    sender        TEXT NOT NULL,              -- '' is the null reverse-path
    message_id    TEXT,
    created       REAL NOT NULL,
    next_attempt  REAL NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    held          INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    warned        INTEGER NOT NULL DEFAULT 0, -- delay DSN sent
    ret           TEXT,                       -- DSN RET: FULL / HDRS
    envid         TEXT,                       -- DSN ENVID
    body_type     TEXT,                       -- 7BIT / 8BITMIME
    smtputf8      INTEGER NOT NULL DEFAULT 0,
    auth_user     TEXT                        -- submitting account, if any
);
CREATE INDEX queue_next ON queue(next_attempt);

CREATE TABLE queue_recipients (
    id         INTEGER PRIMARY KEY,
    queue_id   TEXT NOT NULL REFERENCES queue(id) ON DELETE CASCADE,
    address    TEXT NOT NULL,
    orcpt      TEXT,
    notify     TEXT,                         -- DSN NOTIFY, as given
    state      TEXT NOT NULL DEFAULT 'pending', -- pending / deferred / delivered / failed
    last_reply TEXT,
    updated    REAL
);
CREATE INDEX queue_recipients_queue ON queue_recipients(queue_id);

-- The journey: every event of a message's life on this server, in time order.
CREATE TABLE journey (
    id         INTEGER PRIMARY KEY,
    queue_id   TEXT NOT NULL,
    message_id TEXT,
    time       REAL NOT NULL,
    kind       TEXT NOT NULL,                -- received, delivered, queued, attempt, bounced, read, ...
    data       TEXT NOT NULL                 -- JSON
);
CREATE INDEX journey_queue ON journey(queue_id);
CREATE INDEX journey_message ON journey(message_id);

-- Blob reference counts follow the rows that use them, whatever deletes them
-- (a cascade from an account or folder included).
CREATE TRIGGER messages_ref AFTER INSERT ON messages
    BEGIN UPDATE blobs SET refs = refs + 1 WHERE id = NEW.blob_id; END;
CREATE TRIGGER messages_unref AFTER DELETE ON messages
    BEGIN UPDATE blobs SET refs = refs - 1 WHERE id = OLD.blob_id; END;
CREATE TRIGGER queue_ref AFTER INSERT ON queue
    BEGIN UPDATE blobs SET refs = refs + 1 WHERE id = NEW.blob_id; END;
CREATE TRIGGER queue_unref AFTER DELETE ON queue
    BEGIN UPDATE blobs SET refs = refs - 1 WHERE id = OLD.blob_id; END;
CREATE INDEX blobs_orphans ON blobs(refs) WHERE refs <= 0;
