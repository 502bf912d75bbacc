/* biteship_webhook--0.1.0--0.2.0.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION biteship_webhook UPDATE TO '0.2.0'" to load this file. \quit

--
-- pg_dump keeps the position of the identity sequences, so that a restored
-- database goes on numbering events after the last one instead of failing
-- every delivery on events_pkey.
--
SELECT pg_catalog.pg_extension_config_dump('biteship_webhook.webhooks_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('biteship_webhook.webhook_secrets_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('biteship_webhook.events_id_seq', '');

--
-- The apply role.  Events are applied, and application triggers on orders
-- and order_status_history run, as this role (biteship_webhook.apply_role),
-- never as the superuser the workers connect as.  It can write shipment
-- state and nothing else.  Roles belong to the cluster: DROP EXTENSION
-- leaves it, and a second database with the extension shares it.
--
DO $$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'biteship_webhook_apply') THEN
		CREATE ROLE biteship_webhook_apply NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
		COMMENT ON ROLE biteship_webhook_apply IS
			'biteship_webhook: applies events and runs application triggers';
	END IF;
END
$$;
GRANT USAGE ON SCHEMA biteship_webhook TO biteship_webhook_apply;
GRANT SELECT, INSERT, UPDATE ON biteship_webhook.orders TO biteship_webhook_apply;
GRANT SELECT, INSERT ON biteship_webhook.order_status_history TO biteship_webhook_apply;

--
-- The listener caches the webhook paths (it keeps request bodies only for
-- them).  Any change to the webhooks table moves the configuration
-- generation at commit, and the listeners reload.
--
CREATE FUNCTION biteship_webhook.config_changed()
RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 'bw_config_changed';

-- (per row, so that an UPDATE that matches nothing moves nothing)
CREATE TRIGGER webhooks_config_changed
	AFTER INSERT OR UPDATE OR DELETE ON biteship_webhook.webhooks
	FOR EACH ROW EXECUTE FUNCTION biteship_webhook.config_changed();
CREATE TRIGGER webhooks_config_truncated
	AFTER TRUNCATE ON biteship_webhook.webhooks
	FOR EACH STATEMENT EXECUTE FUNCTION biteship_webhook.config_changed();

--
-- Application triggers on the extension's tables are not part of pg_dump's
-- output (PostgreSQL dumps only the data of an extension's tables).  This
-- view lists them with their definitions, to keep with the dump.
--
CREATE VIEW biteship_webhook.application_triggers AS
	SELECT c.relname::text AS table_name,
	       t.tgname::text AS trigger_name,
	       t.tgfoid::pg_catalog.regprocedure AS function,
	       t.tgenabled <> 'D' AS enabled,
	       pg_catalog.pg_get_triggerdef(t.oid, true) AS definition
	  FROM pg_catalog.pg_trigger t
	  JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
	  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
	 WHERE n.nspname = 'biteship_webhook'
	   AND NOT t.tgisinternal
	   AND t.tgfoid <> 'biteship_webhook.config_changed()'::pg_catalog.regprocedure;

--
-- Every function runs with a pinned search_path: no object that another
-- role creates elsewhere can capture the statements inside.
--
ALTER FUNCTION biteship_webhook.create_webhook(text, text, text, text[], text, text, text)
	SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION biteship_webhook.drop_webhook(text)
	SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION biteship_webhook.add_webhook_secret(text, text, timestamptz)
	SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION biteship_webhook.remove_webhook_secret(text, integer)
	SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION biteship_webhook.ingest(text, bytea, jsonb)
	SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION biteship_webhook.ingest(text, text, jsonb)
	SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION biteship_webhook.ingest(text, jsonb, jsonb)
	SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION biteship_webhook.replay(bigint)
	SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION biteship_webhook.replay_failed(text)
	SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION biteship_webhook.purge_events(interval, boolean)
	SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION biteship_webhook.stats()
	SET search_path = pg_catalog, pg_temp;

REVOKE ALL ON FUNCTION biteship_webhook.config_changed() FROM PUBLIC;
REVOKE ALL ON biteship_webhook.application_triggers FROM PUBLIC;

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
	  FROM biteship_webhook.endpoints p;

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
