/* biteship_webhook--0.3.0--0.4.0.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION biteship_webhook UPDATE TO '0.4.0'" to load this file. \quit

--
-- A time-ordered dedup key.  The index on (webhook_id, body_sha256) put
-- every new delivery at a random place in the index: once the log holds
-- millions of events, the first touch of each of its leaf pages after a
-- checkpoint writes a full-page image to WAL, and most deliveries paid for
-- one.  Biteship's order ids are MongoDB ObjectIds, whose first 8 hex
-- digits are the order's creation time in seconds: with them in front of
-- the digest, a day's deliveries land in the few pages of the orders that
-- are still moving.  The order id is part of the body, so a redelivery of
-- the same body has the same key: deduplication is exactly as before.
--
-- The index is rebuilt under an exclusive lock on events: deliveries wait
-- while it builds, about a second per million events.
--
DROP INDEX biteship_webhook.events_dedup_idx;

CREATE UNIQUE INDEX events_dedup_idx
	ON biteship_webhook.events
	(webhook_id, (pg_catalog.substr(COALESCE(order_id, ''), 1, 8)) COLLATE "C", body_sha256)
	WHERE state <> 'rejected';
