-- Read models of the first slice. Times are the event store's fixed UTC text form
-- (YYYY-MM-DDTHH:MM:SS.ffffffZ), so they compare correctly as text on both backends.
CREATE TABLE users (
    user_id         TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL,
    role            TEXT NOT NULL,
    email           TEXT,
    first_name      TEXT,
    last_name       TEXT,
    phone_number    TEXT,
    status          TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    last_sign_in_at TEXT
);
CREATE INDEX users_by_organization ON users (organization_id);

CREATE TABLE sessions (
    session_id        TEXT PRIMARY KEY,
    user_id           TEXT NOT NULL,
    token_digest      TEXT NOT NULL UNIQUE,
    created_at        TEXT NOT NULL,
    expires_at        TEXT NOT NULL,
    idle_timeout_secs BIGINT NOT NULL,
    ended_at          TEXT
);
CREATE INDEX sessions_by_user ON sessions (user_id);

-- Operational, not history: when each session was last used (idle timeout).
CREATE TABLE session_activity (
    session_id   TEXT PRIMARY KEY,
    last_used_at TEXT NOT NULL
);

CREATE TABLE organizations (
    organization_id         TEXT PRIMARY KEY,
    owner_user_id           TEXT NOT NULL,
    company_name            TEXT,
    billing_currency        TEXT NOT NULL,
    address                 TEXT,
    contact                 TEXT,
    security_passphrase_set BIGINT NOT NULL,
    port_out_pin_set        BIGINT NOT NULL,
    created_at              TEXT NOT NULL,
    updated_at              TEXT NOT NULL
);
