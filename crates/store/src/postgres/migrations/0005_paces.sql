-- throttleRate across processes: each paced endpoint's or application's (its id is the
-- key) next free start time. A claim that takes paced work locks the rows it needs, books
-- each delivery the next free start and moves `next_at` on by 1/rate, so every process's
-- attempts together keep the rate. No foreign key: only claims lock these rows, so they
-- never wait in a cycle with a delete; a deleted endpoint's or application's row is
-- harmless (one row, never read again).
CREATE TABLE paces (
    key     text PRIMARY KEY,
    next_at timestamptz NOT NULL
);
