-- The owner token of an idempotency record: a fresh random value each time a request starts
-- the record or takes over a stale one. Finishing, abandoning and the append's commit mark
-- all require it, so a slow request whose record was taken over can no longer touch it.
-- Records from before this migration have no owner ('') and are never matched; in flight,
-- they are taken over once stale, like any other.
ALTER TABLE idempotency_keys ADD COLUMN owner_token TEXT NOT NULL DEFAULT '';
