-- The event store: the append-only log, uniqueness claims, snapshots, idempotency records
-- and follower checkpoints. Only i64 / TEXT / BYTEA columns, so sqlx's Any driver can
-- decode every row. Timestamps are `format_time` texts (fixed width, so they sort).

-- One row per event. `global_position` is assigned under the append lock: gapless and in
-- commit order. `payload` and `metadata` are the exact JSON texts that were hashed.
CREATE TABLE events (
    global_position BIGINT NOT NULL,
    event_id        TEXT   NOT NULL,
    stream_id       TEXT   NOT NULL,
    stream_type     TEXT   NOT NULL,
    version         BIGINT NOT NULL,
    event_type      TEXT   NOT NULL,
    schema_version  BIGINT NOT NULL,
    recorded_at     TEXT   NOT NULL,
    payload         TEXT   NOT NULL,
    metadata        TEXT   NOT NULL,
    prev_hash       TEXT   NOT NULL,
    hash            TEXT   NOT NULL,
    CONSTRAINT events_pkey PRIMARY KEY (global_position),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version),
    CONSTRAINT events_version_positive CHECK (version > 0),
    CONSTRAINT events_position_positive CHECK (global_position > 0)
);

-- Audit and support queries: one stream's events in a time range, or everything in one.
CREATE INDEX events_stream_recorded_at_idx ON events (stream_id, recorded_at);
CREATE INDEX events_recorded_at_idx ON events (recorded_at);

-- Uniqueness across streams (e.g. `email:<digest>`), written with the event that takes it.
CREATE TABLE claims (
    key             TEXT NOT NULL,
    owner_stream_id TEXT NOT NULL,
    claimed_at      TEXT NOT NULL,
    CONSTRAINT claims_pkey PRIMARY KEY (key)
);
CREATE INDEX claims_owner_idx ON claims (owner_stream_id);

-- A cache of aggregate state; rebuildable from events.
CREATE TABLE snapshots (
    stream_id      TEXT   NOT NULL,
    schema_version BIGINT NOT NULL,
    version        BIGINT NOT NULL,
    state          TEXT   NOT NULL,
    CONSTRAINT snapshots_pkey PRIMARY KEY (stream_id)
);

-- Idempotency-Key records: in_flight → committed (set by the append) → done (response saved).
CREATE TABLE idempotency_keys (
    scope        TEXT   NOT NULL,
    key          TEXT   NOT NULL,
    request_hash TEXT   NOT NULL,
    state        TEXT   NOT NULL DEFAULT 'in_flight',
    status       BIGINT NULL,
    body         BYTEA  NULL,
    created_at   TEXT   NOT NULL,
    locked_at    TEXT   NOT NULL,
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (scope, key),
    CONSTRAINT idempotency_keys_state_check CHECK (state IN ('in_flight', 'committed', 'done'))
);
CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);

-- How far each follower (projector, relay) has read the log.
CREATE TABLE checkpoints (
    name       TEXT   NOT NULL,
    position   BIGINT NOT NULL DEFAULT 0,
    updated_at TEXT   NULL,
    CONSTRAINT checkpoints_pkey PRIMARY KEY (name)
);
