-- Fill biteship_webhook.events with rows g = :lo .. :hi of :total synthetic
-- but realistic deliveries: eight per order (statuses, a waybill event and
-- now and then a price event), compact JSON bodies of Biteship's shape,
-- distinct body_sha256, received_at spread over the last 29 days (younger
-- than the default retention) in order of g.  The order ids carry the
-- generation byte ff, which the replayed stream never uses before 255
-- generations, so these rows never collide with the benchmark's orders.
--
--   psql -v lo=1 -v hi=2500000 -v total=5000000 -v wid=1 -v sid=1 -f fill_events.sql
--
-- The bodies are built as text (cheaper than jsonb_build_object, and
-- byte for byte what Biteship sends) and parsed once into payload.  Like
-- ingest, the rows keep no raw_body: that is kept for rejected deliveries
-- only, and rows twice the size of the listener's would leave free space
-- in every page of the heap that the benchmark's inserts then fill.  The
-- OFFSET 0 fences keep the planner from inlining the subqueries, which
-- would build every body several times.
\set ON_ERROR_STOP 1
INSERT INTO biteship_webhook.events AS e
	(webhook_id, environment, received_at, event, order_id, payload, body_sha256,
	 raw_body, body_size, headers, remote_addr, secret_id, http_status, state,
	 attempts, applied_at, delivery_count, last_delivery_at)
SELECT :wid, 'live', x.ts, x.ev, x.oid, x.body::jsonb, sha256(x.rb), NULL, length(x.rb),
	'{"host": "127.0.0.1", "accept": "*/*", "user-agent": "Biteship-Webhook/1.0", "content-type": "application/json", "content-length": "512", "x-biteship-signature": "[redacted]"}'::jsonb,
	'127.0.0.1'::inet, :sid, 200, 'applied', 1, x.ts, 1, x.ts
FROM (
	SELECT c.*, convert_to(c.body, 'UTF8') AS rb
	FROM (
		SELECT b.ts, b.ev, b.oid,
			CASE b.ev
			WHEN 'order.status' THEN
				'{"event":"order.status","order_id":"' || b.oid || '","order_price":' || b.price ||
				',"courier_tracking_id":"' || b.trk || '","courier_waybill_id":"' || b.wb ||
				'","courier_company":"' || b.co || '","courier_type":"reg"' ||
				',"courier_driver_name":"Budi Santoso","courier_driver_phone":"6281234567890"' ||
				',"courier_driver_plate_number":"B 1234 XYZ"' ||
				',"courier_driver_photo_url":"https://storage.googleapis.com/biteship-driver/' || b.trk || '.jpg"' ||
				',"courier_link":"https://track.biteship.com/' || b.trk || '?environment=production"' ||
				',"status":"' || b.st || '","updated_at":"' || b.upd || '"}'
			WHEN 'order.waybill_id' THEN
				'{"order_id":"' || b.oid || '","courier_tracking_id":"' || b.trk ||
				'","courier_waybill_id":"' || b.wb || '","event":"order.waybill_id","status":"' || b.st || '"}'
			ELSE
				'{"cash_on_delivery_fee":0,"courier_tracking_id":"' || b.trk ||
				'","courier_waybill_id":"' || b.wb || '","event":"order.price","order_id":"' || b.oid ||
				'","price":' || (b.price + 3000) || ',"proof_of_delivery_fee":0,"shippment_fee":' ||
				(b.price + 3000) || ',"status":"' || b.st || '"}'
			END AS body
		FROM (
			SELECT a.g, a.ts,
			       lpad(to_hex(1754000000 + a.o * 4), 8, '0') || 'c0ffee42' || 'ff' ||
			       lpad(to_hex(a.o % 16777216), 6, '0') AS oid,
			       CASE WHEN a.g % 10 = 7 THEN 'order.waybill_id'
			            WHEN a.g % 50 = 9 THEN 'order.price'
			            ELSE 'order.status' END AS ev,
			       (ARRAY['confirmed', 'allocated', 'picking_up', 'picked', 'dropping_off',
			              'delivered', 'delivered', 'delivered'])[a.g % 8 + 1] AS st,
			       (ARRAY['jne', 'sicepat', 'jnt', 'anteraja', 'gojek'])[a.o % 5 + 1] AS co,
			       translate(substr(encode(sha256(int8send(a.o)), 'base64'), 1, 24), '+/', 'Qz') AS trk,
			       lpad((a.o * 7919 % 10000000000000)::text, 16, '0') AS wb,
			       10000 + (a.o * 37 % 200) * 500 AS price,
			       to_char(a.ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS upd
			FROM (
				SELECT g, g / 8 AS o,
				       pg_catalog.now() - interval '29 days' + g * (interval '29 days' / :total) AS ts
				FROM generate_series(:lo::bigint, :hi::bigint) AS g
			) a
			OFFSET 0
		) b
		OFFSET 0
	) c
	OFFSET 0
) x
ON CONFLICT DO NOTHING;
