--
-- Replaying events and purging the log.
--
SET timezone = 'UTC';
\set sig '{"X-Biteship-Signature": "live-secret-1"}'

-- A failing mapping: order_id longer than we accept.  It fails, then a
-- replay fails again and counts the attempt.
SELECT id AS long_id FROM biteship_webhook.events WHERE state = 'failed' AND payload->>'order_id' LIKE 'xxxx%' \gset
SELECT biteship_webhook.replay(:long_id);
SELECT state, attempts, last_error FROM biteship_webhook.events WHERE id = :long_id;

-- Replaying an applied event is harmless: nothing changes, no duplicates.
SELECT id AS applied_id FROM biteship_webhook.events WHERE order_id = 'ord-1' AND state = 'applied' ORDER BY id LIMIT 1 \gset
SELECT count(*) AS history_before FROM biteship_webhook.order_status_history WHERE order_id = 'ord-1' \gset
SELECT biteship_webhook.replay(:applied_id);
SELECT count(*) = :history_before AS history_unchanged FROM biteship_webhook.order_status_history WHERE order_id = 'ord-1';

-- Ping, rejected and missing events.
SELECT biteship_webhook.replay(id) FROM biteship_webhook.events WHERE state = 'ping' ORDER BY id LIMIT 1;
SELECT biteship_webhook.replay(id) FROM biteship_webhook.events WHERE state = 'rejected' ORDER BY id LIMIT 1;
SELECT biteship_webhook.replay(-1);

-- An ignored event is re-evaluated against the webhook's current subscription.
SELECT id AS unsub_id FROM biteship_webhook.events WHERE state = 'ignored' AND last_error LIKE '%not subscribed%' \gset
UPDATE biteship_webhook.webhooks SET events = '{order.status,order.waybill_id}' WHERE name = 'status-only';
SELECT biteship_webhook.replay(:unsub_id);
SELECT order_id, courier_waybill_id FROM biteship_webhook.orders WHERE order_id = 'AbSASD12213dadas';

-- replay_failed: every failed event, or those of one webhook.
SELECT biteship_webhook.replay_failed('test');
SELECT biteship_webhook.replay_failed('nosuch');
SELECT biteship_webhook.replay_failed();
SELECT state, count(*) FROM biteship_webhook.events WHERE state = 'failed' GROUP BY 1;

-- Events outlive their webhook and can still be replayed.
SELECT biteship_webhook.create_webhook('temp', '/biteship/temp');
SELECT event_id AS temp_id FROM biteship_webhook.ingest('temp', '{"event":"order.status","order_id":"tmp-1","status":"picked"}'::text) \gset
SELECT biteship_webhook.drop_webhook('temp');
SELECT biteship_webhook.replay(:temp_id);

-- purge_events keeps failed events unless asked.
UPDATE biteship_webhook.events SET received_at = received_at - interval '60 days' WHERE id <= 20 OR state = 'failed';
SELECT count(*) FILTER (WHERE state = 'failed') AS old_failed, count(*) AS old_total
  FROM biteship_webhook.events WHERE received_at < now() - interval '30 days';
SELECT biteship_webhook.purge_events('30 days') > 0 AS purged;
SELECT count(*) FILTER (WHERE state = 'failed') AS old_failed, count(*) AS old_total
  FROM biteship_webhook.events WHERE received_at < now() - interval '30 days';
SELECT biteship_webhook.purge_events('30 days', include_failed => true);
SELECT count(*) AS old_total FROM biteship_webhook.events WHERE received_at < now() - interval '30 days';
SELECT biteship_webhook.purge_events(NULL);
