--
-- Reconciliation's SQL API without an API to talk to: argument checks,
-- the backfill queue, the gap rows of the stats view, and what an
-- application role can and cannot do.
--
SET log_statement = 'none';

-- set_api_key
SELECT biteship_webhook.set_api_key('staging', 'biteship_test.abcdefgh');
SELECT biteship_webhook.set_api_key(NULL, 'biteship_test.abcdefgh');
SELECT biteship_webhook.set_api_key('live', '');
SELECT biteship_webhook.set_api_key('live', 'short');
SELECT biteship_webhook.set_api_key('live', 'has a space');
SELECT biteship_webhook.set_api_key('live', E'line\nbreak');
SELECT biteship_webhook.set_api_key('live', repeat('k', 513));
-- a key of the other mode: stored, with a warning that does not show it
SELECT biteship_webhook.set_api_key('live', 'biteship_test.regress-key-1');
SELECT biteship_webhook.set_api_key('live', 'biteship_live.regress-key-2');
SELECT environment, api_key = 'biteship_live.regress-key-2' AS replaced FROM biteship_webhook.api_keys;
SELECT biteship_webhook.set_api_key('test', NULL);
SELECT count(*) AS keys FROM biteship_webhook.api_keys;

-- sync_order: what is refused before any request
SELECT biteship_webhook.sync_order('../v1/orders', 'live');
SELECT biteship_webhook.sync_order('a?b=c');
SELECT biteship_webhook.sync_order(repeat('a', 65));
SELECT biteship_webhook.sync_order('abc', 'staging');
SELECT biteship_webhook.sync_order('abc', 'test');
SELECT biteship_webhook.sync_order(NULL) IS NULL AS strict;

-- sync_orders: the backfill queue
SELECT biteship_webhook.sync_orders(ARRAY['a1', 'a2', 'a1']) AS queued;
SELECT biteship_webhook.sync_orders(ARRAY['a1', 'a3']) AS queued_again;
SELECT biteship_webhook.sync_orders('{}') AS nothing;
SELECT biteship_webhook.sync_orders(ARRAY['x', NULL]);
SELECT biteship_webhook.sync_orders(ARRAY['ok', 'bad/id']);
SELECT biteship_webhook.sync_orders(ARRAY['t1'], 'test') AS queued_without_key;
SELECT environment, order_id, reason, next_sync_at IS NOT NULL AS queued, attempts
  FROM biteship_webhook.order_syncs ORDER BY 1, 2;

-- the gaps in the stats view
SELECT name, labels->>'environment' AS environment, value
  FROM biteship_webhook.stats
 WHERE name IN ('stale_orders', 'reconcile_queue', 'api_key_configured')
 ORDER BY 1, 2;

-- an application role with the documented grants
CREATE ROLE bw_sync_app;
GRANT USAGE ON SCHEMA biteship_webhook TO bw_sync_app;
SET ROLE bw_sync_app;
SELECT * FROM biteship_webhook.api_keys;
SELECT * FROM biteship_webhook.order_syncs;
SELECT biteship_webhook.set_api_key('live', 'biteship_live.mine-now');
SELECT biteship_webhook.sync_orders(ARRAY['b1']);
SET biteship_webhook.api_timeout = '1s';
SET biteship_webhook.api_base_url = 'http://127.0.0.1:1';
RESET ROLE;
GRANT EXECUTE ON FUNCTION biteship_webhook.sync_order(text, text),
	biteship_webhook.sync_orders(text[], text) TO bw_sync_app;
GRANT SELECT ON biteship_webhook.order_syncs TO bw_sync_app;
SET ROLE bw_sync_app;
SELECT biteship_webhook.sync_orders(ARRAY['b1']) AS queued_by_app;
SELECT count(*) AS visible FROM biteship_webhook.order_syncs;
-- still no way to the key, the events log or the settings
SELECT * FROM biteship_webhook.api_keys;
SELECT count(*) FROM biteship_webhook.events;
SELECT biteship_webhook.set_api_key('live', NULL);
RESET ROLE;
-- the base URL is a server setting, checked when set
SET biteship_webhook.api_base_url = 'http://127.0.0.1:1';
ALTER SYSTEM SET biteship_webhook.api_base_url = 'ftp://example.com';
ALTER SYSTEM SET biteship_webhook.api_base_url = 'https://api.biteship.com/';

DROP OWNED BY bw_sync_app;
DROP ROLE bw_sync_app;
DELETE FROM biteship_webhook.order_syncs;
SELECT biteship_webhook.set_api_key('live', NULL);
RESET log_statement;
