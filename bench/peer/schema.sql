-- Tables of the Node.js peer receiver: what a merchant would create for a
-- conventional webhook endpoint.  Same work as the extension's tables: a raw
-- event log deduplicated on the body's SHA-256, the newest state per order,
-- and the history of statuses.
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS peer CASCADE;
CREATE SCHEMA peer;

CREATE TABLE peer.events (
	id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	received_at timestamptz NOT NULL DEFAULT now(),
	event text,
	order_id text,
	payload jsonb NOT NULL,
	raw_body text NOT NULL,
	body_sha256 bytea NOT NULL,
	body_size integer NOT NULL,
	headers jsonb NOT NULL,
	remote_addr inet,
	state text NOT NULL
);
CREATE UNIQUE INDEX events_body_sha256_idx ON peer.events (body_sha256);
CREATE INDEX events_received_at_idx ON peer.events (received_at);

CREATE TABLE peer.orders (
	order_id text PRIMARY KEY,
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
	created_at timestamptz NOT NULL DEFAULT now(),
	updated_at timestamptz NOT NULL DEFAULT now(),
	last_event_id bigint
);

CREATE TABLE peer.order_status_history (
	order_id text NOT NULL,
	status text NOT NULL,
	occurred_at timestamptz NOT NULL,
	event_id bigint NOT NULL,
	recorded_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (order_id, occurred_at, status)
);
