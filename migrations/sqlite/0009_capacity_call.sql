-- "Call instead" (issue 15): a row announced `missed` because the relay's caps cannot send it
-- before its deadline gets an entry here, in the transaction that marks it, naming the
-- salesperson to tell and the customer's language. The salesperson's digest email lists their
-- untold entries and sets `told_utc` only after the relay accepted it, so no announcement is lost
-- to a relay that is down or a daemon that stops in between.
--
-- A table of its own, not columns on `outbox`: only announced rows have an entry; the digest's
-- lease and fate are not the row's (the row is finished, `missed`; its delivery lease columns and
-- fence belong to the claim/finish path); and an entry carries what its digest needs (the key,
-- the deadline), so it outlives retention's purge of the outbox row.
--
-- `digest`: the digest an entry was first claimed into (its Message-ID derives from it), kept
-- when a send fails or its daemon stops, so the digest is resent with the same entries and the
-- same Message-ID. `lease_owner`/`lease_until` (database clock): the daemon sending it.
CREATE TABLE capacity_call (
    row_id        INTEGER PRIMARY KEY,
    key           TEXT    NOT NULL,
    owner         TEXT    NOT NULL,
    language      TEXT    NOT NULL,
    deadline_utc  INTEGER NOT NULL,
    announced_utc INTEGER NOT NULL,
    digest        TEXT,
    lease_owner   TEXT,
    lease_until   INTEGER,
    told_utc      INTEGER
);
CREATE INDEX capacity_call_untold ON capacity_call (owner, row_id) WHERE told_utc IS NULL;
