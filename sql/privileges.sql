--
-- What an application role can and cannot do with the documented grants.
--
CREATE ROLE bw_app;
-- the grants README.md documents
GRANT USAGE ON SCHEMA biteship_webhook TO bw_app;
GRANT SELECT, TRIGGER ON biteship_webhook.orders, biteship_webhook.order_status_history TO bw_app;
CREATE SCHEMA app AUTHORIZATION bw_app;

SET ROLE bw_app;
SELECT count(*) > 0 AS can_read_orders FROM biteship_webhook.orders;
SELECT count(*) > 0 AS can_read_history FROM biteship_webhook.order_status_history;

CREATE TABLE app.shipped (order_id text, status text);
CREATE FUNCTION app.on_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO app.shipped VALUES (NEW.order_id, NEW.status);
	RETURN NULL;
END
$$;
CREATE TRIGGER app_on_status AFTER UPDATE OF status ON biteship_webhook.orders
	FOR EACH ROW EXECUTE FUNCTION app.on_status();

-- secrets, configuration, the raw log and admin functions are out of reach
SELECT * FROM biteship_webhook.webhook_secrets;
SELECT * FROM biteship_webhook.webhooks;
SELECT count(*) FROM biteship_webhook.events;
SELECT biteship_webhook.create_webhook('evil', '/evil');
SELECT biteship_webhook.add_webhook_secret('live', 'mine');
SELECT * FROM biteship_webhook.ingest('live', ''::text);
SELECT biteship_webhook.replay(1);
SELECT biteship_webhook.purge_events('0 days');
UPDATE biteship_webhook.orders SET status = 'delivered';
DELETE FROM biteship_webhook.order_status_history;
RESET ROLE;

-- the application's trigger fires when the receiver changes an order
SELECT state FROM biteship_webhook.ingest('live', '{"event":"order.status","order_id":"ord-2","status":"picked"}'::text, '{"X-Biteship-Signature": "live-secret-1"}');
SELECT * FROM app.shipped;

DROP TRIGGER app_on_status ON biteship_webhook.orders;
DROP SCHEMA app CASCADE;
REVOKE ALL ON SCHEMA biteship_webhook FROM bw_app;
REVOKE ALL ON biteship_webhook.orders, biteship_webhook.order_status_history FROM bw_app;
DROP ROLE bw_app;
