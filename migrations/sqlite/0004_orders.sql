-- Orders, one row per customer and order id: the same order imported twice is one row, a
-- correction (same id, new date or amount) updates it. Amounts are decimal text exactly as
-- given (never a float). Dates are civil dates (YYYY-MM-DD).
CREATE TABLE orders (
    customer     TEXT    NOT NULL,
    order_id     TEXT    NOT NULL,
    order_date   TEXT    NOT NULL,
    amount       TEXT,
    currency     TEXT,
    reference    TEXT,
    created_utc  INTEGER NOT NULL,
    updated_utc  INTEGER NOT NULL,
    PRIMARY KEY (customer, order_id)
);

-- Each customer's running totals: order count and revenue per currency (JSON object of
-- decimal strings, e.g. {"EUR":"1234.50"}), kept in step with `orders` in the same transaction.
CREATE TABLE order_totals (
    customer     TEXT    PRIMARY KEY,
    order_count  INTEGER NOT NULL,
    revenue      TEXT    NOT NULL
);

-- One row per customer and change (one `orders add`, one import, one API call) that changed
-- its totals: before and after, which milestone evaluation compares. `evaluated_utc` is set
-- once the change's milestones are in the outbox (evaluation is idempotent: outbox keys).
CREATE TABLE order_changes (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    customer        TEXT    NOT NULL,
    source          TEXT    NOT NULL,
    count_before    INTEGER NOT NULL,
    count_after     INTEGER NOT NULL,
    revenue_before  TEXT    NOT NULL,
    revenue_after   TEXT    NOT NULL,
    created_utc     INTEGER NOT NULL,
    evaluated_utc   INTEGER
);
CREATE INDEX order_changes_pending ON order_changes (seq) WHERE evaluated_utc IS NULL;

-- What an event row's template is told (JSON): for an order milestone the threshold, the
-- order count, revenue (total and by year). NULL for calendar occasions.
ALTER TABLE outbox ADD COLUMN facts TEXT;
