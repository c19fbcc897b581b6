-- What the plans last said about each relationship, as detection compares it at every plan
-- load and reload: the primary contact (its id, and a JSON card of name, email, phone and
-- role, so a departed contact can still be named once removed), the salesperson and the
-- phase. A customer seen for the first time is recorded here without a change. Updated only
-- with a compare-and-set on the values read, in the same transaction as its change rows.
CREATE TABLE customer_state (
    customer      TEXT    PRIMARY KEY,
    primary_id    TEXT    NOT NULL,
    primary_card  TEXT    NOT NULL,
    owner         TEXT    NOT NULL,
    phase         TEXT    NOT NULL,
    updated_utc   INTEGER NOT NULL
);

-- One row per change of a customer's primary contact (handover), salesperson (owner) or
-- phase, from and to; `departed` is the card of the previous primary contact (handovers).
-- `evaluated_utc` is set once the change's rows are in the outbox (evaluation is idempotent:
-- outbox keys `handover:<seq>`, `owner-change:<seq>`, `phase:<seq>`).
CREATE TABLE customer_changes (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    customer      TEXT    NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('handover','owner','phase')),
    from_value    TEXT    NOT NULL,
    to_value      TEXT    NOT NULL,
    departed      TEXT,
    source        TEXT    NOT NULL CHECK (source IN ('plan','cli')),
    created_utc   INTEGER NOT NULL,
    evaluated_utc INTEGER
);
CREATE INDEX customer_changes_pending ON customer_changes (seq) WHERE evaluated_utc IS NULL;

-- A brief lists the last messages sent to or about a customer.
CREATE INDEX outbox_customer_sent ON outbox (customer, sent_utc) WHERE state = 'accepted';
