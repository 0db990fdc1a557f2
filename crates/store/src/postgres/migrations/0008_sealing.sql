-- Secrets sealed at rest: the check value of the main key the endpoints' secrets are
-- sealed under (see the store's `sealing` module). Sealing the rows needs the key, so the
-- first process of this version to start seals them after the migrations, under the
-- migration lock. Not additive: a hookline older than this reads a sealed endpoint as a
-- damaged row, so none may start on the database once this is applied.
CREATE TABLE sealing (
    id          integer PRIMARY KEY CHECK (id = 1),
    key_id      text NOT NULL,
    check_value text NOT NULL
);
