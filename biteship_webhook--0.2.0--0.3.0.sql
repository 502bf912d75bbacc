/* biteship_webhook--0.2.0--0.3.0.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION biteship_webhook UPDATE TO '0.3.0'" to load this file. \quit

-- 0.3.0: the outbox (durable outbound HTTP, signed forwarding) and
-- reconciliation with Biteship's API.

--
-- The configuration triggers become per row (0.2.0 had one per statement),
-- so that an UPDATE that matches nothing moves nothing; TRUNCATE keeps a
-- statement trigger.
--
DROP TRIGGER webhooks_config_changed ON biteship_webhook.webhooks;
CREATE TRIGGER webhooks_config_changed
	AFTER INSERT OR UPDATE OR DELETE ON biteship_webhook.webhooks
	FOR EACH ROW EXECUTE FUNCTION biteship_webhook.config_changed();
CREATE TRIGGER webhooks_config_truncated
	AFTER TRUNCATE ON biteship_webhook.webhooks
	FOR EACH STATEMENT EXECUTE FUNCTION biteship_webhook.config_changed();

--
-- The outbox: durable outbound HTTP.
--

-- Destinations, registered by an administrator.  Holds the signing secrets
-- and the headers (tokens) sent with every request: nothing is granted on
-- this table to anyone.  There are deliberately no CHECK constraints: a
-- violation's message shows the whole row, secrets included.  The
-- functions validate every column before they write it.
CREATE TABLE biteship_webhook.endpoints (
	id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	name text NOT NULL UNIQUE,
	url text NOT NULL,
	headers jsonb NOT NULL DEFAULT '{}',
	signing_secret text,
	previous_signing_secret text,
	previous_secret_expires_at timestamptz,
	forward_events text[],
	environment text,
	timeout interval NOT NULL DEFAULT '15s',
	max_attempts integer NOT NULL DEFAULT 10,
	enabled boolean NOT NULL DEFAULT true,
	disabled_at timestamptz,
	disabled_reason text,
	failing_since timestamptz,
	description text,
	created_at timestamptz NOT NULL DEFAULT now(),
	updated_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE biteship_webhook.endpoints IS
	'Destinations of the outbox; holds their secrets and headers, readable by the owner only';

CREATE TRIGGER endpoints_config_changed
	AFTER INSERT OR UPDATE OR DELETE ON biteship_webhook.endpoints
	FOR EACH ROW EXECUTE FUNCTION biteship_webhook.config_changed();
CREATE TRIGGER endpoints_config_truncated
	AFTER TRUNCATE ON biteship_webhook.endpoints
	FOR EACH STATEMENT EXECUTE FUNCTION biteship_webhook.config_changed();

-- One row per message.  state: pending, delivered, dead or cancelled.
CREATE TABLE biteship_webhook.outbox (
	id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	endpoint_id integer NOT NULL,
	body text NOT NULL,
	content_type text NOT NULL DEFAULT 'application/json',
	headers jsonb NOT NULL DEFAULT '{}',
	state text NOT NULL DEFAULT 'pending',
	attempts integer NOT NULL DEFAULT 0,
	next_attempt_at timestamptz NOT NULL DEFAULT now(),
	created_at timestamptz NOT NULL DEFAULT now(),
	queued_at timestamptz NOT NULL DEFAULT clock_timestamp(),
	first_attempt_at timestamptz,
	delivered_at timestamptz,
	last_status integer,
	last_error text,
	-- attempts made before the last retry_message(): the schedule and
	-- max_attempts count from there
	retry_base integer NOT NULL DEFAULT 0,
	ordering_key text,
	idempotency_key text,
	event_id bigint
);

COMMENT ON TABLE biteship_webhook.outbox IS
	'Messages queued for an endpoint, sent after their transaction commits, retried until delivered or dead';

-- the sender's work: what is due, per endpoint, oldest first
CREATE INDEX outbox_due_idx
	ON biteship_webhook.outbox (endpoint_id, next_attempt_at, id)
	WHERE state = 'pending';
-- one at a time, in order, per (endpoint, ordering_key)
CREATE INDEX outbox_ordering_idx
	ON biteship_webhook.outbox (endpoint_id, ordering_key, id)
	WHERE state = 'pending' AND ordering_key IS NOT NULL;
-- queued once per (endpoint, idempotency_key)
CREATE UNIQUE INDEX outbox_idempotency_idx
	ON biteship_webhook.outbox (endpoint_id, idempotency_key)
	WHERE idempotency_key IS NOT NULL;
CREATE INDEX outbox_dead_idx
	ON biteship_webhook.outbox (endpoint_id, id)
	WHERE state = 'dead';
-- retention
CREATE INDEX outbox_created_at_idx
	ON biteship_webhook.outbox USING brin (created_at);

-- One row per attempt.
CREATE TABLE biteship_webhook.outbox_attempts (
	message_id bigint NOT NULL,
	attempt integer NOT NULL,
	started_at timestamptz NOT NULL,
	duration interval,
	status integer,
	error text,
	response_headers text,
	response_body text,
	PRIMARY KEY (message_id, attempt)
);

COMMENT ON TABLE biteship_webhook.outbox_attempts IS
	'Every attempt to send an outbox message: status or error, response headers and body (bounded, credentials redacted)';

SELECT pg_catalog.pg_extension_config_dump('biteship_webhook.endpoints', '');
SELECT pg_catalog.pg_extension_config_dump('biteship_webhook.endpoints_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('biteship_webhook.outbox', '');
SELECT pg_catalog.pg_extension_config_dump('biteship_webhook.outbox_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('biteship_webhook.outbox_attempts', '');

--
-- The role that owns send().  send() is SECURITY DEFINER so that an
-- application role can queue a message without any right on the tables;
-- it runs as this role, which is no superuser and can look up an
-- endpoint's id and name, queue a message and read the queue, nothing more.
--
DO $$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'biteship_webhook_outbox') THEN
		CREATE ROLE biteship_webhook_outbox NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
		COMMENT ON ROLE biteship_webhook_outbox IS
			'biteship_webhook: owns send(), which queues outbox messages';
	END IF;
END
$$;
GRANT USAGE ON SCHEMA biteship_webhook TO biteship_webhook_outbox;
GRANT SELECT (id, name, enabled) ON biteship_webhook.endpoints TO biteship_webhook_outbox;
GRANT SELECT, INSERT ON biteship_webhook.outbox TO biteship_webhook_outbox;

--
-- Administration of endpoints.
--
CREATE FUNCTION biteship_webhook.create_endpoint(
	name text,
	url text,
	headers jsonb DEFAULT '{}',
	signing_secret text DEFAULT NULL,
	forward_events text[] DEFAULT NULL,
	environment text DEFAULT NULL,
	timeout interval DEFAULT '15s',
	max_attempts integer DEFAULT 10,
	description text DEFAULT NULL)
RETURNS integer
LANGUAGE C
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'bw_create_endpoint';

CREATE FUNCTION biteship_webhook.drop_endpoint(name text)
RETURNS void
LANGUAGE C STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'bw_drop_endpoint';

CREATE FUNCTION biteship_webhook.set_endpoint_enabled(name text, enabled boolean)
RETURNS void
LANGUAGE C STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'bw_set_endpoint_enabled';

CREATE FUNCTION biteship_webhook.set_endpoint_secret(
	name text,
	secret text,
	keep_old interval DEFAULT '1 day')
RETURNS void
LANGUAGE C
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'bw_set_endpoint_secret';

CREATE FUNCTION biteship_webhook.generate_signing_secret()
RETURNS text
LANGUAGE C STRICT VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'bw_generate_signing_secret';

--
-- Queueing.  Sent only if the caller's transaction commits.
--
CREATE FUNCTION biteship_webhook.send(
	endpoint text,
	body jsonb,
	headers jsonb DEFAULT '{}',
	ordering_key text DEFAULT NULL,
	idempotency_key text DEFAULT NULL)
RETURNS bigint
LANGUAGE C
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'bw_send_jsonb';

CREATE FUNCTION biteship_webhook.send(
	endpoint text,
	body text,
	content_type text,
	headers jsonb DEFAULT '{}',
	ordering_key text DEFAULT NULL,
	idempotency_key text DEFAULT NULL)
RETURNS bigint
LANGUAGE C
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'bw_send_text';

ALTER FUNCTION biteship_webhook.send(text, jsonb, jsonb, text, text) OWNER TO biteship_webhook_outbox;
ALTER FUNCTION biteship_webhook.send(text, text, text, jsonb, text, text) OWNER TO biteship_webhook_outbox;

CREATE FUNCTION biteship_webhook.retry_message(id bigint)
RETURNS void
LANGUAGE C STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'bw_retry_message';

CREATE FUNCTION biteship_webhook.retry_dead(endpoint text DEFAULT NULL)
RETURNS bigint
LANGUAGE C
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'bw_retry_dead';

CREATE FUNCTION biteship_webhook.purge_outbox(
	older_than interval,
	include_dead boolean DEFAULT false)
RETURNS bigint
LANGUAGE C STRICT
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'bw_purge_outbox';

--
-- The stats view, with the outbox's backlog.
REVOKE ALL ON biteship_webhook.endpoints, biteship_webhook.outbox,
	biteship_webhook.outbox_attempts FROM PUBLIC;
REVOKE ALL ON FUNCTION
	biteship_webhook.create_endpoint(text, text, jsonb, text, text[], text, interval, integer, text),
	biteship_webhook.drop_endpoint(text),
	biteship_webhook.set_endpoint_enabled(text, boolean),
	biteship_webhook.set_endpoint_secret(text, text, interval),
	biteship_webhook.generate_signing_secret(),
	biteship_webhook.send(text, jsonb, jsonb, text, text),
	biteship_webhook.send(text, text, text, jsonb, text, text),
	biteship_webhook.retry_message(bigint),
	biteship_webhook.retry_dead(text),
	biteship_webhook.purge_outbox(interval, boolean)
	FROM PUBLIC;

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
-- The stats view, with the outbox's backlog and the gaps: stale active
-- orders and the backfill queue per environment.  (The API calls, the healed orders and the age of
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
