--
-- Application triggers: the recipe from README.md, firing exactly once per
-- real change, and a trigger that raises.  Triggers run as the apply role
-- (biteship_webhook_apply) with search_path = pg_catalog, pg_temp, so the
-- recipe's function sets its own search_path and the apply role is granted
-- what the trigger writes.
--
SET timezone = 'UTC';
\set sig '{"X-Biteship-Signature": "live-secret-1"}'

-- The recipe: tell buyers when their shipment's status changes.
CREATE TABLE buyer_notifications (
	order_id text,
	old_status text,
	new_status text,
	created_at timestamptz DEFAULT now()
);

CREATE FUNCTION notify_buyer() RETURNS trigger LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
BEGIN
	INSERT INTO buyer_notifications (order_id, old_status, new_status)
	VALUES (NEW.order_id, OLD.status, NEW.status);
	RETURN NULL;
END
$$;

CREATE TRIGGER notify_buyer
	AFTER UPDATE OF status ON biteship_webhook.orders
	FOR EACH ROW
	WHEN (OLD.status IS DISTINCT FROM NEW.status)
	EXECUTE FUNCTION notify_buyer();

GRANT INSERT ON buyer_notifications TO biteship_webhook_apply;

-- And one that counts every row trigger firing on both tables.
CREATE TABLE firings (tbl text, op text, order_id text, status text);
GRANT INSERT ON firings TO biteship_webhook_apply;
CREATE FUNCTION count_firing() RETURNS trigger LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
BEGIN
	INSERT INTO firings VALUES (TG_TABLE_NAME, TG_OP, NEW.order_id, NEW.status);
	RETURN NULL;
END
$$;
CREATE TRIGGER count_orders AFTER INSERT OR UPDATE ON biteship_webhook.orders
	FOR EACH ROW EXECUTE FUNCTION count_firing();
CREATE TRIGGER count_history AFTER INSERT ON biteship_webhook.order_status_history
	FOR EACH ROW EXECUTE FUNCTION count_firing();

\set s1 '{"event":"order.status","order_id":"trg-1","status":"allocated","updated_at":"2025-11-08T01:00:00Z","courier_company":"jne"}'
\set s2 '{"event":"order.status","order_id":"trg-1","status":"picked","updated_at":"2025-11-08T02:00:00Z","courier_company":"jne"}'
\set s2same '{"event":"order.status","order_id":"trg-1","status":"picked","updated_at":"2025-11-08T02:00:00Z","courier_company":"jne","courier_link":null}'
\set s0late '{"event":"order.status","order_id":"trg-1","status":"confirmed","updated_at":"2025-11-08T00:30:00Z"}'

SELECT state FROM biteship_webhook.ingest('live', :'s1'::text, :'sig');
SELECT state FROM biteship_webhook.ingest('live', :'s2'::text, :'sig');
-- a redelivery fires nothing
SELECT state FROM biteship_webhook.ingest('live', :'s2'::text, :'sig');
-- a different body that changes nothing fires nothing on orders
SELECT state FROM biteship_webhook.ingest('live', :'s2same'::text, :'sig');
-- a late status fires on history only
SELECT state FROM biteship_webhook.ingest('live', :'s0late'::text, :'sig');

SELECT order_id, old_status, new_status FROM buyer_notifications ORDER BY created_at, new_status;
SELECT tbl, op, status, count(*) FROM firings GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;

-- A trigger that raises makes only its event fail; the event is kept and
-- answered 200, and nothing of its changes remains.
CREATE FUNCTION picky() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.status = 'returned' THEN
		RAISE EXCEPTION 'returns are not handled yet for %', NEW.order_id
			USING DETAIL = 'the warehouse is closed';
	END IF;
	RETURN NEW;
END
$$;
CREATE TRIGGER picky BEFORE INSERT OR UPDATE ON biteship_webhook.orders
	FOR EACH ROW EXECUTE FUNCTION picky();

