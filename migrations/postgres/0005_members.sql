-- Permission groups, sub-users' memberships, invitations and API keys (read models).
CREATE TABLE permission_groups (
    group_id        TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL,
    name            TEXT NOT NULL,
    -- JSON array of permission names.
    permissions     TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX permission_groups_by_organization ON permission_groups (organization_id);

CREATE TABLE member_groups (
    user_id  TEXT NOT NULL,
    group_id TEXT NOT NULL,
    PRIMARY KEY (user_id, group_id)
);
CREATE INDEX member_groups_by_group ON member_groups (group_id);

CREATE TABLE invitations (
    invitation_id        TEXT PRIMARY KEY,
    organization_id      TEXT NOT NULL,
    email                TEXT,
    -- JSON array of group ids.
    permission_group_ids TEXT NOT NULL,
    -- pending | accepted | revoked (expired is pending past expires_at).
    status               TEXT NOT NULL,
    expires_at           TEXT NOT NULL,
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL,
    user_id              TEXT
);
CREATE INDEX invitations_by_organization ON invitations (organization_id);

CREATE TABLE api_keys (
    key_id     TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    name       TEXT NOT NULL,
    prefix     TEXT NOT NULL,
    key_digest TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE UNIQUE INDEX api_keys_by_digest ON api_keys (key_digest);
CREATE INDEX api_keys_by_user ON api_keys (user_id);

-- Operational, not history: when each key was last used.
CREATE TABLE api_key_activity (
    key_id       TEXT PRIMARY KEY,
    last_used_at TEXT NOT NULL
);

-- Consecutive failed second factors (blocked at the limit until reset or unblocked).
ALTER TABLE users ADD COLUMN two_factor_failures BIGINT NOT NULL DEFAULT 0;
