--
-- The upgrade chain: install the first version, put data in, update to
-- the current one, check that the data survived and the new features work
-- on it; then compare the catalog of the upgraded extension with that of
-- a fresh install: they must be the same.
--
SET timezone = 'UTC';
\set sig '{"X-Biteship-Signature": "up-secret"}'
DROP EXTENSION biteship_webhook CASCADE;

CREATE EXTENSION biteship_webhook VERSION '0.1.0';
SELECT extversion FROM pg_extension WHERE extname = 'biteship_webhook';
SELECT biteship_webhook.create_webhook('up', '/biteship/up',
	signature_key => 'X-Biteship-Signature', signature_secret => 'up-secret');
\set delivered `cat test/data/order_status_delivered.json`
\set picking_up `cat test/data/order_status_picking_up.json`
\set waybill `cat test/data/order_waybill_id_docs_example.json`
\set price `cat test/data/order_price_docs_example.json`
SELECT state FROM biteship_webhook.ingest('up', :'picking_up'::text, :'sig');
SELECT state FROM biteship_webhook.ingest('up', :'delivered'::text, :'sig');
SELECT state FROM biteship_webhook.ingest('up', :'waybill'::text, :'sig');
SELECT state FROM biteship_webhook.ingest('up', :'price'::text, :'sig');
SELECT state FROM biteship_webhook.ingest('up', '{"event":"order.status","status":"picked"}'::text, :'sig');
-- The library is already the new one while the extension is still 0.1.0:
-- the apply role does not exist yet, so events are kept, failed, and
-- applied once the update has run.
SELECT state, last_error IS NOT NULL AS has_error FROM biteship_webhook.events ORDER BY id LIMIT 1;
CREATE TEMP TABLE before_update AS
	SELECT (SELECT count(*) FROM biteship_webhook.events) AS events,
	       (SELECT count(*) FROM biteship_webhook.orders) AS orders,
	       (SELECT count(*) FROM biteship_webhook.order_status_history) AS history,
	       (SELECT max(id) FROM biteship_webhook.events) AS max_event;

ALTER EXTENSION biteship_webhook UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'biteship_webhook';

-- the data survived
SELECT b.events = (SELECT count(*) FROM biteship_webhook.events) AS events_kept,
       b.orders = (SELECT count(*) FROM biteship_webhook.orders) AS orders_kept,
       b.history = (SELECT count(*) FROM biteship_webhook.order_status_history) AS history_kept
  FROM before_update b;

-- and the new features work on it: the failed events replay as the apply
-- role, a forwarding endpoint gets the next event, ids go on
SELECT biteship_webhook.replay_failed();
SELECT order_id, status, courier_waybill_id, price FROM biteship_webhook.orders ORDER BY 1;
SELECT biteship_webhook.create_endpoint('relay', 'http://127.0.0.1:9/hook',
	forward_events => '{order.status}') > 0 AS endpoint_created;
SELECT r.state, r.event_id > b.max_event AS ids_go_on
  FROM biteship_webhook.ingest('up', '{"event":"order.status","order_id":"after-up","status":"picked"}'::text, :'sig') r,
       before_update b;
SELECT count(*) AS forwarded FROM biteship_webhook.outbox WHERE ordering_key = 'live:after-up';
SELECT biteship_webhook.send('relay', '{"hello": "upgraded"}') > 0 AS sent;
SELECT rolname FROM pg_roles WHERE rolname IN ('biteship_webhook_apply', 'biteship_webhook_outbox', 'biteship_webhook_sync') ORDER BY 1;
SELECT count(*) AS order_syncs FROM biteship_webhook.order_syncs;
-- the dedup key of 0.4.0 still finds what was logged before the update,
-- with an order id and without one
SELECT state, event_id = (SELECT min(id) FROM biteship_webhook.events WHERE order_id IS NOT NULL) AS original
  FROM biteship_webhook.ingest('up', :'picking_up'::text, :'sig');
SELECT state FROM biteship_webhook.ingest('up', '{"event":"order.status","status":"picked"}'::text, :'sig');

