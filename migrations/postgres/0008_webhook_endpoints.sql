-- Account-level webhooks (issue 5): endpoints as the API shows them and as deliveries are
-- routed (read model of the `webhook_endpoint-…` streams), which organization each stream
-- belongs to, each endpoint's failure streak, and the delivery rows' endpoint.

CREATE TABLE webhook_endpoints (
    endpoint_id          TEXT PRIMARY KEY,
    organization_id      TEXT   NOT NULL,
    url                  TEXT   NOT NULL,
    -- JSON list: ["*"] or event type names.
    event_types          TEXT   NOT NULL,
    description          TEXT,
    enabled              BIGINT NOT NULL,
    -- Sealed (JSON {key_id, nonce, ciphertext}) under the organization's data key.
    secret               TEXT   NOT NULL,
    previous_secret      TEXT,
    previous_valid_until TEXT,
    disabled_reason      TEXT,
    created_at           TEXT   NOT NULL,
    updated_at           TEXT   NOT NULL
);
CREATE INDEX webhook_endpoints_by_organization ON webhook_endpoints (organization_id, created_at);

-- The organization of every stream, from its first event (which always names it).
CREATE TABLE webhook_stream_owners (
    stream_id       TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL
);

-- Written by the dispatcher, not by a projector (so a rebuild keeps it): since when an
-- endpoint's attempts have all failed. No row: its last attempt succeeded (or none yet).
CREATE TABLE webhook_endpoint_health (
    endpoint_id   TEXT PRIMARY KEY,
    failing_since TEXT NOT NULL,
    last_error    TEXT
);

ALTER TABLE webhook_deliveries ADD COLUMN endpoint_id TEXT;
ALTER TABLE webhook_deliveries ADD COLUMN global_position BIGINT;
ALTER TABLE webhook_deliveries ADD COLUMN finished_at TEXT;
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, status);
