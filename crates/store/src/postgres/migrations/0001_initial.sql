-- hookline on PostgreSQL, schema version 1: every record of the SQLite backend, in
-- PostgreSQL's own terms. JSON columns are text: payloads must come back byte for byte,
-- and the other documents are hookline's own serialisations.

CREATE TABLE applications (
    id                text PRIMARY KEY,
    uid               text UNIQUE,
    name              text NOT NULL,
    throttle_rate     integer,
    metadata          text NOT NULL,          -- JSON object of strings
    retry_policy      text,                   -- JSON, hookline_retry::RetryPolicy
    validate_payloads boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL
);

CREATE TABLE event_types (
    name              text PRIMARY KEY,
    description       text NOT NULL,
    archived          boolean NOT NULL,
    deprecated        boolean NOT NULL,
    schemas           text,                   -- JSON: version -> JSON Schema
    group_name        text,
    feature_flags     text,                   -- JSON array
    validate_payloads boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL
);

CREATE TABLE endpoints (
    id            text PRIMARY KEY,
    app_id        text NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    uid           text,
    url           text NOT NULL,
    disabled      boolean NOT NULL,
    settings      text NOT NULL,              -- JSON, model::EndpointSettings
    next_due_at   timestamptz,                -- earliest queued work; NULL: none
    failing_since timestamptz,                -- first failure since the last success
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    UNIQUE (app_id, uid)
);
CREATE INDEX endpoints_by_app ON endpoints (app_id, id);
-- The claim walks endpoints by when their earliest work falls due, healthy and failing
-- ones apart (each within the room the worker has for it), then each endpoint's due
-- deliveries: index walks only, never a sort of the backlog.
CREATE INDEX endpoints_due ON endpoints (next_due_at)
    WHERE next_due_at IS NOT NULL AND NOT disabled AND failing_since IS NULL;
CREATE INDEX endpoints_due_failing ON endpoints (next_due_at)
    WHERE next_due_at IS NOT NULL AND NOT disabled AND failing_since IS NOT NULL;

CREATE TABLE messages (
    id         text PRIMARY KEY,
    app_id     text NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    event_id   text,
    event_type text NOT NULL,
    payload    text NOT NULL,                 -- the exact bytes received and delivered
    channels   text,                          -- JSON array
    tags       text,                          -- JSON array
    created_at timestamptz NOT NULL,
    deliver_at timestamptz                    -- NULL: deliver at once
);
CREATE INDEX messages_by_app ON messages (app_id, id);
-- eventId is the sender's idempotency key: unique per app where there is one.
CREATE UNIQUE INDEX messages_by_event_id ON messages (app_id, event_id)
    WHERE event_id IS NOT NULL;

-- The state machine (docs/delivery-states.md); CHECKs keep the columns consistent.
CREATE TABLE deliveries (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    app_id       text NOT NULL,
    msg_id       text NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    endpoint_id  text NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
    status       text NOT NULL CHECK (status IN ('pending', 'sending', 'succeeded', 'failed')),
    attempts     integer NOT NULL CHECK (attempts >= 0),
    manual       boolean NOT NULL,            -- the current attempt was asked for by hand
    scheduled_at timestamptz NOT NULL,        -- when the current/next attempt is due by policy
    due_at       timestamptz,                 -- pending: scheduled_at; sending: lease expiry
    lease_token  text,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    UNIQUE (msg_id, endpoint_id),
    CHECK ((status IN ('pending', 'sending')) = (due_at IS NOT NULL)),
    CHECK ((status = 'sending') = (lease_token IS NOT NULL))
);
-- Column order matches the claim: one endpoint's due work, earliest first.
CREATE INDEX deliveries_due ON deliveries (endpoint_id, due_at) WHERE due_at IS NOT NULL;
-- An endpoint's deliveries by message (its listing, and deleting the endpoint).
CREATE INDEX deliveries_by_endpoint ON deliveries (endpoint_id, msg_id);

CREATE TABLE attempts (
    id           text PRIMARY KEY,
    app_id       text NOT NULL,
    msg_id       text NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    endpoint_id  text NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
    url          text NOT NULL,
    attempted_at timestamptz NOT NULL,
    status_code  integer,                     -- NULL: no HTTP response
    duration_ms  bigint NOT NULL,
    succeeded    boolean NOT NULL,
    error_kind   text,
    response     text NOT NULL,               -- excerpt of at most 4 KiB, or the error
    manual       boolean NOT NULL
);
CREATE INDEX attempts_by_msg ON attempts (msg_id, id);
CREATE INDEX attempts_by_endpoint ON attempts (endpoint_id, id);

CREATE TABLE api_tokens (
    token_hash bytea PRIMARY KEY,             -- SHA-256 of the token text; never the text
    app_id     text REFERENCES applications (id) ON DELETE CASCADE,
    read_only  boolean NOT NULL DEFAULT false,
    expires_at timestamptz,
    created_at timestamptz NOT NULL
);
CREATE INDEX api_tokens_by_app ON api_tokens (app_id) WHERE app_id IS NOT NULL;

CREATE TABLE idempotency_keys (
    scope      text NOT NULL,                 -- who asked and what for (token + route)
    key        text NOT NULL,
    state      text NOT NULL CHECK (state IN ('pending', 'done')),
    status     integer,
    body       bytea,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