-- The catalog of the extension, by name: relations, columns, defaults,
-- indexes, constraints, triggers, functions and their attributes, views,
-- sequences, comments, privileges, pg_dump configuration.
CREATE FUNCTION pg_temp.bw_catalog() RETURNS TABLE (kind text, item text)
LANGUAGE sql AS $$
	SELECT 'relation', concat_ws(' ', c.relname, c.relkind, c.relacl, c.reloptions,
	                             obj_description(c.oid, 'pg_class'))
	  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	 WHERE n.nspname = 'biteship_webhook'
	UNION ALL
	SELECT 'column', concat_ws(' ', c.relname, a.attname, a.attnum, format_type(a.atttypid, a.atttypmod),
	                           a.attnotnull, a.attidentity, pg_get_expr(d.adbin, d.adrelid), a.attacl)
	  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
	  JOIN pg_namespace n ON n.oid = c.relnamespace
	  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
	 WHERE n.nspname = 'biteship_webhook' AND a.attnum > 0 AND NOT a.attisdropped
	UNION ALL
	SELECT 'index', pg_get_indexdef(i.indexrelid)
	  FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
	 WHERE n.nspname = 'biteship_webhook'
	UNION ALL
	SELECT 'constraint', concat_ws(' ', c.relname, k.conname, pg_get_constraintdef(k.oid))
	  FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
	 WHERE n.nspname = 'biteship_webhook'
	UNION ALL
	SELECT 'trigger', pg_get_triggerdef(t.oid)
	  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
	 WHERE n.nspname = 'biteship_webhook' AND NOT t.tgisinternal
	UNION ALL
	SELECT 'function', concat_ws(' ', p.oid::regprocedure, pg_get_userbyid(p.proowner), p.prosecdef,
	                             p.provolatile, p.proisstrict, p.prorows, p.proconfig, p.proacl,
	                             pg_get_function_result(p.oid), pg_get_function_arguments(p.oid),
	                             md5(p.prosrc))
	  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
	 WHERE n.nspname = 'biteship_webhook'
	UNION ALL
	SELECT 'view', concat_ws(' ', c.relname, md5(pg_get_viewdef(c.oid)))
	  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	 WHERE n.nspname = 'biteship_webhook' AND c.relkind = 'v'
	UNION ALL
	SELECT 'sequence', concat_ws(' ', c.relname, format_type(s.seqtypid, NULL), s.seqincrement, s.seqcycle)
	  FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
	 WHERE n.nspname = 'biteship_webhook'
	UNION ALL
	SELECT 'schema', concat_ws(' ', n.nspname, n.nspacl, obj_description(n.oid, 'pg_namespace'))
	  FROM pg_namespace n WHERE n.nspname = 'biteship_webhook'
	UNION ALL
	SELECT 'dump', concat_ws(' ', (SELECT string_agg(x::regclass::text, ',' ORDER BY x::regclass::text)
	                                 FROM unnest(e.extconfig) x), e.extcondition)
	  FROM pg_extension e WHERE e.extname = 'biteship_webhook'
	UNION ALL
	SELECT 'member', pg_describe_object(d.classid, d.objid, d.objsubid)
	  FROM pg_depend d JOIN pg_extension e ON d.refobjid = e.oid AND d.refclassid = 'pg_extension'::regclass
	 WHERE e.extname = 'biteship_webhook' AND d.deptype = 'e'
$$;
CREATE TEMP TABLE upgraded AS SELECT * FROM pg_temp.bw_catalog();
SELECT count(*) > 100 AS catalog_read FROM upgraded;

DROP EXTENSION biteship_webhook CASCADE;
CREATE EXTENSION biteship_webhook;
SELECT extversion FROM pg_extension WHERE extname = 'biteship_webhook';
CREATE TEMP TABLE fresh AS SELECT * FROM pg_temp.bw_catalog();

-- identical: nothing in one and not the other
(SELECT 'only after the upgrade' AS where_, * FROM upgraded EXCEPT ALL SELECT 'only after the upgrade', * FROM fresh)
UNION ALL
(SELECT 'only in a fresh install', * FROM fresh EXCEPT ALL SELECT 'only in a fresh install', * FROM upgraded)
ORDER BY 1, 2, 3;

-- The library on a 0.3.0 schema, before ALTER EXTENSION UPDATE: the old
-- dedup index still deduplicates, and the update carries it over.
DROP EXTENSION biteship_webhook CASCADE;
CREATE EXTENSION biteship_webhook VERSION '0.3.0';
SELECT biteship_webhook.create_webhook('up', '/biteship/up',
	signature_key => 'X-Biteship-Signature', signature_secret => 'up-secret');
SELECT state FROM biteship_webhook.ingest('up', :'picking_up'::text, :'sig');
SELECT state FROM biteship_webhook.ingest('up', :'picking_up'::text, :'sig');
SELECT state FROM biteship_webhook.ingest('up', '{"event":"order.status","status":"picked"}'::text, :'sig');
SELECT state FROM biteship_webhook.ingest('up', '{"event":"order.status","status":"picked"}'::text, :'sig');
ALTER EXTENSION biteship_webhook UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'biteship_webhook';
SELECT state FROM biteship_webhook.ingest('up', :'picking_up'::text, :'sig');
SELECT state FROM biteship_webhook.ingest('up', :'delivered'::text, :'sig');
SELECT order_id, delivery_count FROM biteship_webhook.events ORDER BY id;
