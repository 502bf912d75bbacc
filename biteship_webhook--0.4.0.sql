/* biteship_webhook--0.4.0.sql */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION biteship_webhook" to load this file. \quit

-- The install script of 0.4.0: the objects of 0.2.0 (as
-- biteship_webhook--0.2.0.sql creates them, with the dedup index of 0.4.0),
-- then what 0.3.0 adds, in the order biteship_webhook--0.2.0--0.3.0.sql
-- does, so that a fresh install and an upgraded one are the same
-- (sql/upgrade.sql compares their catalogs).

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
-- misconfigured delivery can never shadow the genuine one.  The first 8
-- characters of the order id come first: Biteship's order ids are ObjectIds
-- that start with the order's creation time, so new deliveries land in the
-- recent end of the index instead of a random page of it (after a
-- checkpoint, each page first touched costs a full-page image in WAL).
-- The order id is part of the body, so the digest still decides alone.
CREATE UNIQUE INDEX events_dedup_idx
	ON biteship_webhook.events
	(webhook_id, (pg_catalog.substr(COALESCE(order_id, ''), 1, 8)) COLLATE "C", body_sha256)
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

--
-- What 0.3.0 adds.
--

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
