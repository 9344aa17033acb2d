-- IMAP \Recent across restarts: the first UID of the folder that no session has
-- been told of yet (mailhouse.imap.recent keeps the live marks; this is where
-- they start after a restart, as Dovecot keeps them in its index).
ALTER TABLE folders ADD COLUMN recent_uid INTEGER NOT NULL DEFAULT 0;
