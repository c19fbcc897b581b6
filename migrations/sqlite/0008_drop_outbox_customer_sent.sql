-- The brief's "last greetings and tasks" (Store::recent_sent) reads one customer's rows through
-- the unique index on `key` (every key starts with `<customer>/`), so this index, which every
-- accepted outcome had to update, goes: it cost the group commit about a sixth of the dispatch
-- throughput (BENCHMARKS.md, "Dispatch throughput").
DROP INDEX IF EXISTS outbox_customer_sent;
