--
-- Hardening details reachable from SQL: applied_at of failed events, a
-- redelivery racing the retention purge, and the check hooks of the
-- settings.
--
SET timezone = 'UTC';
\set sig '{"X-Biteship-Signature": "live-secret-1"}'

-- A failed event has no applied_at: it was never applied.
SELECT state, event_id AS failed_id
  FROM biteship_webhook.ingest('live', '{"event":"order.status","status":"picked","note":"no order id"}'::text, :'sig') \gset
SELECT :'state' AS state, applied_at IS NULL AS no_applied_at, attempts
  FROM biteship_webhook.events WHERE id = :failed_id;

-- A redelivery whose original disappears between its insert (which finds
-- the original) and its update of the original's delivery count, as when
-- the retention purge runs in between: it is logged again, never an error.
CREATE TABLE race_once (done boolean NOT NULL);
INSERT INTO race_once VALUES (false);
CREATE FUNCTION purge_race() RETURNS trigger LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
BEGIN
	IF NOT (SELECT done FROM race_once) THEN
		UPDATE race_once SET done = true;
		DELETE FROM biteship_webhook.events WHERE order_id = 'race-1';
	END IF;
	RETURN NULL;
END
$$;
\set race '{"event":"order.status","order_id":"race-1","status":"picked"}'
SELECT event_id AS race_first FROM biteship_webhook.ingest('live', :'race'::text, :'sig') \gset
CREATE TRIGGER purge_race AFTER INSERT ON biteship_webhook.events
	FOR EACH STATEMENT EXECUTE FUNCTION purge_race();
SELECT http_status, state, event_id > :race_first AS new_event
  FROM biteship_webhook.ingest('live', :'race'::text, :'sig');
SELECT done AS purge_ran FROM race_once;
SELECT count(*) AS race_events FROM biteship_webhook.events WHERE order_id = 'race-1';
DROP TRIGGER purge_race ON biteship_webhook.events;
DROP TABLE race_once;
DROP FUNCTION purge_race();

-- Settings are checked when they are set, not when the listener trips on
-- them.
ALTER SYSTEM SET biteship_webhook.trusted_proxies = '10.0.0.0/33';
ALTER SYSTEM SET biteship_webhook.metrics_allow = 'everyone';
ALTER SYSTEM SET biteship_webhook.apply_role = 'a_role_name_longer_than_sixty_three_bytes_is_not_a_role_name_at_all';
ALTER SYSTEM SET biteship_webhook.unverified_log_rate = -2;
ALTER SYSTEM SET biteship_webhook.apply_timeout = '-1s';
ALTER SYSTEM SET biteship_webhook.trusted_proxies = '10.0.0.0/8, ::1';
ALTER SYSTEM RESET biteship_webhook.trusted_proxies;
-- and the apply role cannot be changed from a session
SET biteship_webhook.apply_role = 'postgres';
SHOW biteship_webhook.apply_role;
