-- Greylisting's triplets, so that a restart does not defer known senders again.
-- Written in batches by the main process (mailhouse.trust.limits.GreylistKeeper);
-- `first` is when the triplet was first seen, or when it passed.
CREATE TABLE IF NOT EXISTS greylist (
    network   TEXT NOT NULL,
    sender    TEXT NOT NULL,
    recipient TEXT NOT NULL,
    first     REAL NOT NULL,
    passed    INTEGER NOT NULL,
    PRIMARY KEY (network, sender, recipient)
) WITHOUT ROWID;
