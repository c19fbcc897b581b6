-- SQLite drops its `outbox_customer_sent` index in this migration (the brief's "last sent" reads
-- a range of the unique key index there instead). PostgreSQL keeps it: a range over `key` would
-- need the "C" collation, which the default-collation index cannot serve.
SELECT 1;
