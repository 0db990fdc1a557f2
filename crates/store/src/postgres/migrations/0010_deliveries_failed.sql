-- An application's messages with a delivery that failed for good (the message log's
-- status filter): the listing walks this index in message order and stops at a page,
-- however few of the app's deliveries failed. Partial: only failures pay for it.
CREATE INDEX deliveries_failed ON deliveries (app_id, msg_id) WHERE status = 'failed';
