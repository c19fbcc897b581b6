-- Relay limits (issue 15). `priority` is the rule's `priority` (higher first among rows of the
-- same deadline hour), written at materialisation. `relay_budget` holds one row per window kind
-- ('second', 'minute', 'hour', 'day': the window's start in Unix seconds of the database clock,
-- aligned to UTC, and the rows claimed in it) and one 'pause' row (`start` = the database time
-- until which nothing is claimed, after a quota reply). Claims read and update it in the
-- transaction that claims, so several daemons on one database share the limits.
ALTER TABLE outbox ADD COLUMN priority BIGINT NOT NULL DEFAULT 0;
CREATE INDEX outbox_by_deadline ON outbox (deadline_utc, id) WHERE state IN ('pending','retry');
CREATE TABLE relay_budget (
    kind  TEXT    PRIMARY KEY,
    start BIGINT NOT NULL,
    used  BIGINT NOT NULL
);
INSERT INTO relay_budget (kind, start, used) VALUES ('second', 0, 0), ('minute', 0, 0), ('hour', 0, 0), ('day', 0, 0), ('pause', 0, 0);
