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
