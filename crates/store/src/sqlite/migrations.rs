//! The SQLite schema: its versions, applied in order at open.

use super::*;

/// Schema versions, applied in order; `PRAGMA user_version` records how many ran.
/// Never edit an entry that has shipped: add a new one.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: the management API's records.
    r#"
    CREATE TABLE applications (
        id            TEXT PRIMARY KEY,
        uid           TEXT UNIQUE,
        name          TEXT NOT NULL,
        throttle_rate INTEGER,
        metadata      TEXT NOT NULL,          -- JSON object of strings
        retry_policy  TEXT,                   -- JSON, hookline_retry::RetryPolicy
        created_at    INTEGER NOT NULL,       -- unix ms
        updated_at    INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE event_types (
        name          TEXT PRIMARY KEY,
        description   TEXT NOT NULL,
        archived      INTEGER NOT NULL CHECK (archived IN (0, 1)),
        deprecated    INTEGER NOT NULL CHECK (deprecated IN (0, 1)),
        schemas       TEXT,                   -- JSON: version -> JSON Schema
        group_name    TEXT,
        feature_flags TEXT,                   -- JSON array
        created_at    INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE endpoints (
        id         TEXT PRIMARY KEY,
        app_id     TEXT NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
        uid        TEXT,
        url        TEXT NOT NULL,
        disabled   INTEGER NOT NULL CHECK (disabled IN (0, 1)),
        settings   TEXT NOT NULL,             -- JSON, model::EndpointSettings
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        UNIQUE (app_id, uid)
    ) STRICT;
    -- Listing an app's endpoints walks this index in id order.
    CREATE INDEX endpoints_by_app ON endpoints (app_id, id);

    CREATE TABLE messages (
        id         TEXT PRIMARY KEY,
        app_id     TEXT NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
        event_id   TEXT,
        event_type TEXT NOT NULL,
        payload    TEXT NOT NULL,             -- the exact bytes received and delivered
        channels   TEXT,                      -- JSON array
        tags       TEXT,                      -- JSON array
        created_at INTEGER NOT NULL,
        -- eventId is the sender's idempotency key: unique per app (NULLs never collide).
        UNIQUE (app_id, event_id)
    ) STRICT;
    CREATE INDEX messages_by_app ON messages (app_id, id);

    CREATE TABLE api_tokens (
        token_hash BLOB PRIMARY KEY,          -- SHA-256 of the token text; never the text
        app_id     TEXT REFERENCES applications (id) ON DELETE CASCADE,
        expires_at INTEGER,
        created_at INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE idempotency_keys (
        scope      TEXT NOT NULL,             -- who asked and what for (token + route)
        key        TEXT NOT NULL,
        state      TEXT NOT NULL CHECK (state IN ('pending', 'done')),
        status     INTEGER,
        body       BLOB,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (scope, key)
    ) STRICT;
    CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
    "#,
    // 2: deliveries and the attempt log.
    r#"
    -- The dispatcher picks endpoints by when their earliest delivery falls due, then that
    -- endpoint's due deliveries: two index walks, never a scan of the backlog, and one
    -- busy endpoint cannot fill a claim batch that others are waiting behind.
    ALTER TABLE endpoints ADD COLUMN next_due_at INTEGER;      -- NULL: nothing queued
    ALTER TABLE endpoints ADD COLUMN failing_since INTEGER;    -- first failure since a success
    CREATE INDEX endpoints_due ON endpoints (next_due_at)
        WHERE next_due_at IS NOT NULL AND disabled = 0;

    -- The state machine (docs/delivery-states.md); CHECKs keep the columns consistent.
    CREATE TABLE deliveries (
        id           INTEGER PRIMARY KEY,
        app_id       TEXT NOT NULL,
        msg_id       TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        endpoint_id  TEXT NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
        status       TEXT NOT NULL CHECK (status IN ('pending', 'sending', 'succeeded', 'failed')),
        attempts     INTEGER NOT NULL CHECK (attempts >= 0),
        trigger      INTEGER NOT NULL CHECK (trigger IN (0, 1)),  -- 0 scheduled, 1 manual
        scheduled_at INTEGER NOT NULL,   -- when the current/next attempt is due by policy
        due_at       INTEGER,            -- pending: scheduled_at; sending: lease expiry
        lease_token  TEXT,
        created_at   INTEGER NOT NULL,
        updated_at   INTEGER NOT NULL,
        UNIQUE (msg_id, endpoint_id),
        CHECK ((status IN ('pending', 'sending')) = (due_at IS NOT NULL)),
        CHECK ((status = 'sending') = (lease_token IS NOT NULL))
    ) STRICT;
    -- Column order matches the claim: one endpoint's due work, earliest first.
    CREATE INDEX deliveries_due ON deliveries (endpoint_id, due_at) WHERE due_at IS NOT NULL;
    CREATE INDEX deliveries_by_endpoint ON deliveries (endpoint_id, msg_id);

    CREATE TABLE attempts (
        id           TEXT PRIMARY KEY,
        app_id       TEXT NOT NULL,
        msg_id       TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        endpoint_id  TEXT NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
        url          TEXT NOT NULL,
        attempted_at INTEGER NOT NULL,
        status_code  INTEGER,            -- NULL: no HTTP response
        duration_ms  INTEGER NOT NULL,
        succeeded    INTEGER NOT NULL CHECK (succeeded IN (0, 1)),
        error_kind   TEXT,
        response     TEXT NOT NULL,      -- excerpt of at most 4 KiB, or the error
        trigger      INTEGER NOT NULL CHECK (trigger IN (0, 1))
    ) STRICT;
    CREATE INDEX attempts_by_msg ON attempts (msg_id, id);
    CREATE INDEX attempts_by_endpoint ON attempts (endpoint_id, id);
    "#,
    // 3: scheduled messages and read-only portal tokens.
    r#"
    ALTER TABLE messages ADD COLUMN deliver_at INTEGER;     -- NULL: deliver at once
    ALTER TABLE api_tokens ADD COLUMN read_only INTEGER NOT NULL DEFAULT 0
        CHECK (read_only IN (0, 1));
    "#,
    // 4: payload validation against event type schemas, per app or per event type.
    r#"
    ALTER TABLE applications ADD COLUMN validate_payloads INTEGER NOT NULL DEFAULT 0
        CHECK (validate_payloads IN (0, 1));
    ALTER TABLE event_types ADD COLUMN validate_payloads INTEGER NOT NULL DEFAULT 0
        CHECK (validate_payloads IN (0, 1));
    "#,
    // 5: eventId uniqueness only where there is an eventId. The table constraint also
    // indexed every message without one, under its app: a page written per message for
    // nothing (a sixth of the WAL pages of a delivered message, see docs/benchmark-journal.md).
    // SQLite cannot drop a table constraint, so the table is rebuilt (foreign keys are
    // off while migrations run, and checked before each commits).
    r#"
    CREATE TABLE messages_v5 (
        id         TEXT PRIMARY KEY,
        app_id     TEXT NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
        event_id   TEXT,
        event_type TEXT NOT NULL,
        payload    TEXT NOT NULL,             -- the exact bytes received and delivered
        channels   TEXT,                      -- JSON array
        tags       TEXT,                      -- JSON array
        created_at INTEGER NOT NULL,
        deliver_at INTEGER                    -- NULL: deliver at once
    ) STRICT;
    INSERT INTO messages_v5 (id, app_id, event_id, event_type, payload, channels, tags, created_at, deliver_at)
        SELECT id, app_id, event_id, event_type, payload, channels, tags, created_at, deliver_at
        FROM messages;
    DROP TABLE messages;
    ALTER TABLE messages_v5 RENAME TO messages;
    CREATE INDEX messages_by_app ON messages (app_id, id);
    -- eventId is the sender's idempotency key: unique per app.
    CREATE UNIQUE INDEX messages_by_event_id ON messages (app_id, event_id)
        WHERE event_id IS NOT NULL;
    "#,
    // 6: the listings by tenant (an application's messages, an endpoint's deliveries and
    // attempts) read key tables filled in batches instead of indexes updated with every
    // row (see `Keyed`). Those indexes took one scattered page per row at every commit;
    // foreign keys that needed them to find children (app -> messages, endpoint ->
    // deliveries and attempts) go too: deleting an application or an endpoint removes
    // its rows itself. Tables are rebuilt keeping their rowids.
    r#"
    CREATE TABLE keyed (
        name TEXT PRIMARY KEY,                -- the keyed table
        upto INTEGER NOT NULL                 -- its rows up to this rowid are in its keys
    ) STRICT;
    CREATE TABLE message_keys (
        tenant TEXT NOT NULL, k TEXT NOT NULL, rid INTEGER NOT NULL, PRIMARY KEY (tenant, k)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE delivery_keys (
        tenant TEXT NOT NULL, k TEXT NOT NULL, rid INTEGER NOT NULL, PRIMARY KEY (tenant, k)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE attempt_keys (
        tenant TEXT NOT NULL, k TEXT NOT NULL, rid INTEGER NOT NULL, PRIMARY KEY (tenant, k)
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE messages_v6 (
        id         TEXT PRIMARY KEY,
        app_id     TEXT NOT NULL,
        event_id   TEXT,
        event_type TEXT NOT NULL,
        payload    TEXT NOT NULL,             -- the exact bytes received and delivered
        channels   TEXT,                      -- JSON array
        tags       TEXT,                      -- JSON array
        created_at INTEGER NOT NULL,
        deliver_at INTEGER                    -- NULL: deliver at once
    ) STRICT;
    INSERT INTO messages_v6 (rowid, id, app_id, event_id, event_type, payload, channels, tags, created_at, deliver_at)
        SELECT rowid, id, app_id, event_id, event_type, payload, channels, tags, created_at, deliver_at
        FROM messages;
    DROP TABLE messages;
    ALTER TABLE messages_v6 RENAME TO messages;
    CREATE UNIQUE INDEX messages_by_event_id ON messages (app_id, event_id)
        WHERE event_id IS NOT NULL;

    CREATE TABLE deliveries_v6 (
        id           INTEGER PRIMARY KEY,
        app_id       TEXT NOT NULL,
        msg_id       TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        endpoint_id  TEXT NOT NULL,
        status       TEXT NOT NULL CHECK (status IN ('pending', 'sending', 'succeeded', 'failed')),
        attempts     INTEGER NOT NULL CHECK (attempts >= 0),
        trigger      INTEGER NOT NULL CHECK (trigger IN (0, 1)),  -- 0 scheduled, 1 manual
        scheduled_at INTEGER NOT NULL,   -- when the current/next attempt is due by policy
        due_at       INTEGER,            -- pending: scheduled_at; sending: lease expiry
        lease_token  TEXT,
        created_at   INTEGER NOT NULL,
        updated_at   INTEGER NOT NULL,
        UNIQUE (msg_id, endpoint_id),
        CHECK ((status IN ('pending', 'sending')) = (due_at IS NOT NULL)),
        CHECK ((status = 'sending') = (lease_token IS NOT NULL))
    ) STRICT;
    INSERT INTO deliveries_v6 SELECT * FROM deliveries;
    DROP TABLE deliveries;
    ALTER TABLE deliveries_v6 RENAME TO deliveries;
    CREATE INDEX deliveries_due ON deliveries (endpoint_id, due_at) WHERE due_at IS NOT NULL;

    CREATE TABLE attempts_v6 (
        id           TEXT PRIMARY KEY,
        app_id       TEXT NOT NULL,
        msg_id       TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        endpoint_id  TEXT NOT NULL,
        url          TEXT NOT NULL,
        attempted_at INTEGER NOT NULL,
        status_code  INTEGER,            -- NULL: no HTTP response
        duration_ms  INTEGER NOT NULL,
        succeeded    INTEGER NOT NULL CHECK (succeeded IN (0, 1)),
        error_kind   TEXT,
        response     TEXT NOT NULL,      -- excerpt of at most 4 KiB, or the error
        trigger      INTEGER NOT NULL CHECK (trigger IN (0, 1))
    ) STRICT;
    INSERT INTO attempts_v6 (rowid, id, app_id, msg_id, endpoint_id, url, attempted_at, status_code,
                             duration_ms, succeeded, error_kind, response, trigger)
        SELECT rowid, id, app_id, msg_id, endpoint_id, url, attempted_at, status_code,
               duration_ms, succeeded, error_kind, response, trigger
        FROM attempts;
    DROP TABLE attempts;
    ALTER TABLE attempts_v6 RENAME TO attempts;
    CREATE INDEX attempts_by_msg ON attempts (msg_id, id);

    INSERT INTO message_keys SELECT app_id, id, rowid FROM messages;
    INSERT INTO delivery_keys SELECT endpoint_id, msg_id, id FROM deliveries;
    INSERT INTO attempt_keys SELECT endpoint_id, id, rowid FROM attempts;
    INSERT INTO keyed (name, upto) VALUES
        ('messages', coalesce((SELECT max(rowid) FROM messages), 0)),
        ('deliveries', coalesce((SELECT max(rowid) FROM deliveries), 0)),
        ('attempts', coalesce((SELECT max(rowid) FROM attempts), 0));
    "#,
    // 7: failing endpoints (an attempt failed since their last success) are claimed
    // apart from healthy ones, within the room the worker has for them: each kind gets
    // its own walk by next_due_at, so however many failing endpoints are due, they never
    // stand in the healthy ones' walk (nor the other way round). An endpoint is in one of
    // the two indexes, so keeping next_due_at up to date costs what it did.
    r#"
    DROP INDEX endpoints_due;
    CREATE INDEX endpoints_due ON endpoints (next_due_at)
        WHERE next_due_at IS NOT NULL AND disabled = 0 AND failing_since IS NULL;
    CREATE INDEX endpoints_due_failing ON endpoints (next_due_at)
        WHERE next_due_at IS NOT NULL AND disabled = 0 AND failing_since IS NOT NULL;
    "#,
    // 8: retention. A message's payload may be dropped before the message itself
    // (Svix's payloadRetentionPeriod/Hours): this is when. A dropped payload is `{}`, so
    // the index holds only payloads still to drop, and the retention pass finds them
    // without a scan. (Old messages are found by id: ids are time-ordered KSUIDs, and
    // their primary key index already exists; see `prune_messages`.)
    r#"
    ALTER TABLE messages ADD COLUMN payload_expires_at INTEGER;   -- NULL: kept with the message
    CREATE INDEX messages_payload_expiry ON messages (payload_expires_at)
        WHERE payload_expires_at IS NOT NULL AND payload <> '{}';
    "#,
    // 9: managed tokens: a name, the first characters of the text (to tell tokens apart
    // in a listing), and when each was last used (written at most once a minute).
    r#"
    ALTER TABLE api_tokens ADD COLUMN name TEXT;
    ALTER TABLE api_tokens ADD COLUMN prefix TEXT;
    ALTER TABLE api_tokens ADD COLUMN last_used_at INTEGER;
    "#,
    // 10: secrets sealed at rest (`sealing`): the check value of the main key the
    // endpoints' secrets are sealed under. Sealing the rows themselves needs the key, so
    // it happens right after the migrations, when the store opens (`seal_in_place`).
    r#"
    CREATE TABLE sealing (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        key_id      TEXT NOT NULL,
        check_value TEXT NOT NULL
    ) STRICT;
    "#,
    // 11: attempt statistics (`crate::stats`): attempts counted by endpoint and hour, and
    // over every endpoint by minute and by hour, with a duration histogram, so charts
    // never read the attempts. Filled from the attempts already written; the bucket
    // expression is `stats::bucket_sql("duration_ms")` (a test checks it still is).
    // And the failing endpoints, longest failing first, for the system page.
    r#"
    CREATE TABLE attempt_stats (
        scope     TEXT NOT NULL,
        span      INTEGER NOT NULL,
        start     INTEGER NOT NULL,
        bucket    INTEGER NOT NULL,
        succeeded INTEGER NOT NULL,
        failed    INTEGER NOT NULL,
        PRIMARY KEY (scope, span, start, bucket)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX attempt_stats_by_start ON attempt_stats (start);
    CREATE INDEX endpoints_failing ON endpoints (failing_since, id)
        WHERE failing_since IS NOT NULL;
    INSERT INTO attempt_stats (scope, span, start, bucket, succeeded, failed)
        SELECT endpoint_id, 3600, attempted_at - attempted_at % 3600000, 
               CASE WHEN duration_ms < 4 THEN duration_ms WHEN duration_ms < 8 THEN 4 + (duration_ms - 4) / 1 WHEN duration_ms < 16 THEN 8 + (duration_ms - 8) / 2 WHEN duration_ms < 32 THEN 12 + (duration_ms - 16) / 4 WHEN duration_ms < 64 THEN 16 + (duration_ms - 32) / 8 WHEN duration_ms < 128 THEN 20 + (duration_ms - 64) / 16 WHEN duration_ms < 256 THEN 24 + (duration_ms - 128) / 32 WHEN duration_ms < 512 THEN 28 + (duration_ms - 256) / 64 WHEN duration_ms < 1024 THEN 32 + (duration_ms - 512) / 128 WHEN duration_ms < 2048 THEN 36 + (duration_ms - 1024) / 256 WHEN duration_ms < 4096 THEN 40 + (duration_ms - 2048) / 512 WHEN duration_ms < 8192 THEN 44 + (duration_ms - 4096) / 1024 WHEN duration_ms < 16384 THEN 48 + (duration_ms - 8192) / 2048 WHEN duration_ms < 32768 THEN 52 + (duration_ms - 16384) / 4096 WHEN duration_ms < 65536 THEN 56 + (duration_ms - 32768) / 8192 WHEN duration_ms < 131072 THEN 60 + (duration_ms - 65536) / 16384 ELSE 63 END,
               sum(succeeded), sum(1 - succeeded)
        FROM attempts GROUP BY 1, 3, 4;
    INSERT INTO attempt_stats (scope, span, start, bucket, succeeded, failed)
        SELECT '', 60, attempted_at - attempted_at % 60000, 
               CASE WHEN duration_ms < 4 THEN duration_ms WHEN duration_ms < 8 THEN 4 + (duration_ms - 4) / 1 WHEN duration_ms < 16 THEN 8 + (duration_ms - 8) / 2 WHEN duration_ms < 32 THEN 12 + (duration_ms - 16) / 4 WHEN duration_ms < 64 THEN 16 + (duration_ms - 32) / 8 WHEN duration_ms < 128 THEN 20 + (duration_ms - 64) / 16 WHEN duration_ms < 256 THEN 24 + (duration_ms - 128) / 32 WHEN duration_ms < 512 THEN 28 + (duration_ms - 256) / 64 WHEN duration_ms < 1024 THEN 32 + (duration_ms - 512) / 128 WHEN duration_ms < 2048 THEN 36 + (duration_ms - 1024) / 256 WHEN duration_ms < 4096 THEN 40 + (duration_ms - 2048) / 512 WHEN duration_ms < 8192 THEN 44 + (duration_ms - 4096) / 1024 WHEN duration_ms < 16384 THEN 48 + (duration_ms - 8192) / 2048 WHEN duration_ms < 32768 THEN 52 + (duration_ms - 16384) / 4096 WHEN duration_ms < 65536 THEN 56 + (duration_ms - 32768) / 8192 WHEN duration_ms < 131072 THEN 60 + (duration_ms - 65536) / 16384 ELSE 63 END,
               sum(succeeded), sum(1 - succeeded)
        FROM attempts GROUP BY 3, 4;
    INSERT INTO attempt_stats (scope, span, start, bucket, succeeded, failed)
        SELECT '', 3600, start, bucket, sum(succeeded), sum(failed)
        FROM attempt_stats WHERE span = 3600 GROUP BY 3, 4;
    "#,
    // 12: an application's messages with a delivery that failed for good (the message
    // log's status filter): the listing walks this index in message order and stops at a
    // page, however few of the app's deliveries failed. Partial: only failures pay for it.
    r#"
    CREATE INDEX deliveries_failed ON deliveries (app_id, msg_id) WHERE status = 'failed';
    "#,
];

pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
    let version: usize = conn
        .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
        .map_err(backend)? as usize;
    if version > MIGRATIONS.len() {
        return Err(StoreError::Backend(format!(
            "database schema version {version} is newer than this hookline ({}); refusing to run an older binary on it",
            MIGRATIONS.len()
        )));
    }
    if version == MIGRATIONS.len() {
        return Ok(());
    }
    // Rebuilding a table means dropping one that others reference: foreign keys are off
    // (only possible outside a transaction) while migrations run, and each migration
    // checks them before it commits.
    conn.execute_batch("PRAGMA foreign_keys = OFF")
        .map_err(backend)?;
    let applied = apply_migrations(conn, version);
    conn.execute_batch("PRAGMA foreign_keys = ON")
        .map_err(backend)?;
    applied
}

pub(super) fn apply_migrations(conn: &mut Connection, from: usize) -> Result<()> {
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(from) {
        let tx = conn.transaction().map_err(backend)?;
        tx.execute_batch(sql).map_err(backend)?;
        let broken = tx
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(backend)?;
        if broken > 0 {
            return Err(StoreError::Backend(format!(
                "sqlite migration {} would leave {broken} rows with dangling references; not applied",
                i + 1
            )));
        }
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
            .map_err(backend)?;
        tx.commit().map_err(backend)?;
        tracing::info!(version = i + 1, "applied sqlite migration");
    }
    Ok(())
}
