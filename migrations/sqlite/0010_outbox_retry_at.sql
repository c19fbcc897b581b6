-- The next due instant (`Store::next_due`, read every tick and while a per-second cap waits)
-- without reading every open row: the earliest `due_utc` of open rows without a retry time comes
-- from `outbox_open` (state, due_utc) in index order, and the rows with a retry time (usually
-- few: retries and rows given back after one) from this index.
CREATE INDEX outbox_retry_at ON outbox (next_attempt_utc)
    WHERE state IN ('pending', 'retry') AND next_attempt_utc IS NOT NULL;
