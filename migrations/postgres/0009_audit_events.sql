-- The Telnyx-compatible audit log (GET /v2/audit_events), a read model of the event log.
-- Values are stored as the API shows them: sealed values and digests are "[REDACTED]", so
-- nothing here is ever personal data in plaintext.
CREATE TABLE audit_events (
    event_id              TEXT   PRIMARY KEY,
    global_position       BIGINT NOT NULL,
    organization_id       TEXT   NOT NULL,
    created_at            TEXT   NOT NULL,
    change_type           TEXT   NOT NULL,
    resource_id           TEXT,
    alternate_resource_id TEXT,
    user_id               TEXT,
    change_made_by        TEXT   NOT NULL,
    -- JSON array of {field, from, to}.
    changes               TEXT   NOT NULL
);
CREATE INDEX audit_events_by_organization ON audit_events (organization_id, created_at, global_position);

-- The latest shown value of each field of each resource, for the next change's "from".
CREATE TABLE audit_field_values (
    resource_key TEXT NOT NULL,
    field        TEXT NOT NULL,
    value        TEXT NOT NULL,
    PRIMARY KEY (resource_key, field)
);

-- Which organization a stream belongs to, and the owner of each organization.
CREATE TABLE audit_streams (
    stream_id       TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL,
    owner_user_id   TEXT
);
