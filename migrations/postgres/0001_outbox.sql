-- The durable outbox: one row per (customer, rule, recipient, nominal occasion).
-- Times are Unix seconds (UTC). State machine and invariants: see ARCHITECTURE.md.
-- Same tables, columns, constraints and indexes as migrations/sqlite/0001_outbox.sql; every
-- integer is BIGINT so it decodes as i64 like SQLite's INTEGER.
CREATE TABLE outbox (
    id             BIGSERIAL PRIMARY KEY,
    key            TEXT    NOT NULL UNIQUE,
    customer       TEXT    NOT NULL,
    rule           TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    action         TEXT    NOT NULL,
    recipient      TEXT    NOT NULL,
    recipient_domain TEXT  NOT NULL,
    nominal        TEXT    NOT NULL,
    occasion_date  TEXT    NOT NULL,
    years          BIGINT,
    timezone       TEXT    NOT NULL,
    due_utc        BIGINT  NOT NULL,
    deadline_utc   BIGINT  NOT NULL,
    message_id     TEXT    NOT NULL,
    delivery       TEXT    NOT NULL DEFAULT 'at_least_once' CHECK (delivery IN ('at_least_once','at_most_once')),
    state          TEXT    NOT NULL CHECK (state IN ('pending','claimed','sending','retry','accepted','failed','missed','suppressed','unknown')),
    attempts       BIGINT  NOT NULL DEFAULT 0,
    next_attempt_utc BIGINT,
    lease_owner    TEXT,
    lease_until    BIGINT,                -- database clock (extract(epoch from now())), never a node clock
    fence          BIGINT  NOT NULL DEFAULT 0,
    reason         TEXT,
    smtp_reply     TEXT,
    created_utc    BIGINT  NOT NULL,
    updated_utc    BIGINT  NOT NULL,
    sent_utc       BIGINT,
    reported_utc   BIGINT                 -- when ops were told about a failed/missed/unknown row
);
CREATE INDEX outbox_open ON outbox (state, due_utc) WHERE state IN ('pending','retry','claimed','sending');
CREATE INDEX outbox_unreported ON outbox (id) WHERE state IN ('failed','missed','unknown') AND reported_utc IS NULL;

-- Small named values the daemon keeps between runs (e.g. how far occasions are materialised).
CREATE TABLE daemon_state (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
