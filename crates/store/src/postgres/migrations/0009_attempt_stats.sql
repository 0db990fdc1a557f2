-- Attempt statistics (the store's `stats` module): attempts counted by endpoint and
-- hour, and over every endpoint by minute and by hour, with a duration histogram, so
-- charts never read the attempts. A new table only: a hookline one version older
-- neither reads nor writes it (its attempts are then not counted, see README "Running
-- several nodes"). Filled from the attempts already written; the bucket expression is
-- `stats::bucket_sql("duration_ms")` (a test checks it still is).
CREATE TABLE attempt_stats (
    scope     text NOT NULL,
    span      integer NOT NULL,
    start     timestamptz NOT NULL,
    bucket    smallint NOT NULL,
    shard     smallint NOT NULL,
    succeeded bigint NOT NULL,
    failed    bigint NOT NULL,
    PRIMARY KEY (scope, span, start, bucket, shard)
);
CREATE INDEX attempt_stats_by_start ON attempt_stats (start);
-- The failing endpoints, longest failing first, for the system page.
CREATE INDEX endpoints_failing ON endpoints (failing_since, id) WHERE failing_since IS NOT NULL;
INSERT INTO attempt_stats (scope, span, start, bucket, shard, succeeded, failed)
    SELECT endpoint_id, 3600, to_timestamp(floor(extract(epoch FROM attempted_at) / 3600) * 3600),
           CASE WHEN duration_ms < 4 THEN duration_ms WHEN duration_ms < 8 THEN 4 + (duration_ms - 4) / 1 WHEN duration_ms < 16 THEN 8 + (duration_ms - 8) / 2 WHEN duration_ms < 32 THEN 12 + (duration_ms - 16) / 4 WHEN duration_ms < 64 THEN 16 + (duration_ms - 32) / 8 WHEN duration_ms < 128 THEN 20 + (duration_ms - 64) / 16 WHEN duration_ms < 256 THEN 24 + (duration_ms - 128) / 32 WHEN duration_ms < 512 THEN 28 + (duration_ms - 256) / 64 WHEN duration_ms < 1024 THEN 32 + (duration_ms - 512) / 128 WHEN duration_ms < 2048 THEN 36 + (duration_ms - 1024) / 256 WHEN duration_ms < 4096 THEN 40 + (duration_ms - 2048) / 512 WHEN duration_ms < 8192 THEN 44 + (duration_ms - 4096) / 1024 WHEN duration_ms < 16384 THEN 48 + (duration_ms - 8192) / 2048 WHEN duration_ms < 32768 THEN 52 + (duration_ms - 16384) / 4096 WHEN duration_ms < 65536 THEN 56 + (duration_ms - 32768) / 8192 WHEN duration_ms < 131072 THEN 60 + (duration_ms - 65536) / 16384 ELSE 63 END,
           0, count(*) FILTER (WHERE succeeded), count(*) FILTER (WHERE NOT succeeded)
    FROM attempts GROUP BY 1, 3, 4;
INSERT INTO attempt_stats (scope, span, start, bucket, shard, succeeded, failed)
    SELECT '', 60, to_timestamp(floor(extract(epoch FROM attempted_at) / 60) * 60),
           CASE WHEN duration_ms < 4 THEN duration_ms WHEN duration_ms < 8 THEN 4 + (duration_ms - 4) / 1 WHEN duration_ms < 16 THEN 8 + (duration_ms - 8) / 2 WHEN duration_ms < 32 THEN 12 + (duration_ms - 16) / 4 WHEN duration_ms < 64 THEN 16 + (duration_ms - 32) / 8 WHEN duration_ms < 128 THEN 20 + (duration_ms - 64) / 16 WHEN duration_ms < 256 THEN 24 + (duration_ms - 128) / 32 WHEN duration_ms < 512 THEN 28 + (duration_ms - 256) / 64 WHEN duration_ms < 1024 THEN 32 + (duration_ms - 512) / 128 WHEN duration_ms < 2048 THEN 36 + (duration_ms - 1024) / 256 WHEN duration_ms < 4096 THEN 40 + (duration_ms - 2048) / 512 WHEN duration_ms < 8192 THEN 44 + (duration_ms - 4096) / 1024 WHEN duration_ms < 16384 THEN 48 + (duration_ms - 8192) / 2048 WHEN duration_ms < 32768 THEN 52 + (duration_ms - 16384) / 4096 WHEN duration_ms < 65536 THEN 56 + (duration_ms - 32768) / 8192 WHEN duration_ms < 131072 THEN 60 + (duration_ms - 65536) / 16384 ELSE 63 END,
           0, count(*) FILTER (WHERE succeeded), count(*) FILTER (WHERE NOT succeeded)
    FROM attempts GROUP BY 3, 4;
INSERT INTO attempt_stats (scope, span, start, bucket, shard, succeeded, failed)
    SELECT '', 3600, start, bucket, 0, sum(succeeded), sum(failed)
    FROM attempt_stats WHERE span = 3600 GROUP BY 3, 4;
