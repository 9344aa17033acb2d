-- What IMAP needs to resynchronise clients (CONDSTORE/QRESYNC, RFC 7162): the
-- UIDs expunged from a folder and the mod-sequence at which they went.
CREATE TABLE expunged (
    folder_id INTEGER NOT NULL REFERENCES folders(id) ON DELETE CASCADE,
    uid       INTEGER NOT NULL,
    modseq    INTEGER NOT NULL,
    PRIMARY KEY (folder_id, uid)
) WITHOUT ROWID;
CREATE INDEX expunged_modseq ON expunged(folder_id, modseq);
CREATE INDEX messages_modseq ON messages(folder_id, modseq);
