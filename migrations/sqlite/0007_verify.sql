-- Verify (issue 6): read models of profiles, templates and verifications, and the webhook
-- delivery log with its attempts. Times are `format_time` texts.

CREATE TABLE verify_profiles (
    profile_id      TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL,
    name            TEXT NOT NULL,
    -- The settings as the API shows them (JSON).
    settings        TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX verify_profiles_by_organization ON verify_profiles (organization_id, created_at);

CREATE TABLE verify_templates (
    template_id     TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL,
    text            TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX verify_templates_by_organization ON verify_templates (organization_id);

CREATE TABLE verifications (
    verification_id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL,
    profile_id      TEXT NOT NULL,
    phone_number    TEXT NOT NULL,
    type            TEXT NOT NULL,
    status          TEXT NOT NULL,
    delivery_status TEXT NOT NULL,
    failed_attempts BIGINT NOT NULL,
    timeout_secs    BIGINT NOT NULL,
    custom_code     BIGINT NOT NULL,
    expires_at      TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX verifications_by_phone ON verifications (organization_id, phone_number, created_at);
-- The expiry scheduler's question: which pending verifications are due.
CREATE INDEX verifications_pending_expiry ON verifications (status, expires_at);

-- Where a profile's webhooks go, as of the webhook enqueuer's position in the log.
CREATE TABLE verify_webhook_targets (
    profile_id      TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL,
    url             TEXT,
    failover_url    TEXT
);

-- Durable webhook deliveries, for any producer: `scheme` says how a body is signed
-- (`telnyx_ed25519` for Verify; `standard_webhooks` for account-level endpoints). One row per
-- (event, subscription); `data` is the event object, wrapped per attempt in the envelope of
-- the scheme. status: pending → delivered | failed.
CREATE TABLE webhook_deliveries (
    delivery_id     TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL,
    subscription    TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    scheme          TEXT NOT NULL,
    url             TEXT NOT NULL,
    failover_url    TEXT,
    data            TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        BIGINT NOT NULL,
    next_attempt_at TEXT NOT NULL,
    locked_until    TEXT,
    delivered_to    TEXT,
    last_status     BIGINT,
    last_error      TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    CONSTRAINT webhook_deliveries_event_subscription_key UNIQUE (event_id, subscription),
    CONSTRAINT webhook_deliveries_status_check CHECK (status IN ('pending', 'delivered', 'failed'))
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_by_organization ON webhook_deliveries (organization_id, created_at);

-- Every attempt: which URL, what came back.
CREATE TABLE webhook_attempts (
    delivery_id  TEXT   NOT NULL,
    attempt      BIGINT NOT NULL,
    url          TEXT   NOT NULL,
    status_code  BIGINT,
    error        TEXT,
    attempted_at TEXT   NOT NULL,
    CONSTRAINT webhook_attempts_pkey PRIMARY KEY (delivery_id, attempt, url)
);
