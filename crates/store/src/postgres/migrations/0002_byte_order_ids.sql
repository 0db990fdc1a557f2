-- hookline on PostgreSQL, schema version 2: ids and event type names compare byte by
-- byte (collation "C"), whatever the database's own collation.
--
-- Listings page by these columns (`WHERE id > $cursor ORDER BY id`), and ids are KSUIDs
-- whose base62 text sorts by creation time only in byte order (0-9 < A-Z < a-z). Under a
-- linguistic collation such as en_US.UTF-8, 'app_a...' sorts before 'app_B...': pages
-- would still be consistent, but not in creation order, and not in SQLite's order. The
-- referencing columns change with them, so joins and foreign keys compare alike. Every
-- index on these columns is rebuilt with the new collation by ALTER ... TYPE.

ALTER TABLE applications ALTER COLUMN id TYPE text COLLATE "C";
ALTER TABLE event_types ALTER COLUMN name TYPE text COLLATE "C";
ALTER TABLE endpoints
    ALTER COLUMN id TYPE text COLLATE "C",
    ALTER COLUMN app_id TYPE text COLLATE "C";
ALTER TABLE messages
    ALTER COLUMN id TYPE text COLLATE "C",
    ALTER COLUMN app_id TYPE text COLLATE "C";
ALTER TABLE deliveries
    ALTER COLUMN app_id TYPE text COLLATE "C",
    ALTER COLUMN msg_id TYPE text COLLATE "C",
    ALTER COLUMN endpoint_id TYPE text COLLATE "C";
ALTER TABLE attempts
    ALTER COLUMN id TYPE text COLLATE "C",
    ALTER COLUMN app_id TYPE text COLLATE "C",
    ALTER COLUMN msg_id TYPE text COLLATE "C",
    ALTER COLUMN endpoint_id TYPE text COLLATE "C";
ALTER TABLE api_tokens ALTER COLUMN app_id TYPE text COLLATE "C";
