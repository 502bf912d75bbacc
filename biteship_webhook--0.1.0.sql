/* biteship_webhook--0.1.0.sql */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION biteship_webhook" to load this file. \quit

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
