-- Two-factor status on the users read model.
ALTER TABLE users ADD COLUMN two_factor_enabled BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN two_factor_method TEXT;
ALTER TABLE users ADD COLUMN backup_codes_remaining BIGINT NOT NULL DEFAULT 0;

-- Which user a sign-in challenge belongs to (the challenge itself lives on the user stream).
CREATE TABLE two_factor_challenges (
    challenge_id TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL,
    expires_at   TEXT NOT NULL
);

-- The enrolled second-factor phone number, masked; and the one being enrolled.
ALTER TABLE users ADD COLUMN two_factor_phone TEXT;
ALTER TABLE users ADD COLUMN two_factor_pending_phone TEXT;

-- A session limited to enrolling a second factor (the organization's deadline passed).
ALTER TABLE sessions ADD COLUMN scope TEXT;
-- The organization's two-factor policy, as JSON.
ALTER TABLE organizations ADD COLUMN two_factor_policy TEXT;
