--
-- The ingest path: verification, installation checks, bad bodies,
-- deduplication, ignored and failed events.
--
SET timezone = 'UTC';
\set sig '{"X-Biteship-Signature": "live-secret-1"}'
\set delivered `cat test/data/order_status_delivered.json`
\set picking_up `cat test/data/order_status_picking_up.json`
\set docs_status `cat test/data/order_status_docs_example.json`
\set camel `cat test/data/order_status_camelcase.json`
\set waybill `cat test/data/order_waybill_id_docs_example.json`
\set price `cat test/data/order_price_docs_example.json`
\set unknown `cat test/data/unknown_event.json`
\set empty `cat test/data/install_check_empty.json`
\set emptyobj `cat test/data/install_check_object.json`

-- Installation checks: 200 and "ping", even without the signature header,
-- and nothing but the event row is written.
SELECT * FROM biteship_webhook.ingest('live', :'empty'::bytea);
SELECT * FROM biteship_webhook.ingest('live', :'emptyobj'::text);
SELECT * FROM biteship_webhook.ingest('live', E' \n\t '::text);
SELECT * FROM biteship_webhook.ingest('live', E'{ \n }'::text, '{"X-Biteship-Signature": "wrong"}');
SELECT * FROM biteship_webhook.ingest('test', ''::text);
-- a repeated check is a redelivery of the first
SELECT * FROM biteship_webhook.ingest('live', ''::text);
SELECT (SELECT count(*) FROM biteship_webhook.orders) AS orders,
       (SELECT count(*) FROM biteship_webhook.order_status_history) AS history;
SELECT id, state, http_status, event, payload, raw_body, body_size, delivery_count
  FROM biteship_webhook.events ORDER BY id;

-- Verification: a missing or wrong header is 401, logged as rejected with
-- the reason, and the header value never reaches the log.
SELECT * FROM biteship_webhook.ingest('live', :'delivered'::text);
SELECT * FROM biteship_webhook.ingest('live', :'delivered'::text, '{"X-Biteship-Signature": "guess"}');
SELECT * FROM biteship_webhook.ingest('live', :'delivered'::text, '{"X-Biteship-Signature": "old-secret"}');
SELECT * FROM biteship_webhook.ingest('live', :'delivered'::text, '{"X-Other": "not-a-secret"}');
SELECT id, state, http_status, last_error, headers, secret_id, event, order_id,
       length(raw_body) AS raw_len, body_size
  FROM biteship_webhook.events WHERE state = 'rejected' ORDER BY id;
SELECT count(*) AS leaked
  FROM biteship_webhook.events
 WHERE headers::text LIKE '%guess%' OR headers::text LIKE '%old-secret%'
    OR headers::text LIKE '%"x-biteship-signature": "live%';
SELECT (SELECT count(*) FROM biteship_webhook.orders) AS orders_after_rejects;

-- Header names match case-insensitively; either valid secret is accepted
-- and the event records which one matched.
SELECT * FROM biteship_webhook.ingest('live', :'delivered'::text, '{"x-biteship-signature": "live-secret-1"}');
SELECT * FROM biteship_webhook.ingest('live', :'docs_status'::text, '{"X-BITESHIP-SIGNATURE": "live-secret-2"}');
SELECT e.id, e.state, s.secret_sha256 = sha256(convert_to(x.secret, 'UTF8')) AS matched_expected,
       e.headers
  FROM biteship_webhook.events e
  JOIN biteship_webhook.webhook_secrets s ON s.id = e.secret_id
  JOIN (VALUES ('690dd0887692553f72342bb3', 'live-secret-1'),
               ('5dd6da88f43bd430ecd5aa2e', 'live-secret-2')) x(order_id, secret)
    ON x.order_id = e.order_id
 ORDER BY e.id;

-- The fixtures: status, waybill and price events.
SELECT * FROM biteship_webhook.ingest('live', :'waybill'::text, :'sig');
SELECT * FROM biteship_webhook.ingest('live', :'price'::text, :'sig');
SELECT * FROM biteship_webhook.ingest('live', :'camel'::text, :'sig');
SELECT environment, order_id, status, courier_company, courier_type,
       courier_tracking_id, courier_waybill_id, courier_link,
       courier_driver_name, courier_driver_phone, courier_driver_photo_url,
       courier_driver_plate_number, order_price, price, shipment_fee,
       cash_on_delivery_fee, proof_of_delivery_fee,
       CASE WHEN status_updated_at > now() - interval '1 day' THEN 'receive time'
            ELSE status_updated_at::text END AS status_updated_at,
       is_final, last_event_id
  FROM biteship_webhook.orders ORDER BY order_id;
SELECT environment, order_id, status,
       CASE WHEN occurred_at > now() - interval '1 day' THEN 'receive time'
            ELSE occurred_at::text END AS occurred_at,
       event_id, source, note
  FROM biteship_webhook.order_status_history ORDER BY order_id, occurred_at;

