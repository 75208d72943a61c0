-- Per-subject data keys for sealed fields (crypto-shredding). `wrapped_key` is
-- version || nonce || XChaCha20-Poly1305(key-wrapping key, data key, AAD = subject); the
-- key-wrapping key is derived from WARDEN_MASTER_KEY and never stored. Destroying a subject
-- nulls `wrapped_key` and sets `destroyed_at` (RFC 3339 UTC); the row stays as a tombstone so
-- a forgotten subject can never be given a new key.
CREATE TABLE data_keys (
    subject      TEXT PRIMARY KEY,
    wrapped_key  BLOB NULL,
    created_at   TEXT NOT NULL,
    destroyed_at TEXT NULL,
    CONSTRAINT data_keys_live_xor_destroyed CHECK ((wrapped_key IS NULL) <> (destroyed_at IS NULL))
);
