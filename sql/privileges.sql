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
-- the documented pattern: the trigger function runs as the application role
CREATE FUNCTION app.on_status() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = app, pg_temp
AS $$
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

-- A hostile application role: with exactly the documented grants, its
-- trigger tries to make it superuser, to switch roles, to read secrets and
-- to leave a temporary table behind.  The event is applied by a superuser
-- here, yet each attempt fails: the trigger runs as biteship_webhook_apply,
-- in a security-restricted operation.
SET ROLE bw_app;
CREATE FUNCTION app.escalate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.order_id = 'evil-1' THEN
		ALTER ROLE bw_app SUPERUSER;
	ELSIF NEW.order_id = 'evil-2' THEN
		SET ROLE postgres;
	ELSIF NEW.order_id = 'evil-3' THEN
		PERFORM count(*) FROM biteship_webhook.webhook_secrets;
	ELSIF NEW.order_id = 'evil-4' THEN
		CREATE TEMP TABLE stash (x text);
	ELSIF NEW.order_id = 'evil-5' THEN
		GRANT biteship_webhook_apply TO bw_app;
	END IF;
	RETURN NULL;
END
$$;
CREATE TRIGGER app_escalate AFTER INSERT ON biteship_webhook.orders
	FOR EACH ROW EXECUTE FUNCTION app.escalate();
RESET ROLE;
SELECT v.order_id, r.state, r.error
  FROM (VALUES ('evil-1'), ('evil-2'), ('evil-3'), ('evil-4'), ('evil-5')) v(order_id),
       LATERAL biteship_webhook.ingest('live',
           jsonb_build_object('event', 'order.status', 'order_id', v.order_id, 'status', 'picked'),
           '{"X-Biteship-Signature": "live-secret-1"}') r
 ORDER BY 1;
SELECT rolsuper FROM pg_roles WHERE rolname = 'bw_app';
SELECT pg_has_role('bw_app', 'biteship_webhook_apply', 'MEMBER') AS app_gained_apply_role;
SELECT count(*) AS evil_orders FROM biteship_webhook.orders WHERE order_id LIKE 'evil-%';
DROP TRIGGER app_escalate ON biteship_webhook.orders;

-- what the apply role itself can do: write shipment state, read nothing else
SELECT has_table_privilege('biteship_webhook_apply', 'biteship_webhook.orders', 'INSERT, UPDATE') AS apply_writes_orders,
       has_table_privilege('biteship_webhook_apply', 'biteship_webhook.orders', 'DELETE') AS apply_deletes_orders,
       has_table_privilege('biteship_webhook_apply', 'biteship_webhook.events', 'SELECT') AS apply_reads_events,
       has_table_privilege('biteship_webhook_apply', 'biteship_webhook.webhook_secrets', 'SELECT') AS apply_reads_secrets,
       has_table_privilege('biteship_webhook_apply', 'biteship_webhook.webhooks', 'SELECT') AS apply_reads_webhooks;
SELECT rolsuper, rolcreaterole, rolcreatedb, rolcanlogin, rolbypassrls
  FROM pg_roles WHERE rolname = 'biteship_webhook_apply';

DROP TRIGGER app_on_status ON biteship_webhook.orders;
DROP SCHEMA app CASCADE;
REVOKE ALL ON SCHEMA biteship_webhook FROM bw_app;
REVOKE ALL ON biteship_webhook.orders, biteship_webhook.order_status_history FROM bw_app;
DROP ROLE bw_app;
