-- The recipient part of an outbox key for a task about the customer as a whole was
-- `owner:customer`, which a contact with the id `customer` could also produce. It is now
-- `owner` (ids never contain `:`), and existing rows follow, so they keep matching the
-- occasions they stand for (rows of a contact with that id were read the same way before).
UPDATE outbox
SET key = replace(key, '/owner:customer/', '/owner/'), recipient = 'owner'
WHERE recipient = 'owner:customer';
