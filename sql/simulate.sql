--
-- simulate_order(): one order's lifecycle fed through ingest() as Biteship
-- would send it, and the operator views.  Times and random ids are never
-- printed; only how they relate.
--
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS biteship_webhook;
RESET client_min_messages;
SET timezone = 'UTC';

SELECT biteship_webhook.create_webhook('sim', '/biteship/sim',
	signature_key => 'X-Sim-Signature', signature_secret => 'sim-secret') > 0 AS signed_webhook;
SELECT biteship_webhook.create_webhook('sim-test', '/biteship/sim-test', 'test') > 0 AS unsigned_test_webhook;

-- an application trigger, to watch it fire: one row per status change
CREATE TABLE sim_moves (order_id text, old_status text, new_status text);
GRANT INSERT ON sim_moves TO biteship_webhook_apply;
CREATE FUNCTION sim_move() RETURNS trigger LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
BEGIN
	INSERT INTO sim_moves VALUES (NEW.order_id, OLD.status, NEW.status);
	RETURN NULL;
END
$$;
CREATE TRIGGER sim_move AFTER INSERT OR UPDATE OF status ON biteship_webhook.orders
	FOR EACH ROW WHEN (NEW.order_id LIKE 'sim-%')
	EXECUTE FUNCTION sim_move();

-- The whole lifecycle, with the waybill, a price change (this id has one),
-- the late dropping_off and the redelivery of delivered, which returns the
-- original event once more.
SELECT s.ordinality AS n, s.event, s.payload->>'status' AS status, s.state, s.http_status,
       s.delivery_count, s.payload->>'courier_waybill_id' AS waybill
  FROM biteship_webhook.simulate_order('sim', 'sim-order-3') WITH ORDINALITY s
 ORDER BY s.ordinality;

-- the order ends delivered, with the waybill and the new price
SELECT environment, order_id, status, is_final, courier_company, courier_type,
       courier_waybill_id, courier_link, order_price, price, shipment_fee,
       courier_driver_name
  FROM biteship_webhook.orders WHERE order_id = 'sim-order-3';
-- every status once, in the order they happened, with advancing times; the
-- late dropping_off arrived after delivered but sits before it
SELECT h.status, h.source,
       h.occurred_at > lag(h.occurred_at) OVER (ORDER BY h.occurred_at) AS later_than_previous,
       h.event_id > lag(h.event_id) OVER (ORDER BY h.occurred_at) AS arrived_after_previous
  FROM biteship_webhook.order_status_history h
 WHERE h.order_id = 'sim-order-3' ORDER BY h.occurred_at;
SELECT o.status_updated_at = max(h.occurred_at) AS order_shows_newest
  FROM biteship_webhook.orders o
  JOIN biteship_webhook.order_status_history h USING (environment, order_id)
 WHERE o.order_id = 'sim-order-3' GROUP BY o.status_updated_at;
-- the redelivery is counted once: one event, delivered twice
SELECT event, payload->>'status' AS status, count(*) AS events, sum(delivery_count) AS deliveries
  FROM biteship_webhook.events WHERE order_id = 'sim-order-3'
 GROUP BY 1, 2 ORDER BY 1, 2;
-- the trigger fired once per real change: not for the late status, not for the redelivery
SELECT old_status, new_status FROM sim_moves WHERE order_id = 'sim-order-3';
-- the deliveries were signed with a one-time secret that is gone again
SELECT DISTINCT headers FROM biteship_webhook.events WHERE order_id = 'sim-order-3';
SELECT count(*) AS secrets_of_sim
  FROM biteship_webhook.webhook_secrets s JOIN biteship_webhook.webhooks w ON w.id = s.webhook_id
 WHERE w.name = 'sim';

-- The same id makes the same order: couriers, prices and waybills follow
-- from it.  Without redelivery and late status, events come in order.
SELECT s.ordinality AS n, s.event, s.payload->>'status' AS status, s.state
  FROM biteship_webhook.simulate_order('sim', 'sim-plain-1', 'SiCepat',
                                       duplicates => false, late => false) WITH ORDINALITY s
 ORDER BY s.ordinality;
