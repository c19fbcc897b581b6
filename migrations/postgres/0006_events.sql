-- A handover declared with `contactplan handover` while the plan may still name the previous
-- primary contact: the stored state records the declared primary (`primary_id`) and the
-- declared previous one, so a plan load that still names `declared_from` as primary is not a
-- reverse handover (until the plan changes again). Cleared when the plan names another primary.
ALTER TABLE customer_state ADD COLUMN declared_from TEXT;
ALTER TABLE customer_state ADD COLUMN declared_on   TEXT;

-- Custom events of customers (`contactplan event`, later `POST /api/v1/events`): one row per
-- customer and event id, so recording the same id again records nothing. `evaluated_utc` is
-- set once the event's rows (`on = "event"` rules, keys `event:<id>`) are in the outbox.
CREATE TABLE customer_events (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer      TEXT    NOT NULL,
    event_id      TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    note          TEXT,
    event_date    TEXT    NOT NULL,
    source        TEXT    NOT NULL,
    created_utc   BIGINT  NOT NULL,
    evaluated_utc BIGINT,
    UNIQUE (customer, event_id)
);
CREATE INDEX customer_events_pending ON customer_events (seq) WHERE evaluated_utc IS NULL;

-- Inactivity reads each customer's latest order days.
CREATE INDEX orders_customer_date ON orders (customer, order_date);
