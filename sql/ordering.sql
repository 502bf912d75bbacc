--
-- Ordering, field ownership, status normalisation and value parsing.
--
SET timezone = 'UTC';
\set sig '{"X-Biteship-Signature": "live-secret-1"}'

CREATE FUNCTION deliver(order_id text, status text, updated_at text, extra jsonb DEFAULT '{}')
RETURNS text LANGUAGE sql AS $$
	SELECT state FROM biteship_webhook.ingest('live',
		(jsonb_build_object('event', 'order.status', 'order_id', order_id, 'status', status)
		 || CASE WHEN updated_at IS NULL THEN '{}'::jsonb
		         ELSE jsonb_build_object('updated_at', updated_at) END
		 || extra),
		'{"X-Biteship-Signature": "live-secret-1"}')
$$;

-- In order, then a late one: history has all three, orders keeps the newest.
SELECT deliver('ord-1', 'allocated', '2025-11-08T01:00:00Z');
SELECT deliver('ord-1', 'picked', '2025-11-08T03:00:00Z', '{"courier_waybill_id": "WB-1"}');
SELECT deliver('ord-1', 'picking_up', '2025-11-08T02:00:00Z', '{"courier_waybill_id": "WB-STALE"}');
SELECT status, courier_waybill_id, status_updated_at, is_final FROM biteship_webhook.orders WHERE order_id = 'ord-1';
SELECT status, occurred_at, source FROM biteship_webhook.order_status_history WHERE order_id = 'ord-1' ORDER BY occurred_at;

-- Offsets and milliseconds compare as instants: 09:30+07:00 is 02:30Z.
SELECT deliver('ord-1', 'dropping_off', '2025-11-08T09:30:00.500+07:00');
SELECT deliver('ord-1', 'on_hold', '2025-11-08 02:29:59.999+0000');
SELECT status, status_updated_at FROM biteship_webhook.orders WHERE order_id = 'ord-1';
SELECT deliver('ord-1', 'delivered', '2025-11-08T04:00:00');
SELECT status, status_updated_at, is_final FROM biteship_webhook.orders WHERE order_id = 'ord-1';

-- Without updated_at the receive time stands in, so the status still advances.
SELECT deliver('ord-2', 'confirmed', NULL);
SELECT deliver('ord-2', 'allocated', NULL);
SELECT status, status_updated_at > now() - interval '1 hour' AS recent FROM biteship_webhook.orders WHERE order_id = 'ord-2';

-- Unparseable values become NULL, with a note; the event is still applied.
SELECT deliver('ord-3', 'picked', 'yesterday', '{"order_price": "lots", "courier_company": {"code": "jne"}}');
SELECT status, order_price, courier_company, status_updated_at > now() - interval '1 hour' AS fell_back
  FROM biteship_webhook.orders WHERE order_id = 'ord-3';
SELECT state, notes FROM biteship_webhook.events WHERE order_id = 'ord-3';
SELECT note FROM biteship_webhook.order_status_history WHERE order_id = 'ord-3';

-- Numbers sent as strings are accepted.
SELECT deliver('ord-4', 'picked', '2025-11-08T01:00:00Z', '{"order_price": " 16000.50 "}');
SELECT state FROM biteship_webhook.ingest('live', '{"event": "order.price", "order_id": "ord-4", "price": "17000", "shippment_fee": 9000, "cash_on_delivery_fee": "0", "proof_of_delivery_fee": null, "status": "picked"}'::text, :'sig');
SELECT order_price, price, shipment_fee, cash_on_delivery_fee, proof_of_delivery_fee, status
  FROM biteship_webhook.orders WHERE order_id = 'ord-4';

-- order.waybill_id and order.price update only their own fields.
SELECT state FROM biteship_webhook.ingest('live', '{"event": "order.waybill_id", "order_id": "ord-4", "courier_tracking_id": "TRK-4", "courier_waybill_id": "WB-4", "status": "cancelled"}'::text, :'sig');
SELECT status, is_final, courier_tracking_id, courier_waybill_id, price, status_updated_at
  FROM biteship_webhook.orders WHERE order_id = 'ord-4';
SELECT count(*) AS history_rows FROM biteship_webhook.order_status_history WHERE order_id = 'ord-4';
-- a waybill or price event may also be the first thing we hear of an order
SELECT state FROM biteship_webhook.ingest('live', '{"event": "order.waybill_id", "order_id": "ord-5", "courier_waybill_id": "WB-5"}'::text, :'sig');
SELECT status, courier_waybill_id, is_final FROM biteship_webhook.orders WHERE order_id = 'ord-5';
SELECT deliver('ord-5', 'picked', '2025-11-08T01:00:00Z');
SELECT status, courier_waybill_id FROM biteship_webhook.orders WHERE order_id = 'ord-5';

-- Status normalisation: camelCase and upper case become snake_case,
-- unknown statuses are kept verbatim.
SELECT deliver('norm-' || s, s, '2025-11-08T01:00:00Z')
  FROM unnest(ARRAY['pickingUp', 'droppingOff', 'returnInTransit', 'onHold',
                    'courierNotFound', 'DELIVERED', 'someNewStatus', 'in_warehouse']) s;
SELECT order_id, status, is_final FROM biteship_webhook.orders WHERE order_id LIKE 'norm-%' ORDER BY order_id;

-- is_final follows the documented table.
SELECT deliver('final-' || s, s, '2025-11-08T01:00:00Z')
  FROM unnest(ARRAY['confirmed', 'scheduled', 'allocated', 'picking_up', 'picked',
                    'dropping_off', 'on_hold', 'return_in_transit', 'delivered',
                    'returned', 'cancelled', 'rejected', 'courier_not_found', 'disposed']) s;
SELECT status, is_final FROM biteship_webhook.orders WHERE order_id LIKE 'final-%' ORDER BY is_final, status;

-- Environments never mix: the same order id in test and live.
SELECT state FROM biteship_webhook.ingest('test', '{"event": "order.status", "order_id": "ord-1", "status": "cancelled", "updated_at": "2030-01-01T00:00:00Z"}'::text);
SELECT environment, status FROM biteship_webhook.orders WHERE order_id = 'ord-1' ORDER BY environment;
SELECT environment, count(*) FROM biteship_webhook.order_status_history WHERE order_id = 'ord-1' GROUP BY 1 ORDER BY 1;

-- A missing status on a status event changes other fields but not the status.
SELECT deliver('ord-6', 'picked', '2025-11-08T01:00:00Z');
SELECT state FROM biteship_webhook.ingest('live', '{"event": "order.status", "order_id": "ord-6", "courier_driver_name": "Budi", "updated_at": "2025-11-08T02:00:00Z"}'::text, :'sig');
SELECT status, courier_driver_name FROM biteship_webhook.orders WHERE order_id = 'ord-6';
SELECT notes FROM biteship_webhook.events WHERE order_id = 'ord-6' ORDER BY id DESC LIMIT 1;

DROP FUNCTION deliver(text, text, text, jsonb);