SELECT status, courier_company, courier_type, courier_waybill_id, order_price, price
  FROM biteship_webhook.orders WHERE order_id = 'sim-plain-1';
SELECT old_status, new_status FROM sim_moves WHERE order_id = 'sim-plain-1';

-- An instant courier: a driver, an hour from confirmed to delivered, and a
-- test webhook (unsigned, its own environment, Biteship's development link)
SELECT count(*) AS rows, count(DISTINCT id) AS events, max(delivery_count) AS most_deliveries
  FROM biteship_webhook.simulate_order('sim-test', 'sim-instant-1', 'gojek', instant => true);
SELECT environment, status, courier_company, courier_type, courier_driver_name,
       courier_driver_phone, courier_driver_plate_number, courier_driver_photo_url,
       courier_link, order_price
  FROM biteship_webhook.orders WHERE order_id = 'sim-instant-1';
SELECT max(occurred_at) - min(occurred_at) < interval '2 hours' AS within_two_hours
  FROM biteship_webhook.order_status_history WHERE order_id = 'sim-instant-1';
SELECT DISTINCT headers, secret_id FROM biteship_webhook.events WHERE order_id = 'sim-instant-1';
-- a same-day service of an instant courier has a driver too
SELECT count(*) > 0 AS simulated FROM biteship_webhook.simulate_order('sim-test', 'sim-sameday-1', 'grab');
SELECT courier_type, courier_driver_name IS NOT NULL AS has_driver
  FROM biteship_webhook.orders WHERE order_id = 'sim-sameday-1';

-- Without an id, a random one shaped like Biteship's (24 hexadecimal
-- digits, the first 8 the time); rolled back, as its events vary
BEGIN;
SELECT count(DISTINCT order_id) AS orders, min(order_id) ~ '^[0-9a-f]{24}$' AS object_id_like,
       abs(('x' || left(min(order_id), 8))::bit(32)::bigint - extract(epoch FROM now())) < 600 AS starts_with_time
  FROM biteship_webhook.simulate_order('sim');
ROLLBACK;

-- bad arguments
\set VERBOSITY default
SELECT * FROM biteship_webhook.simulate_order('nope');
SELECT * FROM biteship_webhook.simulate_order(NULL);
SELECT * FROM biteship_webhook.simulate_order('sim', courier => 'fedex');
SELECT * FROM biteship_webhook.simulate_order('sim', courier => NULL);
SELECT * FROM biteship_webhook.simulate_order('sim', instant => true);
SELECT * FROM biteship_webhook.simulate_order('sim', 'not an id!');
SELECT * FROM biteship_webhook.simulate_order('sim', repeat('a', 65));
SELECT * FROM biteship_webhook.simulate_order('sim', late => NULL);
-- a failed call leaves nothing behind, not even its one-time secret
SELECT count(*) AS secrets_of_sim
  FROM biteship_webhook.webhook_secrets s JOIN biteship_webhook.webhooks w ON w.id = s.webhook_id
 WHERE w.name = 'sim';

--
-- Operator views
--

-- failed_last_hour: an application trigger that raises, and a forgery
CREATE FUNCTION sim_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION 'the warehouse refuses order %', NEW.order_id;
END
$$;
CREATE TRIGGER sim_refuse BEFORE INSERT OR UPDATE ON biteship_webhook.orders
	FOR EACH ROW WHEN (NEW.order_id LIKE 'fail-%')
	EXECUTE FUNCTION sim_refuse();
SELECT state, count(*) FROM biteship_webhook.simulate_order('sim', 'fail-order-1', 'tiki',
                                                            duplicates => false, late => false)
 GROUP BY 1;
SELECT http_status, state, error
  FROM biteship_webhook.ingest('sim', '{"event":"order.status","order_id":"sim-forged","status":"delivered"}'::text,
                               '{"X-Sim-Signature": "guessed"}');
SELECT source, webhook, environment, event, order_id, state, http_status, reason, attempts
  FROM biteship_webhook.failed_last_hour
 WHERE webhook LIKE 'sim%'
 ORDER BY event_id;
