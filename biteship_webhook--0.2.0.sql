/* biteship_webhook--0.2.0.sql */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION biteship_webhook" to load this file. \quit

-- The install script of 0.2.0: the objects of 0.1.0, then what 0.2.0
-- adds and changes, in the order biteship_webhook--0.1.0--0.2.0.sql does,
-- so that a fresh install and an upgraded one are the same (sql/upgrade.sql
-- compares their catalogs).

-- The schema belongs to the extension: DROP EXTENSION removes it.
CREATE SCHEMA biteship_webhook;
COMMENT ON SCHEMA biteship_webhook IS 'Biteship webhook receiver: configuration, events log and shipment state';

--
-- Configuration: one row per webhook registered in Biteship's dashboard.
--
CREATE TABLE biteship_webhook.webhooks (
	id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	name text NOT NULL UNIQUE
		CONSTRAINT webhooks_name_check CHECK (name ~ '^[A-Za-z0-9_.-]{1,63}$'),
	path text NOT NULL UNIQUE
		CONSTRAINT webhooks_path_check
		CHECK (path ~ '^/[A-Za-z0-9._~!$&''()*+,;=:@%/-]*$' AND length(path) <= 1024),
	environment text NOT NULL DEFAULT 'live'
		CONSTRAINT webhooks_environment_check CHECK (environment IN ('live', 'test')),
	events text[] NOT NULL DEFAULT '{order.status,order.waybill_id,order.price}',
	signature_key text
		CONSTRAINT webhooks_signature_key_check
		CHECK (signature_key ~ '^[!#$%&''*+.^_`|~0-9A-Za-z-]{1,128}$'),
	description text,
	created_at timestamptz NOT NULL DEFAULT now(),
	updated_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE biteship_webhook.webhooks IS
	'Webhooks registered in Biteship''s dashboard; secrets live in webhook_secrets as hashes';

--
-- Signature secrets, stored only as SHA-256 digests.  Several may be valid
-- at once, so that a secret can be rotated without losing deliveries.
--
CREATE TABLE biteship_webhook.webhook_secrets (
	id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	webhook_id integer NOT NULL
		REFERENCES biteship_webhook.webhooks (id) ON DELETE CASCADE,
	secret_sha256 bytea NOT NULL
		CONSTRAINT webhook_secrets_digest_check CHECK (length(secret_sha256) = 32),
	created_at timestamptz NOT NULL DEFAULT now(),
	expires_at timestamptz,
	UNIQUE (webhook_id, secret_sha256)
);

COMMENT ON TABLE biteship_webhook.webhook_secrets IS
	'SHA-256 digests of the signature secrets of each webhook';

--
-- The events log: one row per distinct delivery.  Redeliveries of the same
-- body bump delivery_count instead of adding rows.  There is deliberately no
-- foreign key to webhooks: the log outlives a dropped webhook, and the
-- ingest path saves a referential-integrity query per event.
--
CREATE TABLE biteship_webhook.events (
	id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	webhook_id integer NOT NULL,
	environment text NOT NULL,
	received_at timestamptz NOT NULL,
	event text,
	order_id text,
	payload jsonb,
	body_sha256 bytea NOT NULL,
	raw_body bytea,
	body_size integer NOT NULL,
	headers jsonb NOT NULL DEFAULT '{}',
	remote_addr inet,
	secret_id integer,
	http_status smallint NOT NULL,
	-- pending, applied, ignored, ping, failed or rejected.  Only the
	-- extension writes it; there is no CHECK constraint because the
	-- executor re-reads CHECK expressions from the catalog on every insert,
	-- a measurable cost on the ingest path.
	state text NOT NULL,
	attempts integer NOT NULL DEFAULT 0,
	last_error text,
	notes text,
	applied_at timestamptz,
	next_attempt_at timestamptz,
	delivery_count integer NOT NULL DEFAULT 1,
	last_delivery_at timestamptz NOT NULL
);

COMMENT ON TABLE biteship_webhook.events IS
	'Every delivery received, with its verification and apply outcome';

-- The dedup key.  Rejected deliveries are not part of it, so that a forged or
-- misconfigured delivery can never shadow the genuine one.
CREATE UNIQUE INDEX events_dedup_idx
	ON biteship_webhook.events (webhook_id, body_sha256)
	WHERE state <> 'rejected';

-- Retention purges by age.  Events arrive in time order, so a BRIN index
-- serves the range scans at a fraction of a btree's insert cost.
CREATE INDEX events_received_at_idx
	ON biteship_webhook.events USING brin (received_at);

-- The dispatcher's work queue: pending events and failed ones due for retry.
CREATE INDEX events_work_idx
	ON biteship_webhook.events (next_attempt_at)
	WHERE state IN ('pending', 'failed');

--
-- Current shipment state per order.
--
CREATE TABLE biteship_webhook.orders (
	environment text NOT NULL,
	order_id text NOT NULL,
	status text,
	courier_company text,
	courier_type text,
	courier_tracking_id text,
	courier_waybill_id text,
	courier_link text,
	courier_driver_name text,
	courier_driver_phone text,
	courier_driver_photo_url text,
	courier_driver_plate_number text,
	order_price numeric,
	price numeric,
	shipment_fee numeric,
	cash_on_delivery_fee numeric,
	proof_of_delivery_fee numeric,
	status_updated_at timestamptz,
	is_final boolean NOT NULL DEFAULT false,
	created_at timestamptz NOT NULL DEFAULT now(),
	updated_at timestamptz NOT NULL DEFAULT now(),
	last_event_id bigint,
	PRIMARY KEY (environment, order_id)
) WITH (fillfactor = 70);		-- room for HOT updates: every status updates the row

COMMENT ON TABLE biteship_webhook.orders IS
	'Newest known shipment state of each Biteship order';

--
-- Every status an order went through, in the order Biteship says it
-- happened.  Late statuses land here even when they no longer change
-- orders.status.
--
CREATE TABLE biteship_webhook.order_status_history (
	environment text NOT NULL,
	order_id text NOT NULL,
	status text NOT NULL,
	occurred_at timestamptz NOT NULL,
	event_id bigint,
	source text NOT NULL DEFAULT 'webhook',	-- webhook, replay or api
	note text,
	recorded_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (environment, order_id, occurred_at, status)
);

COMMENT ON TABLE biteship_webhook.order_status_history IS
	'Status transitions of each order, one row per (order, status, time)';

-- pg_dump keeps the data of extension tables.
SELECT pg_catalog.pg_extension_config_dump('biteship_webhook.webhooks', '');
SELECT pg_catalog.pg_extension_config_dump('biteship_webhook.webhook_secrets', '');
SELECT pg_catalog.pg_extension_config_dump('biteship_webhook.events', '');
SELECT pg_catalog.pg_extension_config_dump('biteship_webhook.orders', '');
SELECT pg_catalog.pg_extension_config_dump('biteship_webhook.order_status_history', '');

--
-- Administration.
--
CREATE FUNCTION biteship_webhook.create_webhook(
	name text,
	path text,
	environment text DEFAULT 'live',
	events text[] DEFAULT '{order.status,order.waybill_id,order.price}',
	signature_key text DEFAULT NULL,
	signature_secret text DEFAULT NULL,
	description text DEFAULT NULL)
RETURNS integer
LANGUAGE C
AS 'MODULE_PATHNAME', 'bw_create_webhook';

CREATE FUNCTION biteship_webhook.drop_webhook(name text)
RETURNS void
LANGUAGE C STRICT
AS 'MODULE_PATHNAME', 'bw_drop_webhook';

CREATE FUNCTION biteship_webhook.add_webhook_secret(
	name text,
	secret text,
	expires_at timestamptz DEFAULT NULL)
RETURNS integer
LANGUAGE C
AS 'MODULE_PATHNAME', 'bw_add_webhook_secret';

CREATE FUNCTION biteship_webhook.remove_webhook_secret(name text, secret_id integer)
RETURNS void
LANGUAGE C STRICT
AS 'MODULE_PATHNAME', 'bw_remove_webhook_secret';

--
-- Ingest: the code path of the HTTP listener, minus HTTP.
--
CREATE FUNCTION biteship_webhook.ingest(
	webhook text,
	body bytea,
	headers jsonb DEFAULT '{}',
	OUT http_status integer,
	OUT event_id bigint,
	OUT state text,
	OUT error text)
RETURNS SETOF record
LANGUAGE C
ROWS 1
AS 'MODULE_PATHNAME', 'bw_ingest';

CREATE FUNCTION biteship_webhook.ingest(
	webhook text,
	body text,
	headers jsonb DEFAULT '{}',
	OUT http_status integer,
	OUT event_id bigint,
	OUT state text,
	OUT error text)
RETURNS SETOF record
LANGUAGE SQL
ROWS 1
AS $$
	SELECT * FROM biteship_webhook.ingest($1, pg_catalog.convert_to($2, 'UTF8'), $3)
$$;

CREATE FUNCTION biteship_webhook.ingest(
	webhook text,
	body jsonb,
	headers jsonb DEFAULT '{}',
	OUT http_status integer,
	OUT event_id bigint,
	OUT state text,
	OUT error text)
RETURNS SETOF record
LANGUAGE SQL
ROWS 1
AS $$
	SELECT * FROM biteship_webhook.ingest($1, pg_catalog.convert_to($2::text, 'UTF8'), $3)
$$;

CREATE FUNCTION biteship_webhook.replay(event_id bigint)
RETURNS text
LANGUAGE C STRICT
AS 'MODULE_PATHNAME', 'bw_replay';

CREATE FUNCTION biteship_webhook.replay_failed(webhook text DEFAULT NULL)
RETURNS bigint
LANGUAGE C
AS 'MODULE_PATHNAME', 'bw_replay_failed';

CREATE FUNCTION biteship_webhook.purge_events(
	older_than interval,
	include_failed boolean DEFAULT false)
RETURNS bigint
LANGUAGE C STRICT
AS 'MODULE_PATHNAME', 'bw_purge_events';

--
-- Counters kept in shared memory by the listener and dispatcher.
--
CREATE FUNCTION biteship_webhook.stats(
	OUT name text,
	OUT labels jsonb,
	OUT value double precision)
RETURNS SETOF record
LANGUAGE C STRICT
AS 'MODULE_PATHNAME', 'bw_stats';

-- The counters, plus the backlog of work the dispatcher has not done yet.
CREATE VIEW biteship_webhook.stats AS
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
	 GROUP BY s.state;

--
-- Privileges: nothing for PUBLIC.  See README.md for the grants an
-- application role needs.
--
REVOKE ALL ON ALL TABLES IN SCHEMA biteship_webhook FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA biteship_webhook FROM PUBLIC;
REVOKE ALL ON SCHEMA biteship_webhook FROM PUBLIC;

--
-- What 0.2.0 adds.
--

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
