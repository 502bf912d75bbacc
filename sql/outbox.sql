--
-- The outbox from SQL: endpoints and their validation, send() and its
-- validation, idempotency, retries by hand, forwarding rows, purging, and
-- what an application role can and cannot do.  (Sending itself needs the
-- outbound worker: see t/100_outbox.pl.)
--
SET timezone = 'UTC';
\set sig '{"X-Biteship-Signature": "live-secret-1"}'

-- endpoints
SELECT biteship_webhook.create_endpoint('wa', 'https://api.example.com/whatsapp/send',
	headers => '{"Authorization": "Bearer tok-123"}',
	description => 'WhatsApp provider') AS wa_id;
SELECT biteship_webhook.create_endpoint('relay', 'http://127.0.0.1:9/hooks',
	signing_secret => 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
	forward_events => '{order.status,order.price}', environment => 'live',
	timeout => '5s', max_attempts => 3) AS relay_id \gset
SELECT :relay_id > 0 AS relay_created;
SELECT name, url, enabled, forward_events, environment, timeout, max_attempts
  FROM biteship_webhook.endpoints ORDER BY id;

-- every refusal has a reason
SELECT biteship_webhook.create_endpoint('wa', 'https://example.com/');
SELECT biteship_webhook.create_endpoint('bad name', 'https://example.com/');
SELECT biteship_webhook.create_endpoint('ftp', 'ftp://example.com/');
SELECT biteship_webhook.create_endpoint('file', 'file:///etc/passwd');
SELECT biteship_webhook.create_endpoint('creds', 'https://user:pw@example.com/');
SELECT biteship_webhook.create_endpoint('nohost', 'http:///path');
SELECT biteship_webhook.create_endpoint('space', 'https://example.com/a b');
SELECT biteship_webhook.create_endpoint('h1', 'https://example.com/', headers => '["x"]');
SELECT biteship_webhook.create_endpoint('h2', 'https://example.com/', headers => '{"Bad Name": "x"}');
SELECT biteship_webhook.create_endpoint('h3', 'https://example.com/', headers => '{"Host": "evil"}');
SELECT biteship_webhook.create_endpoint('h4', 'https://example.com/', headers => '{"webhook-signature": "v1,x"}');
SELECT biteship_webhook.create_endpoint('h5', 'https://example.com/', headers => '{"X-A": 1}');
SELECT biteship_webhook.create_endpoint('h6', 'https://example.com/', headers => jsonb_build_object('X-A', E'a\r\nInjected: 1'));
SELECT biteship_webhook.create_endpoint('s1', 'https://example.com/', signing_secret => 'plain-secret');
SELECT biteship_webhook.create_endpoint('s2', 'https://example.com/', signing_secret => 'whsec_c2hvcnQ=');
SELECT biteship_webhook.create_endpoint('f1', 'https://example.com/', forward_events => '{order.cancelled}');
SELECT biteship_webhook.create_endpoint('f2', 'https://example.com/', environment => 'live');
SELECT biteship_webhook.create_endpoint('f3', 'https://example.com/', forward_events => '{order.status}', environment => 'prod');
SELECT biteship_webhook.create_endpoint('m1', 'https://example.com/', max_attempts => 0);
SELECT biteship_webhook.create_endpoint('t1', 'https://example.com/', timeout => '1 hour');

-- a generated secret is accepted
SELECT biteship_webhook.generate_signing_secret() ~ '^whsec_[A-Za-z0-9+/]{43}=$' AS generated_ok;
SELECT biteship_webhook.generate_signing_secret() <> biteship_webhook.generate_signing_secret() AS random;

-- send(): jsonb and text, validated
SELECT biteship_webhook.send('wa', '{"to": "+62811", "text": "Paket Anda sudah diambil kurir"}') AS m1 \gset
SELECT biteship_webhook.send('wa', 'plain text'::text, 'text/plain; charset=utf-8', '{"X-Campaign": "ops"}') AS m2 \gset
SELECT id = :m1 AS first, endpoint_id, body, content_type, headers, state, attempts, ordering_key, idempotency_key
  FROM biteship_webhook.outbox WHERE id IN (:m1, :m2) ORDER BY id;
