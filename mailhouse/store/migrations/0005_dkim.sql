-- DKIM signing keys (mailhouse.trust.keys): made per domain on first need.
-- Kept by domain name, not domains(id): a domain removed and added again keeps
-- the key its DNS still publishes.
CREATE TABLE dkim_keys (
    id          INTEGER PRIMARY KEY,
    domain      TEXT NOT NULL,
    selector    TEXT NOT NULL,
    algorithm   TEXT NOT NULL,          -- rsa-sha256 | ed25519-sha256
    private_key TEXT NOT NULL,          -- PKCS#8 PEM
    created     REAL NOT NULL,
    active      INTEGER NOT NULL DEFAULT 1,
    UNIQUE (domain, selector)
);
-- One active key per domain and algorithm, whichever process makes it first.
CREATE UNIQUE INDEX dkim_keys_active ON dkim_keys(domain, algorithm) WHERE active;
