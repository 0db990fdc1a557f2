-- Deliveries in flight per endpoint, for limits that hold across processes: a claim or a
-- fan-out counts an endpoint's unexpired leases through this index (under the endpoint's
-- row lock, so two processes cannot both take its last slot).
CREATE INDEX deliveries_sending ON deliveries (endpoint_id, due_at) WHERE status = 'sending';