BEGIN;
-- several deliveries in one transaction, like a listener batch
SELECT order_id, r.http_status, r.state, r.error
  FROM (VALUES ('trg-2', 'picked'), ('trg-3', 'returned'), ('trg-4', 'delivered')) v(order_id, status),
       LATERAL biteship_webhook.ingest('live',
           jsonb_build_object('event', 'order.status', 'order_id', v.order_id, 'status', v.status,
                              'updated_at', '2025-11-08T05:00:00Z'), :'sig') r
 ORDER BY order_id;
COMMIT;
SELECT order_id, status FROM biteship_webhook.orders WHERE order_id IN ('trg-2', 'trg-3', 'trg-4') ORDER BY 1;
SELECT order_id, count(*) FROM biteship_webhook.order_status_history WHERE order_id IN ('trg-2', 'trg-3', 'trg-4') GROUP BY 1 ORDER BY 1;
SELECT order_id, state, attempts, last_error FROM biteship_webhook.events WHERE order_id IN ('trg-2', 'trg-3', 'trg-4') ORDER BY 1;
SELECT count(*) AS firings_for_failed FROM firings WHERE order_id = 'trg-3';

-- once the application is fixed, the event can be replayed
CREATE OR REPLACE FUNCTION picky() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	RETURN NEW;
END
$$;
SELECT biteship_webhook.replay(id) FROM biteship_webhook.events WHERE order_id = 'trg-3';
SELECT order_id, status FROM biteship_webhook.orders WHERE order_id = 'trg-3';
SELECT status, source FROM biteship_webhook.order_status_history WHERE order_id = 'trg-3';
SELECT state, attempts, last_error, applied_at IS NOT NULL AS applied FROM biteship_webhook.events WHERE order_id = 'trg-3';

-- An error in the caller's own transaction still aborts everything: the
-- subtransaction only protects the event, not the caller.
BEGIN;
SELECT state FROM biteship_webhook.ingest('live', '{"event":"order.status","order_id":"trg-5","status":"picked"}'::text, :'sig');
SELECT 1 / 0;
ROLLBACK;
SELECT count(*) AS trg5_events FROM biteship_webhook.events WHERE order_id = 'trg-5';

-- The triggers, listed to keep them with a dump (pg_dump leaves them out).
SELECT table_name, trigger_name, function, enabled
  FROM biteship_webhook.application_triggers ORDER BY 1, 2;
SELECT definition FROM biteship_webhook.application_triggers WHERE trigger_name = 'notify_buyer';

-- Triggers run as the apply role, never as the caller (here a superuser).
CREATE TABLE whoami (current_role_name text, superuser text);
GRANT INSERT ON whoami TO biteship_webhook_apply;
CREATE FUNCTION record_user() RETURNS trigger LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
BEGIN
	INSERT INTO whoami SELECT current_user, rolsuper::text FROM pg_catalog.pg_roles WHERE rolname = current_user;
	RETURN NULL;
END
$$;
CREATE TRIGGER record_user AFTER INSERT ON biteship_webhook.orders
	FOR EACH ROW EXECUTE FUNCTION record_user();
SELECT current_setting('is_superuser') AS caller_is_superuser;
SELECT state FROM biteship_webhook.ingest('live', '{"event":"order.status","order_id":"trg-6","status":"picked"}'::text, :'sig');
SELECT * FROM whoami;
DROP TRIGGER record_user ON biteship_webhook.orders;

-- A trigger that names a table without qualifying it, and sets no
-- search_path, does not find it: the apply runs with pg_catalog, pg_temp.
CREATE FUNCTION unqualified() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO whoami VALUES ('unqualified', 'x');
	RETURN NULL;
END
$$;
CREATE TRIGGER unqualified AFTER INSERT ON biteship_webhook.orders
	FOR EACH ROW EXECUTE FUNCTION unqualified();
SELECT state, error FROM biteship_webhook.ingest('live', '{"event":"order.status","order_id":"trg-7","status":"picked"}'::text, :'sig');
DROP TRIGGER unqualified ON biteship_webhook.orders;

DROP TRIGGER picky ON biteship_webhook.orders;
DROP TRIGGER count_orders ON biteship_webhook.orders;
DROP TRIGGER count_history ON biteship_webhook.order_status_history;
DROP TRIGGER notify_buyer ON biteship_webhook.orders;
