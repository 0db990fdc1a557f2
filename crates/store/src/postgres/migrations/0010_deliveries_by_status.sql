-- An application's messages by the state of their deliveries (the message log's status
-- filter): the listing walks this index in message order and stops at a page, however
-- few of the app's deliveries are in the state asked for.
CREATE INDEX deliveries_by_status ON deliveries (app_id, status, msg_id);
