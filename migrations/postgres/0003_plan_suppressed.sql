-- Rows suppressed because the plans no longer produced their key (a rule, contact or date
-- changed or was removed) are revived when the plans produce the key again before its
-- deadline (an edit undone); rows suppressed for any other reason never are.
ALTER TABLE outbox ADD COLUMN plan_suppressed BOOLEAN NOT NULL DEFAULT FALSE;
-- Every suppression so far was one of these.
UPDATE outbox SET plan_suppressed = TRUE WHERE state = 'suppressed';
CREATE INDEX outbox_revivable ON outbox (deadline_utc) WHERE state = 'suppressed' AND plan_suppressed;
