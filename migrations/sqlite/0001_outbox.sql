-- The durable outbox: one row per (customer, rule, recipient, nominal occasion).
-- Times are Unix seconds (UTC). State machine and invariants: see ARCHITECTURE.md.
CREATE TABLE outbox (
    id             INTEGER PRIMARY KEY,
    key            TEXT    NOT NULL UNIQUE,
    customer       TEXT    NOT NULL,
    rule           TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    action         TEXT    NOT NULL,
    recipient      TEXT    NOT NULL,
    recipient_domain TEXT  NOT NULL,
    nominal        TEXT    NOT NULL,
    occasion_date  TEXT    NOT NULL,
    years          INTEGER,
    timezone       TEXT    NOT NULL,
    due_utc        INTEGER NOT NULL,
    deadline_utc   INTEGER NOT NULL,
    message_id     TEXT    NOT NULL,
    delivery       TEXT    NOT NULL DEFAULT 'at_least_once' CHECK (delivery IN ('at_least_once','at_most_once')),
    state          TEXT    NOT NULL CHECK (state IN ('pending','claimed','sending','retry','accepted','failed','missed','suppressed','unknown')),
    attempts       INTEGER NOT NULL DEFAULT 0,
    next_attempt_utc INTEGER,
    lease_owner    TEXT,
    lease_until    INTEGER,
    fence          INTEGER NOT NULL DEFAULT 0,
    reason         TEXT,
    smtp_reply     TEXT,
    created_utc    INTEGER NOT NULL,
    updated_utc    INTEGER NOT NULL,
    sent_utc       INTEGER,
    reported_utc   INTEGER          -- when ops were told about a failed/missed/unknown row
);
CREATE INDEX outbox_open ON outbox (state, due_utc) WHERE state IN ('pending','retry','claimed','sending');
CREATE INDEX outbox_unreported ON outbox (id) WHERE state IN ('failed','missed','unknown') AND reported_utc IS NULL;

-- Small named values the daemon keeps between runs (e.g. how far occasions are materialised).
CREATE TABLE daemon_state (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
