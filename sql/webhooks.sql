--
-- Registering webhooks and rotating their secrets.
--
SET client_min_messages = warning;
SET timezone = 'UTC';

SELECT biteship_webhook.create_webhook('live', '/biteship/live',
	signature_key => 'X-Biteship-Signature',
	signature_secret => 'live-secret-1',
	description => 'production webhook');
SELECT biteship_webhook.create_webhook('test', '/biteship/test', 'test');
SELECT biteship_webhook.create_webhook('status-only', '/biteship/status',
	events => '{order.status}');

SELECT id, name, path, environment, events, signature_key, description
  FROM biteship_webhook.webhooks ORDER BY id;

-- the secret is stored only as its SHA-256 digest
SELECT w.name, s.id, s.secret_sha256 = sha256('live-secret-1'::bytea) AS digest_matches,
       s.expires_at
  FROM biteship_webhook.webhook_secrets s JOIN biteship_webhook.webhooks w ON w.id = s.webhook_id;
SELECT count(*) AS plaintext_copies
  FROM biteship_webhook.webhook_secrets s
 WHERE position('live-secret-1'::bytea IN s.secret_sha256) > 0;

-- argument errors
SELECT biteship_webhook.create_webhook('live', '/other');
SELECT biteship_webhook.create_webhook('other', '/biteship/live');
SELECT biteship_webhook.create_webhook('other', 'biteship/other');
SELECT biteship_webhook.create_webhook('other', '/biteship/other?x=1');
SELECT biteship_webhook.create_webhook('other', '/healthz');
SELECT biteship_webhook.create_webhook('other', '/biteship/other', 'staging');
SELECT biteship_webhook.create_webhook('other', '/biteship/other', events => '{order.created}');
SELECT biteship_webhook.create_webhook('other', '/biteship/other', events => '{}');
SELECT biteship_webhook.create_webhook('other', '/biteship/other', events => NULL);
SELECT biteship_webhook.create_webhook('other', '/biteship/other', signature_key => 'X-Key');
SELECT biteship_webhook.create_webhook('other', '/biteship/other', signature_secret => 'abc');
SELECT biteship_webhook.create_webhook('other', '/biteship/other', signature_key => 'bad header', signature_secret => 'abc');
SELECT biteship_webhook.create_webhook('other', '/biteship/other', signature_key => 'X-Key', signature_secret => '');
SELECT biteship_webhook.create_webhook(NULL, '/biteship/other');
SELECT biteship_webhook.create_webhook('bad name!', '/biteship/other');

-- rotation: a second secret, one that expires, and removal
SELECT biteship_webhook.add_webhook_secret('live', 'live-secret-2');
SELECT biteship_webhook.add_webhook_secret('live', 'old-secret', now() - interval '1 day');
SELECT biteship_webhook.add_webhook_secret('test', 'whatever');
SELECT biteship_webhook.add_webhook_secret('nosuch', 'whatever');
SELECT biteship_webhook.add_webhook_secret('live', NULL);
SELECT id, expires_at IS NOT NULL AS expires
  FROM biteship_webhook.webhook_secrets ORDER BY id;

SELECT biteship_webhook.remove_webhook_secret('live', 3);
SELECT biteship_webhook.remove_webhook_secret('live', 3);
SELECT biteship_webhook.remove_webhook_secret('nosuch', 1);

-- removing the last valid secret warns
SELECT biteship_webhook.create_webhook('rotating', '/biteship/rotating',
	signature_key => 'X-Key', signature_secret => 'only');
SET client_min_messages = notice;
SELECT biteship_webhook.remove_webhook_secret('rotating',
	(SELECT max(id) FROM biteship_webhook.webhook_secrets));
SELECT biteship_webhook.drop_webhook('rotating');
SELECT biteship_webhook.drop_webhook('rotating');
SELECT count(*) AS orphan_secrets FROM biteship_webhook.webhook_secrets s
 WHERE NOT EXISTS (SELECT 1 FROM biteship_webhook.webhooks w WHERE w.id = s.webhook_id);