SELECT biteship_webhook.send('nosuch', '{}');
SELECT biteship_webhook.send('wa', NULL::jsonb);
-- with literals only, more than two arguments need a cast of the body
SELECT biteship_webhook.send('wa', '{}', '{"X-A":"b"}', 'k', 'z');
SELECT biteship_webhook.send('wa', '{}'::jsonb, '{"X-A":"b"}', 'k', 'z') > 0 AS cast_resolves;
SELECT biteship_webhook.send('wa', 'x', 'not a media type');
SELECT biteship_webhook.send('wa', '{"a":1}', headers => '{"Content-Length": "5"}');
SELECT biteship_webhook.send('wa', '{"a":1}', ordering_key => '');
SELECT biteship_webhook.send('wa', '{"a":1}', idempotency_key => repeat('k', 1025));

-- idempotency: one message per (endpoint, key)
SELECT biteship_webhook.send('wa', '{"n":1}', idempotency_key => 'notify:ord-1:picked') AS k1 \gset
SELECT biteship_webhook.send('wa', '{"n":2}', idempotency_key => 'notify:ord-1:picked') = :k1 AS same_id;
SELECT biteship_webhook.send('relay', '{"n":3}', idempotency_key => 'notify:ord-1:picked') <> :k1 AS other_endpoint_other_id;
SELECT count(*) FROM biteship_webhook.outbox WHERE idempotency_key = 'notify:ord-1:picked';

-- a rolled-back send leaves nothing
BEGIN;
SELECT biteship_webhook.send('wa', '{"n":"rolled back"}') > 0 AS queued;
ROLLBACK;
SELECT count(*) AS rolled_back FROM biteship_webhook.outbox WHERE body LIKE '%rolled back%';

-- retries by hand
UPDATE biteship_webhook.outbox SET state = 'dead', attempts = 10, last_error = 'HTTP 500' WHERE id = :m1;
SELECT biteship_webhook.retry_message(:m1);
SELECT state, attempts, retry_base, next_attempt_at <= now() AS due FROM biteship_webhook.outbox WHERE id = :m1;
UPDATE biteship_webhook.outbox SET state = 'dead' WHERE endpoint_id = (SELECT id FROM biteship_webhook.endpoints WHERE name = 'wa');
SELECT biteship_webhook.retry_dead('wa') AS retried;
SELECT biteship_webhook.retry_dead('nosuch');
SELECT biteship_webhook.retry_dead() AS retried_none_left;
UPDATE biteship_webhook.outbox SET state = 'delivered', delivered_at = now() WHERE id = :m2;
SELECT biteship_webhook.retry_message(:m2);
SELECT biteship_webhook.retry_message(-1);

-- forwarding: an applied event of a forwarded kind queues one message per
-- forwarding endpoint, once, also when it is replayed
SELECT event_id AS ev FROM biteship_webhook.ingest('live',
	'{"event":"order.status","order_id":"fwd-sql-1","status":"picked","updated_at":"2025-11-08T02:00:00Z"}'::text, :'sig') \gset
SELECT biteship_webhook.replay(:ev);
SELECT e.name, o.ordering_key, o.idempotency_key = 'event:' || :ev AS idem, o.event_id = :ev AS event,
       o.body::jsonb->>'type' AS type, o.body::jsonb->'data'->'order'->>'status' AS order_status,
       o.body::jsonb->'data'->'payload'->>'order_id' AS payload_order
  FROM biteship_webhook.outbox o JOIN biteship_webhook.endpoints e ON e.id = o.endpoint_id
 WHERE o.event_id = :ev;
-- not forwarded: a kind the endpoint does not take, another environment, a failed apply
SELECT state FROM biteship_webhook.ingest('live', '{"event":"order.waybill_id","order_id":"fwd-sql-1","courier_waybill_id":"W1"}'::text, :'sig');
SELECT state FROM biteship_webhook.ingest('test', '{"event":"order.status","order_id":"fwd-sql-2","status":"picked"}'::text);
SELECT state FROM biteship_webhook.ingest('live', '{"event":"order.status","status":"picked"}'::text, :'sig');
SELECT count(*) AS forwards FROM biteship_webhook.outbox WHERE event_id IS NOT NULL;

