-- Two-factor status on the users read model.
ALTER TABLE users ADD COLUMN two_factor_enabled BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN two_factor_method TEXT;
ALTER TABLE users ADD COLUMN backup_codes_remaining BIGINT NOT NULL DEFAULT 0;