-- Idempotency: the same body again is not applied again; the original
-- event counts the delivery.
SELECT * FROM biteship_webhook.ingest('live', :'delivered'::text, :'sig');
SELECT * FROM biteship_webhook.ingest('live', :'delivered'::text, :'sig');
SELECT id, state, delivery_count, last_delivery_at >= received_at AS bumped
  FROM biteship_webhook.events WHERE order_id = '690dd0887692553f72342bb3' AND state <> 'rejected';
SELECT count(*) AS history_rows FROM biteship_webhook.order_status_history
 WHERE order_id = '690dd0887692553f72342bb3';
-- a different webhook is a different sender: not a duplicate
SELECT biteship_webhook.create_webhook('live2', '/biteship/live2');
SELECT http_status, state FROM biteship_webhook.ingest('live2', :'delivered'::text);

-- Bad bodies are 400, logged as rejected, raw bytes kept but truncated.
SELECT * FROM biteship_webhook.ingest('live', '[{"event": "order.status"}]'::text, :'sig');
SELECT * FROM biteship_webhook.ingest('live', '"order.status"'::text, :'sig');
SELECT * FROM biteship_webhook.ingest('live', '42'::text, :'sig');
SELECT * FROM biteship_webhook.ingest('live', 'event=order.status'::text, :'sig');
SELECT * FROM biteship_webhook.ingest('live', '{"event": "order.status", '::text, :'sig');
SELECT * FROM biteship_webhook.ingest('live', '{"a": "\u0000"}'::text, :'sig');
SELECT * FROM biteship_webhook.ingest('live', '\x7b2261223a22ff227d'::bytea, :'sig');
SELECT * FROM biteship_webhook.ingest('live', '\x7b7d007b7d'::bytea, :'sig');
SELECT * FROM biteship_webhook.ingest('live', '{"a": 1e999999}'::text, :'sig');
SELECT * FROM biteship_webhook.ingest('live', convert_to('{"a":' || repeat('[', 100000), 'UTF8'), :'sig');
SELECT * FROM biteship_webhook.ingest('live', convert_to('{"x": "' || repeat('y', 10000) || '"', 'UTF8'), :'sig');
SELECT id, length(raw_body) AS raw_len, body_size, payload IS NULL AS no_payload
  FROM biteship_webhook.events WHERE http_status = 400 ORDER BY id;
-- rejected bodies never take part in dedup: a forged copy cannot shadow the real one
SELECT * FROM biteship_webhook.ingest('live', '{"event":"order.status","order_id":"aaaaaaaaaaaaaaaaaaaaaaaa","status":"picked"}'::text, '{"X-Biteship-Signature": "forged"}');
SELECT * FROM biteship_webhook.ingest('live', '{"event":"order.status","order_id":"aaaaaaaaaaaaaaaaaaaaaaaa","status":"picked"}'::text, :'sig');
SELECT * FROM biteship_webhook.ingest('live', '{"event":"order.status","order_id":"aaaaaaaaaaaaaaaaaaaaaaaa","status":"picked"}'::text, '{"X-Biteship-Signature": "forged"}');

-- Ignored: unknown events, unsubscribed events, no event at all.  Still 200.
SELECT * FROM biteship_webhook.ingest('live', :'unknown'::text, :'sig');
SELECT * FROM biteship_webhook.ingest('status-only', :'waybill'::text);
SELECT * FROM biteship_webhook.ingest('live', '{"order_id": "5dd6da88f43bd430ecd5aa2e"}'::text, :'sig');
SELECT id, event, state, last_error FROM biteship_webhook.events WHERE state = 'ignored' ORDER BY id;

-- Failed: verified and kept, answered 200, retried later.
SELECT * FROM biteship_webhook.ingest('live', '{"event": "order.status", "status": "picked"}'::text, :'sig');
SELECT * FROM biteship_webhook.ingest('live', '{"event": "order.price", "order_id": ""}'::text, :'sig');
SELECT * FROM biteship_webhook.ingest('live', jsonb_build_object('event', 'order.status', 'order_id', repeat('x', 200)), :'sig');
SELECT id, state, attempts, last_error, next_attempt_at > received_at AS retry_scheduled
  FROM biteship_webhook.events WHERE state = 'failed' ORDER BY id;

-- The jsonb overload, and header values that are not strings.
SELECT * FROM biteship_webhook.ingest('test', '{"event": "order.status", "order_id": "t1", "status": "confirmed"}'::jsonb, '{"X-Num": 5, "X-Null": null}');
SELECT headers FROM biteship_webhook.events WHERE order_id = 't1';

-- Caller errors are errors, not events.
SELECT * FROM biteship_webhook.ingest('nosuch', ''::text);
SELECT * FROM biteship_webhook.ingest('live', NULL::bytea);
SELECT * FROM biteship_webhook.ingest('live', ''::text, '[1]');

SELECT state, http_status, count(*) FROM biteship_webhook.events GROUP BY 1, 2 ORDER BY 1, 2;