-- older than an hour: out of the view
UPDATE biteship_webhook.events SET received_at = now() - interval '61 minutes'
 WHERE order_id = 'fail-order-1' AND event = 'order.waybill_id';
SELECT count(*) AS failed_waybill_events FROM biteship_webhook.failed_last_hour
 WHERE order_id = 'fail-order-1' AND event = 'order.waybill_id';
DROP TRIGGER sim_refuse ON biteship_webhook.orders;

-- stalled_orders: active and quiet for more than a day; not a final order,
-- not an active one that moved recently
SELECT state FROM biteship_webhook.ingest('sim-test',
	'{"event":"order.status","order_id":"sim-stalled","status":"picked","courier_company":"jne","courier_waybill_id":"JX0001"}'::text);
SELECT state FROM biteship_webhook.ingest('sim-test',
	'{"event":"order.status","order_id":"sim-moving","status":"picked"}'::text);
UPDATE biteship_webhook.orders SET updated_at = now() - interval '2 days'
 WHERE order_id IN ('sim-stalled', 'sim-instant-1');
INSERT INTO biteship_webhook.order_syncs (environment, order_id, last_sync_at, last_result, last_error)
VALUES ('test', 'sim-stalled', now(), 'no_key', 'no Biteship API key is set for environment test');
SELECT environment, order_id, status, courier_company, courier_waybill_id,
       quiet_for >= interval '2 days' AS quiet_two_days, last_sync_result, last_sync_error
  FROM biteship_webhook.stalled_orders WHERE order_id LIKE 'sim-%';

