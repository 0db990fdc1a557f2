-- Retention. A message's payload may be dropped before the message itself (Svix's
-- payloadRetentionPeriod/Hours): this is when (NULL: kept with the message). A dropped
-- payload is '{}', which a hookline one version older shows as it is (hence additive),
-- and which leaves this partial index: it holds only payloads still to drop, so the
-- retention pass finds them without a scan. Old messages are found by id (time-ordered
-- KSUIDs, already indexed).
ALTER TABLE messages ADD COLUMN payload_expires_at timestamptz;
CREATE INDEX messages_payload_expiry ON messages (payload_expires_at)
    WHERE payload_expires_at IS NOT NULL AND payload <> '{}';