-- disabling and enabling
SELECT biteship_webhook.set_endpoint_enabled('wa', false);
SELECT enabled, disabled_reason LIKE 'disabled by %' AS reason FROM biteship_webhook.endpoints WHERE name = 'wa';
SELECT biteship_webhook.set_endpoint_enabled('wa', true);
SELECT enabled, disabled_reason IS NULL AS no_reason FROM biteship_webhook.endpoints WHERE name = 'wa';

-- secret rotation keeps the old one for keep_old
SELECT biteship_webhook.set_endpoint_secret('relay', 'whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD');
SELECT signing_secret LIKE 'whsec_C2FV%' AS new_secret, previous_signing_secret LIKE 'whsec_MfKQ%' AS old_kept,
       previous_secret_expires_at BETWEEN now() + interval '23 hours' AND now() + interval '25 hours' AS for_a_day
  FROM biteship_webhook.endpoints WHERE name = 'relay';
SELECT biteship_webhook.set_endpoint_secret('relay', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', keep_old => '0');
SELECT previous_signing_secret IS NULL AS no_old FROM biteship_webhook.endpoints WHERE name = 'relay';
SELECT biteship_webhook.set_endpoint_secret('relay', 'not-a-secret');

-- purging
UPDATE biteship_webhook.outbox SET created_at = now() - interval '30 days';
INSERT INTO biteship_webhook.outbox_attempts (message_id, attempt, started_at, status)
	SELECT id, 1, now(), 200 FROM biteship_webhook.outbox WHERE state = 'delivered';
SELECT state, count(*) FROM biteship_webhook.outbox GROUP BY 1 ORDER BY 1;
SELECT biteship_webhook.purge_outbox('7 days') AS purged;
SELECT state, count(*) FROM biteship_webhook.outbox GROUP BY 1 ORDER BY 1;
SELECT count(*) AS orphan_attempts FROM biteship_webhook.outbox_attempts;

-- dropping an endpoint cancels what it has pending
SELECT biteship_webhook.drop_endpoint('relay');
SELECT state, last_error, count(*) FROM biteship_webhook.outbox
 WHERE endpoint_id = :relay_id GROUP BY 1, 2 ORDER BY 1;
SELECT biteship_webhook.drop_endpoint('relay');

-- An application role with the documented grants: it can queue and read
-- the outbox, and nothing else; send() runs as biteship_webhook_outbox,
-- which is no superuser.
CREATE ROLE shop_app;
GRANT USAGE ON SCHEMA biteship_webhook TO shop_app;
GRANT EXECUTE ON FUNCTION biteship_webhook.send(text, jsonb, jsonb, text, text),
	biteship_webhook.send(text, text, text, jsonb, text, text) TO shop_app;
GRANT SELECT ON biteship_webhook.outbox, biteship_webhook.outbox_attempts TO shop_app;
SET ROLE shop_app;
SELECT biteship_webhook.send('wa', '{"from": "app"}') > 0 AS app_can_send;
SELECT count(*) > 0 AS app_reads_outbox FROM biteship_webhook.outbox;
SELECT count(*) >= 0 AS app_reads_attempts FROM biteship_webhook.outbox_attempts;
SELECT headers FROM biteship_webhook.endpoints;
SELECT name FROM biteship_webhook.endpoints;
INSERT INTO biteship_webhook.outbox (endpoint_id, body) VALUES (1, 'direct');
UPDATE biteship_webhook.outbox SET state = 'delivered';
SELECT biteship_webhook.create_endpoint('mine', 'http://127.0.0.1:1/');
SELECT biteship_webhook.retry_dead();
SELECT biteship_webhook.purge_outbox('0');
RESET ROLE;
SELECT rolsuper, rolcanlogin FROM pg_roles WHERE rolname = 'biteship_webhook_outbox';
SELECT p.proname, pg_get_userbyid(p.proowner) AS owner, p.prosecdef
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'biteship_webhook' AND p.prosecdef ORDER BY 1, 2;
DROP OWNED BY shop_app;
DROP ROLE shop_app;
