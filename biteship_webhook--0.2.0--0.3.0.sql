/* biteship_webhook--0.2.0--0.3.0.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION biteship_webhook UPDATE TO '0.3.0'" to load this file. \quit

--
-- Reconciliation with Biteship's API.
--

-- One API key per environment.  Nothing is granted on this table to any
-- application role; set_api_key() writes it, the reconciler and
-- sync_order() read it.  No CHECK constraints: a violation's message would
-- show the key.
CREATE TABLE biteship_webhook.api_keys (
	environment text PRIMARY KEY,
	api_key text NOT NULL,
	updated_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);

COMMENT ON TABLE biteship_webhook.api_keys IS
	'Biteship API keys, one per environment (live, test); readable by the owner only';

-- What reconciliation knows about each order it fetched or is to fetch:
-- the backfill queue (next_sync_at) and the outcome of the last fetch.
CREATE TABLE biteship_webhook.order_syncs (
	environment text NOT NULL,
	order_id text NOT NULL,
	-- backfill (sync_orders), stale (reconcile_after) or retry; NULL when
	-- nothing is queued
	reason text,
	queued_at timestamptz,
	-- the reconciler fetches the order once this has passed
	next_sync_at timestamptz,
	-- failed fetches in a row (rate limits, server and network errors)
	attempts integer NOT NULL DEFAULT 0,
	last_sync_at timestamptz,
	-- ok, not_found, key_refused, no_key, rate_limited, server_error,
	-- network_error, bad_answer or client_error
	last_result text,
	last_http_status smallint,
	last_api_code bigint,
	last_error text,
	last_event_id bigint,
	-- the last fetch that found state the webhooks had missed
	healed_at timestamptz,
	PRIMARY KEY (environment, order_id)
);

COMMENT ON TABLE biteship_webhook.order_syncs IS
	'Reconciliation of each order with Biteship''s API: the backfill queue and the last fetch';

CREATE INDEX order_syncs_due_idx
	ON biteship_webhook.order_syncs (next_sync_at)
	WHERE next_sync_at IS NOT NULL;

SELECT pg_catalog.pg_extension_config_dump('biteship_webhook.api_keys', '');
SELECT pg_catalog.pg_extension_config_dump('biteship_webhook.order_syncs', '');

--
-- The role that owns sync_order() and sync_orders().  They are SECURITY
-- DEFINER so that an application role can ask for a sync without reading
-- the API key or writing the events log itself; they run as this role,
-- which is no superuser.  Application triggers fired by a sync run as the
-- apply role, as for webhooks.
--
DO $$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'biteship_webhook_sync') THEN
		CREATE ROLE biteship_webhook_sync NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
		COMMENT ON ROLE biteship_webhook_sync IS
			'biteship_webhook: owns sync_order() and sync_orders(), which fetch orders from Biteship''s API';
	END IF;
END
$$;
GRANT USAGE ON SCHEMA biteship_webhook TO biteship_webhook_sync;
GRANT SELECT ON biteship_webhook.api_keys TO biteship_webhook_sync;
GRANT SELECT, INSERT, UPDATE ON biteship_webhook.order_syncs TO biteship_webhook_sync;
GRANT SELECT, INSERT, UPDATE ON biteship_webhook.events TO biteship_webhook_sync;
GRANT SELECT ON biteship_webhook.orders TO biteship_webhook_sync;
-- forwarding of healed state to endpoints
GRANT SELECT (id, forward_events, environment) ON biteship_webhook.endpoints TO biteship_webhook_sync;
GRANT SELECT (endpoint_id, idempotency_key), INSERT ON biteship_webhook.outbox TO biteship_webhook_sync;

CREATE FUNCTION biteship_webhook.set_api_key(environment text, api_key text)
RETURNS void
LANGUAGE C
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'bw_set_api_key';

COMMENT ON FUNCTION biteship_webhook.set_api_key(text, text) IS
	'Store (or, with NULL, remove) the Biteship API key of an environment';

CREATE FUNCTION biteship_webhook.sync_order(order_id text, environment text DEFAULT 'live')
RETURNS biteship_webhook.orders
LANGUAGE C STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'bw_sync_order';

COMMENT ON FUNCTION biteship_webhook.sync_order(text, text) IS
	'Fetch one order from Biteship''s API now, apply it, and return its row';

CREATE FUNCTION biteship_webhook.sync_orders(order_ids text[], environment text DEFAULT 'live')
RETURNS bigint
LANGUAGE C STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'bw_sync_orders';

COMMENT ON FUNCTION biteship_webhook.sync_orders(text[], text) IS
	'Queue orders for the reconciler to fetch from Biteship''s API, paced; returns how many were queued';

ALTER FUNCTION biteship_webhook.sync_order(text, text) OWNER TO biteship_webhook_sync;
ALTER FUNCTION biteship_webhook.sync_orders(text[], text) OWNER TO biteship_webhook_sync;

REVOKE ALL ON biteship_webhook.api_keys, biteship_webhook.order_syncs FROM PUBLIC;
REVOKE ALL ON FUNCTION
	biteship_webhook.set_api_key(text, text),
	biteship_webhook.sync_order(text, text),
	biteship_webhook.sync_orders(text[], text)
	FROM PUBLIC;

--
-- The stats view, with the gaps: stale active orders and the backfill
-- queue per environment.  (The API calls, the healed orders and the age of
-- the newest delivery per webhook come from shared memory, in stats().)
--
CREATE OR REPLACE VIEW biteship_webhook.stats AS
	SELECT name, labels, value FROM biteship_webhook.stats()
	UNION ALL
	SELECT 'backlog_events', jsonb_build_object('state', s.state), count(e.id)::float8
	  FROM (VALUES ('failed'), ('pending')) s(state)
	  LEFT JOIN biteship_webhook.events e
	    ON e.state = s.state AND e.state IN ('failed', 'pending')
	 GROUP BY s.state
	UNION ALL
	SELECT 'backlog_oldest_age_seconds', jsonb_build_object('state', s.state),
	       COALESCE(extract(epoch FROM now() - min(e.received_at)), 0)::float8
	  FROM (VALUES ('failed'), ('pending')) s(state)
	  LEFT JOIN biteship_webhook.events e
	    ON e.state = s.state AND e.state IN ('failed', 'pending')
	 GROUP BY s.state
	UNION ALL
	SELECT 'outbox_backlog', jsonb_build_object('endpoint', p.name, 'state', s.state),
	       (SELECT count(*) FROM biteship_webhook.outbox o
	         WHERE o.endpoint_id = p.id AND o.state = s.state)::float8
	  FROM biteship_webhook.endpoints p
	 CROSS JOIN (VALUES ('pending'), ('dead')) s(state)
	UNION ALL
	SELECT 'outbox_oldest_pending_age_seconds', jsonb_build_object('endpoint', p.name),
	       COALESCE((SELECT extract(epoch FROM now() - min(o.queued_at))
	                   FROM biteship_webhook.outbox o
	                  WHERE o.endpoint_id = p.id AND o.state = 'pending'), 0)::float8
	  FROM biteship_webhook.endpoints p
	UNION ALL
	SELECT 'outbox_endpoint_enabled', jsonb_build_object('endpoint', p.name),
	       CASE WHEN p.enabled THEN 1 ELSE 0 END::float8
	  FROM biteship_webhook.endpoints p
	UNION ALL
	-- active orders whose last change is older than reconcile_after (6 h
	-- when reconciliation is off)
	SELECT 'stale_orders', jsonb_build_object('environment', env.environment),
	       (SELECT count(*) FROM biteship_webhook.orders o
	         WHERE o.environment = env.environment AND NOT o.is_final
	           AND o.updated_at < now() - COALESCE(NULLIF(
	                 current_setting('biteship_webhook.reconcile_after', true), '0'),
	                 '6h')::interval)::float8
	  FROM (VALUES ('live'), ('test')) env(environment)
	UNION ALL
	SELECT 'reconcile_queue', jsonb_build_object('environment', env.environment),
	       (SELECT count(*) FROM biteship_webhook.order_syncs s
	         WHERE s.environment = env.environment
	           AND s.next_sync_at IS NOT NULL)::float8
	  FROM (VALUES ('live'), ('test')) env(environment)
	UNION ALL
	SELECT 'api_key_configured', jsonb_build_object('environment', env.environment),
	       (SELECT count(*) FROM biteship_webhook.api_keys k
	         WHERE k.environment = env.environment)::float8
	  FROM (VALUES ('live'), ('test')) env(environment);

--
-- Trying it without Biteship: simulate_order() plays one order's lifecycle
-- through ingest(), as Biteship would send it.
--
-- It runs with the caller's rights (not SECURITY DEFINER): it reads the
-- webhook's configuration, and for a webhook with a signature key it adds a
-- one-time secret with add_webhook_secret(), signs the deliveries with it
-- and removes it with remove_webhook_secret() before it returns, so that
-- the secret never outlives the caller's transaction.  A role can use it
-- only if it could already do all of that itself.
--
CREATE FUNCTION biteship_webhook.simulate_order(
	webhook text,
	order_id text DEFAULT NULL,
	courier text DEFAULT 'jne',
	instant boolean DEFAULT false,
	duplicates boolean DEFAULT true,
	late boolean DEFAULT true)
RETURNS SETOF biteship_webhook.events
LANGUAGE plpgsql
ROWS 10
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
	-- courier code => its regular service; instant couriers have drivers
	regular_types constant jsonb := '{"jne": "reg", "jnt": "ez", "sicepat": "reg",
		"anteraja": "reg", "pos": "kilat_khusus", "tiki": "reg", "ninja": "standard",
		"lion": "reg_pack", "idexpress": "std", "sap": "reg"}';
	instant_couriers constant text[] := '{gojek,grab,lalamove,borzo}';
	waybill_prefixes constant jsonb := '{"jne": "JX", "jnt": "JP", "sicepat": "00",
		"anteraja": "10", "pos": "P", "tiki": "03", "ninja": "NV", "lion": "11",
		"idexpress": "IDE", "sap": "SAP", "gojek": "GK-11-", "grab": "IN-",
		"lalamove": "LLM-", "borzo": "BZ-"}';
	drivers constant text[] := '{Budi Santoso,Agus Setiawan,Dewi Lestari,Rizky Pratama,Siti Rahmawati,Eko Prasetyo,Joko Susilo,Andi Wijaya}';
	plates constant text[] := '{B,D,L,F,AB,H,N,DK}';
	statuses constant text[] := '{confirmed,allocated,picking_up,picked,dropping_off,delivered}';
	p_webhook text := simulate_order.webhook;
	p_order text := simulate_order.order_id;
	p_courier text := pg_catalog.lower(simulate_order.courier);
	p_instant boolean := simulate_order.instant;
	w_environment text;
	w_sigkey text;
	v_secret text;
	v_secret_id integer;
	v_headers jsonb := '{"User-Agent": "biteship_webhook-simulate/0.3.0"}';
	is_instant_courier boolean;
	h bytea;
	digits text;
	ctype text;
	tracking text;
	waybill text;
	link text;
	driver jsonb := '{"courier_driver_name": null, "courier_driver_phone": null,
		"courier_driver_photo_url": null, "courier_driver_plate_number": null}';
	base_price integer;
	offsets interval[];
	t0 timestamptz := pg_catalog.date_trunc('milliseconds', pg_catalog.clock_timestamp());
	bodies text[] := '{}';
	status_body jsonb;
	late_body text;
	delivered_body text;
	v_body text;
	r record;
	i integer;
BEGIN
	IF p_webhook IS NULL THEN
		RAISE EXCEPTION 'webhook must not be null'
			USING ERRCODE = 'null_value_not_allowed',
			      HINT = 'Pass the name of a webhook: SELECT name, path FROM biteship_webhook.webhooks;';
	END IF;
	IF p_instant IS NULL OR simulate_order.duplicates IS NULL OR simulate_order.late IS NULL THEN
		RAISE EXCEPTION 'instant, duplicates and late must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;

	SELECT w.environment, w.signature_key INTO w_environment, w_sigkey
	  FROM biteship_webhook.webhooks w WHERE w.name = p_webhook;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'webhook "%" does not exist', p_webhook
			USING ERRCODE = 'undefined_object',
			      DETAIL = 'simulate_order() feeds a webhook registered with create_webhook(), by its name.',
			      HINT = 'List webhooks with: SELECT name, path FROM biteship_webhook.webhooks;';
	END IF;

	IF p_courier IS NULL THEN
		RAISE EXCEPTION 'courier must not be null'
			USING ERRCODE = 'null_value_not_allowed',
			      HINT = 'Leave it out for ''jne'', or pass another courier code.';
	END IF;
	is_instant_courier := p_courier = ANY (instant_couriers);
	IF NOT is_instant_courier AND NOT regular_types ? p_courier THEN
		RAISE EXCEPTION 'unknown courier "%"', simulate_order.courier
			USING ERRCODE = 'invalid_parameter_value',
			      DETAIL = pg_catalog.format('The simulator knows %s, and the instant couriers %s.',
			                                 (SELECT pg_catalog.string_agg(k, ', ' ORDER BY k)
			                                    FROM pg_catalog.jsonb_object_keys(regular_types) k),
			                                 pg_catalog.array_to_string(instant_couriers, ', ')),
			      HINT = 'Pass one of them as courier, e.g. courier => ''sicepat''.';
	END IF;
	IF p_instant AND NOT is_instant_courier THEN
		RAISE EXCEPTION 'courier "%" has no instant service', p_courier
			USING ERRCODE = 'invalid_parameter_value',
			      DETAIL = pg_catalog.format('Instant deliveries, with a driver, are made by %s.',
			                                 pg_catalog.array_to_string(instant_couriers, ', ')),
			      HINT = 'Pass an instant courier too, e.g. courier => ''gojek'', instant => true.';
	END IF;

	IF p_order IS NULL THEN
		-- like Biteship's ids: a MongoDB ObjectId, its time then random bytes
		p_order := pg_catalog.lpad(pg_catalog.to_hex(pg_catalog.floor(
		               extract(epoch FROM t0))::bigint), 8, '0')
		        || pg_catalog.left(pg_catalog.md5(pg_catalog.gen_random_uuid()::text), 16);
	ELSIF p_order !~ '^[A-Za-z0-9_-]{1,64}$' THEN
		RAISE EXCEPTION 'invalid order id "%"', p_order
			USING ERRCODE = 'invalid_parameter_value',
			      DETAIL = 'A Biteship order id has 1 to 64 letters, digits, "_" or "-" (24 hexadecimal digits in practice).',
			      HINT = 'Pass NULL for a random one.';
	END IF;

	-- Everything but the times follows from the order id, so that the same
	-- id always makes the same order.
	h := pg_catalog.sha256(pg_catalog.convert_to(p_order, 'UTF8'));
	SELECT pg_catalog.string_agg((pg_catalog.get_byte(h, n) % 10)::text, '' ORDER BY n)
	  INTO digits FROM pg_catalog.generate_series(0, 31) n;
	tracking := pg_catalog.left(pg_catalog.translate(pg_catalog.encode(pg_catalog.sha256(
	                pg_catalog.convert_to('tracking:' || p_order, 'UTF8')), 'base64'), '+/=', ''), 24);
	waybill := (waybill_prefixes ->> p_courier) || pg_catalog.substr(digits, 1, 12);
	link := 'https://track.biteship.com/' || tracking
	        || CASE WHEN w_environment = 'test' THEN '?environment=development' ELSE '' END;

	IF is_instant_courier THEN
		ctype := CASE WHEN p_instant THEN 'instant' ELSE 'same_day' END;
		driver := pg_catalog.jsonb_build_object(
			'courier_driver_name', drivers[1 + pg_catalog.get_byte(h, 0) % 8],
			'courier_driver_phone', '628' || pg_catalog.substr(digits, 13, 9),
			'courier_driver_photo_url', 'https://picsum.photos/200/300',
			'courier_driver_plate_number', plates[1 + pg_catalog.get_byte(h, 1) % 8] || ' '
				|| pg_catalog.substr(digits, 22, 4) || ' '
				|| pg_catalog.chr(65 + pg_catalog.get_byte(h, 2) % 26)
				|| pg_catalog.chr(65 + pg_catalog.get_byte(h, 3) % 26)
				|| pg_catalog.chr(65 + pg_catalog.get_byte(h, 4) % 26));
		base_price := 15000 + (pg_catalog.get_byte(h, 5) % 60) * 500;
	ELSE
		ctype := regular_types ->> p_courier;
		base_price := 9000 + (pg_catalog.get_byte(h, 5) % 30) * 500;
	END IF;

	-- when each status happened, before now
	offsets := CASE
		WHEN p_instant THEN '{75 min, 72 min, 65 min, 50 min, 45 min, 3 min}'::interval[]
		WHEN is_instant_courier THEN '{8 h, 7 h 45 min, 7 h, 6 h, 2 h, 5 min}'::interval[]
		ELSE '{30 h, 29 h, 22 h, 20 h 30 min, 3 h, 10 min}'::interval[]
	END;

	FOR i IN 1 .. 6 LOOP
		status_body := pg_catalog.jsonb_build_object(
			'event', 'order.status',
			'order_id', p_order,
			'courier_tracking_id', tracking,
			-- the waybill is issued after the courier is allocated
			'courier_waybill_id', CASE WHEN i > 2 THEN waybill END,
			'courier_company', p_courier,
			'courier_type', ctype,
			'courier_link', link,
			'order_price', base_price,
			'status', statuses[i],
			'updated_at', pg_catalog.to_char(
				(t0 - offsets[i] + pg_catalog.make_interval(secs => pg_catalog.get_byte(h, 6 + i) / 100.0))
					AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')) || driver;
		v_body := status_body::text;
		IF statuses[i] = 'dropping_off' AND simulate_order.late THEN
			late_body := v_body;		-- arrives after delivered
		ELSE
			bodies := bodies || v_body;
		END IF;
		IF statuses[i] = 'delivered' THEN
			delivered_body := v_body;
		END IF;

		IF statuses[i] = 'allocated' THEN
			bodies := bodies || pg_catalog.jsonb_build_object(
				'event', 'order.waybill_id',
				'order_id', p_order,
				'courier_tracking_id', tracking,
				'courier_waybill_id', waybill,
				'status', 'allocated')::text;
		ELSIF statuses[i] = 'picked' AND pg_catalog.get_byte(h, 13) % 3 = 0 THEN
			-- sometimes the weighed parcel costs more than declared
			bodies := bodies || pg_catalog.jsonb_build_object(
				'event', 'order.price',
				'order_id', p_order,
				'courier_tracking_id', tracking,
				'courier_waybill_id', waybill,
				'price', base_price + (1 + pg_catalog.get_byte(h, 14) % 4) * 1000,
				'shippment_fee', base_price + (1 + pg_catalog.get_byte(h, 14) % 4) * 1000,
				'cash_on_delivery_fee', 0,
				'proof_of_delivery_fee', 0,
				'status', 'picked')::text;
		END IF;
	END LOOP;
	IF late_body IS NOT NULL THEN
		bodies := bodies || late_body;
	END IF;
	IF simulate_order.duplicates THEN
		bodies := bodies || delivered_body;	-- resent byte for byte
	END IF;

	IF w_sigkey IS NOT NULL THEN
		v_secret := pg_catalog.replace(pg_catalog.gen_random_uuid()::text, '-', '')
		       || pg_catalog.replace(pg_catalog.gen_random_uuid()::text, '-', '');
		v_secret_id := biteship_webhook.add_webhook_secret(p_webhook, v_secret,
		                                                 pg_catalog.now() + interval '1 hour');
		v_headers := v_headers || pg_catalog.jsonb_build_object(w_sigkey, v_secret);
	END IF;

	FOREACH v_body IN ARRAY bodies LOOP
		SELECT * INTO r FROM biteship_webhook.ingest(p_webhook, v_body, v_headers);
		IF r.http_status NOT BETWEEN 200 AND 299 OR r.event_id IS NULL THEN
			RAISE EXCEPTION 'webhook "%" refused a simulated delivery', p_webhook
				USING ERRCODE = 'object_not_in_prerequisite_state',
				      DETAIL = pg_catalog.format('ingest() answered %s (%s).', r.http_status,
				                                 COALESCE(r.error, r.state));
		END IF;
		RETURN QUERY SELECT * FROM biteship_webhook.events e WHERE e.id = r.event_id;
	END LOOP;

	IF v_secret_id IS NOT NULL THEN
		PERFORM biteship_webhook.remove_webhook_secret(p_webhook, v_secret_id);
	END IF;
	RETURN;
END
$fn$;

COMMENT ON FUNCTION biteship_webhook.simulate_order(text, text, text, boolean, boolean, boolean) IS
	'Feed one simulated order lifecycle through ingest(); returns the events it produced';

REVOKE ALL ON FUNCTION
	biteship_webhook.simulate_order(text, text, text, boolean, boolean, boolean)
	FROM PUBLIC;

--
-- Operator views: the questions asked when something looks wrong.  Like
-- stats, nothing is granted on them; they show no secret, no header, no
-- URL and no body, so that SELECT on them can be granted to a monitoring
-- role (README.md, Operator views).
--

-- Deliveries (and API answers, source 'api') received in the last hour
-- that are failed or rejected now, with the reason.
CREATE VIEW biteship_webhook.failed_last_hour AS
	SELECT e.id AS event_id,
	       CASE WHEN e.webhook_id = 0 THEN 'api' ELSE 'webhook' END AS source,
	       w.name AS webhook,
	       e.environment,
	       e.received_at,
	       e.event,
	       e.order_id,
	       e.state,
	       e.http_status,
	       e.last_error AS reason,
	       e.attempts,
	       e.next_attempt_at,
	       e.delivery_count,
	       e.remote_addr
	  FROM biteship_webhook.events e
	  LEFT JOIN biteship_webhook.webhooks w ON w.id = e.webhook_id
	 WHERE e.state IN ('failed', 'rejected')
	   AND e.received_at >= pg_catalog.now() - interval '1 hour';

-- Active (not final) orders that have not changed for a day, with what
-- reconciliation last made of them.
CREATE VIEW biteship_webhook.stalled_orders AS
	SELECT o.environment,
	       o.order_id,
	       o.status,
	       o.courier_company,
	       o.courier_type,
	       o.courier_waybill_id,
	       o.status_updated_at,
	       o.updated_at AS last_change_at,
	       pg_catalog.date_trunc('second', pg_catalog.now() - o.updated_at) AS quiet_for,
	       s.last_sync_at,
	       s.last_result AS last_sync_result,
	       s.last_error AS last_sync_error
	  FROM biteship_webhook.orders o
	  LEFT JOIN biteship_webhook.order_syncs s
	    ON s.environment = o.environment AND s.order_id = o.order_id
	 WHERE NOT o.is_final
	   AND o.updated_at < pg_catalog.now() - interval '1 day';

-- Deliveries per webhook and hour, over the last 24 hours (the current
-- hour included), by state.  A redelivery of the same body counts in the
-- hour of the first one (redeliveries).
CREATE VIEW biteship_webhook.deliveries_per_hour AS
	SELECT w.name AS webhook,
	       e.webhook_id,
	       e.environment,
	       pg_catalog.date_trunc('hour', e.received_at) AS hour,
	       count(*) AS deliveries,
	       sum(e.delivery_count - 1) AS redeliveries,
	       count(*) FILTER (WHERE e.state = 'applied') AS applied,
	       count(*) FILTER (WHERE e.state = 'pending') AS pending,
	       count(*) FILTER (WHERE e.state = 'failed') AS failed,
	       count(*) FILTER (WHERE e.state = 'ignored') AS ignored,
	       count(*) FILTER (WHERE e.state = 'rejected') AS rejected,
	       count(*) FILTER (WHERE e.state = 'ping') AS pings
	  FROM biteship_webhook.events e
	  LEFT JOIN biteship_webhook.webhooks w ON w.id = e.webhook_id
	 WHERE e.webhook_id <> 0
	   AND e.received_at >= pg_catalog.date_trunc('hour', pg_catalog.now()) - interval '23 hours'
	 GROUP BY w.name, e.webhook_id, e.environment, pg_catalog.date_trunc('hour', e.received_at);

-- Dead outbox messages per endpoint: how many, since when, and the last
-- answer or error.  The endpoint's URL, headers and secrets stay out.
CREATE VIEW biteship_webhook.dead_outbox AS
	SELECT p.name AS endpoint,
	       o.endpoint_id,
	       p.enabled,
	       p.disabled_reason,
	       count(*) AS dead_messages,
	       min(o.id) AS oldest_message_id,
	       max(o.id) AS newest_message_id,
	       min(o.queued_at) AS oldest_queued_at,
	       (pg_catalog.array_agg(o.last_status ORDER BY o.id DESC))[1] AS last_status,
	       (pg_catalog.array_agg(o.last_error ORDER BY o.id DESC))[1] AS last_error
	  FROM biteship_webhook.outbox o
	  LEFT JOIN biteship_webhook.endpoints p ON p.id = o.endpoint_id
	 WHERE o.state = 'dead'
	 GROUP BY p.name, o.endpoint_id, p.enabled, p.disabled_reason;

REVOKE ALL ON biteship_webhook.failed_last_hour, biteship_webhook.stalled_orders,
	biteship_webhook.deliveries_per_hour, biteship_webhook.dead_outbox FROM PUBLIC;