-- deliveries_per_hour: per webhook, by state, over the last 24 hours (summed
-- over the hours, in case the test runs across an hour's end); an event
-- received two days ago is left out
UPDATE biteship_webhook.events SET received_at = now() - interval '2 days'
 WHERE order_id = 'sim-moving';
SELECT webhook, environment, sum(deliveries) AS deliveries, sum(redeliveries) AS redeliveries,
       sum(applied) AS applied, sum(failed) AS failed, sum(rejected) AS rejected,
       sum(ignored) AS ignored, sum(pending) AS pending, sum(pings) AS pings
  FROM biteship_webhook.deliveries_per_hour
 WHERE webhook LIKE 'sim%'
 GROUP BY 1, 2 ORDER BY 1;
SELECT bool_and(hour = date_trunc('hour', hour) AND hour > now() - interval '24 hours') AS hours_of_the_last_day
  FROM biteship_webhook.deliveries_per_hour;

-- dead_outbox: per endpoint, without its URL, headers or secrets
SET log_statement = 'none';
SELECT biteship_webhook.create_endpoint('sim-crm', 'http://127.0.0.1:9/crm?token=url-secret',
	headers => '{"Authorization": "Bearer header-secret"}',
	signing_secret => 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw') > 0 AS endpoint;
SELECT biteship_webhook.create_endpoint('sim-ok', 'http://127.0.0.1:9/ok') > 0 AS endpoint;
RESET log_statement;
SELECT count(*) AS queued FROM generate_series(1, 3) i,
       LATERAL biteship_webhook.send('sim-crm', jsonb_build_object('n', i)) m;
SELECT biteship_webhook.send('sim-ok', '{"n": 4}') > 0 AS queued;
-- two of them die (as the outbound worker records it), one stays pending
UPDATE biteship_webhook.outbox SET state = 'dead', attempts = 10, last_status = 404,
       last_error = CASE WHEN body::jsonb->>'n' = '1' THEN 'the endpoint answered 404' ELSE 'the endpoint answered 404 again' END
 WHERE endpoint_id = (SELECT id FROM biteship_webhook.endpoints WHERE name = 'sim-crm')
   AND body::jsonb->>'n' IN ('1', '2');
SELECT endpoint, enabled, disabled_reason, dead_messages,
       newest_message_id - oldest_message_id AS id_span, last_status, last_error
  FROM biteship_webhook.dead_outbox WHERE endpoint LIKE 'sim-%' ORDER BY endpoint;
SELECT count(*) AS secrets_in_views
  FROM biteship_webhook.dead_outbox d
 WHERE d.endpoint LIKE 'sim-%' AND row_to_json(d)::text ~ 'secret|token|Bearer|127\.0\.0\.1';

-- the views' columns: nothing that holds a secret, a header or a body
SELECT c.relname, string_agg(a.attname, ', ' ORDER BY a.attnum) AS columns
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
 WHERE c.oid IN ('biteship_webhook.failed_last_hour'::regclass, 'biteship_webhook.stalled_orders'::regclass,
                 'biteship_webhook.deliveries_per_hour'::regclass, 'biteship_webhook.dead_outbox'::regclass)
   AND a.attnum > 0
 GROUP BY c.relname ORDER BY c.relname;

--
-- Privileges: a role that is not the owner
--
CREATE ROLE bw_sim_app;
GRANT USAGE ON SCHEMA biteship_webhook TO bw_sim_app;
SET ROLE bw_sim_app;
SELECT * FROM biteship_webhook.simulate_order('sim');
SELECT count(*) FROM biteship_webhook.failed_last_hour;
SELECT count(*) FROM biteship_webhook.stalled_orders;
SELECT count(*) FROM biteship_webhook.deliveries_per_hour;
SELECT count(*) FROM biteship_webhook.dead_outbox;
RESET ROLE;
-- EXECUTE on simulate_order() alone gains nothing: it runs with the
-- caller's rights, which cannot read the webhooks, add a secret or ingest
GRANT EXECUTE ON FUNCTION biteship_webhook.simulate_order(text, text, text, boolean, boolean, boolean) TO bw_sim_app;
SET ROLE bw_sim_app;
SELECT * FROM biteship_webhook.simulate_order('sim');
RESET ROLE;
GRANT SELECT ON biteship_webhook.webhooks TO bw_sim_app;
SET ROLE bw_sim_app;
SELECT * FROM biteship_webhook.simulate_order('sim');
SELECT * FROM biteship_webhook.simulate_order('sim-test');
RESET ROLE;
-- the documented grant for monitoring: the views, and still nothing below them
GRANT SELECT ON biteship_webhook.failed_last_hour, biteship_webhook.stalled_orders,
	biteship_webhook.deliveries_per_hour, biteship_webhook.dead_outbox TO bw_sim_app;
SET ROLE bw_sim_app;
SELECT count(*) > 0 AS reads_failed FROM biteship_webhook.failed_last_hour WHERE webhook = 'sim';
SELECT count(*) > 0 AS reads_stalled FROM biteship_webhook.stalled_orders;
SELECT count(*) > 0 AS reads_per_hour FROM biteship_webhook.deliveries_per_hour;
SELECT count(*) > 0 AS reads_dead FROM biteship_webhook.dead_outbox;
SELECT count(*) FROM biteship_webhook.events;
SELECT count(*) FROM biteship_webhook.endpoints;
SELECT count(*) FROM biteship_webhook.outbox;
RESET ROLE;
SELECT has_function_privilege('public', 'biteship_webhook.simulate_order(text, text, text, boolean, boolean, boolean)', 'EXECUTE') AS public_may_simulate,
       has_table_privilege('public', 'biteship_webhook.dead_outbox', 'SELECT') AS public_reads_dead_outbox;

-- clean up
REVOKE ALL ON biteship_webhook.failed_last_hour, biteship_webhook.stalled_orders,
	biteship_webhook.deliveries_per_hour, biteship_webhook.dead_outbox,
	biteship_webhook.webhooks FROM bw_sim_app;
REVOKE ALL ON FUNCTION biteship_webhook.simulate_order(text, text, text, boolean, boolean, boolean) FROM bw_sim_app;
REVOKE ALL ON SCHEMA biteship_webhook FROM bw_sim_app;
DROP ROLE bw_sim_app;
DROP TRIGGER sim_move ON biteship_webhook.orders;
DROP FUNCTION sim_move(), sim_refuse();
REVOKE ALL ON sim_moves FROM biteship_webhook_apply;
DROP TABLE sim_moves;
SELECT biteship_webhook.drop_endpoint('sim-crm');
SELECT biteship_webhook.drop_endpoint('sim-ok');
SELECT biteship_webhook.drop_webhook('sim');
SELECT biteship_webhook.drop_webhook('sim-test');
