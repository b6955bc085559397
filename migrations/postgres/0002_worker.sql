-- Inbox workers (src/worker): claim by lease, retry with backoff, dead letters, replay.

-- When a row became a dead letter (failed max_attempts times, or permanently), so operators see
-- the newest failures first; cleared by a replay.
ALTER TABLE inbox ADD COLUMN dead_at_ms BIGINT;
-- When an operator last put the row back to pending (`scrm replay`): a row done twice is then
-- explained.
ALTER TABLE inbox ADD COLUMN replayed_at_ms BIGINT;

-- The claim reads `state = 'pending' AND lease_until_ms <= now ORDER BY id LIMIT n`. With id before
-- lease_until_ms the rows come in id order (no sort, however long the backlog) and the lease test
-- is answered from the index itself, so rows still in flight or waiting out a retry backoff at the
-- head of the queue cost an index entry each, not a table lookup. Its (state, id) prefix serves
-- everything inbox_state_id did (counts by state, dead letters), so that index goes: one less
-- index to update per insert.
CREATE INDEX inbox_state_id_lease ON inbox (state, id, lease_until_ms);
DROP INDEX inbox_state_id;
