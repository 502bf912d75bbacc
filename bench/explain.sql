-- EXPLAIN (ANALYZE, BUFFERS) of every statement biteship_webhook.ingest()
-- runs, taken by auto_explain from inside the ingest core (nested
-- statements), so the plans are those of the extension's own prepared
-- statements and cannot drift from the code.  Everything is rolled back.
--
--   psql -v hdr='{"x-biteship-signature": "..."}' -f explain.sql 2> explain.txt
\set ON_ERROR_STOP 1
BEGIN;
LOAD 'auto_explain';
SET LOCAL auto_explain.log_min_duration = 0;
SET LOCAL auto_explain.log_analyze = on;
SET LOCAL auto_explain.log_buffers = on;
SET LOCAL auto_explain.log_timing = on;
SET LOCAL auto_explain.log_verbose = off;
SET LOCAL auto_explain.log_nested_statements = on;
SET LOCAL auto_explain.log_level = notice;
SET LOCAL client_min_messages = notice;

-- the bodies of generation 0xee: orders that exist nowhere else
CREATE TEMP TABLE explain_bodies ON COMMIT DROP AS
SELECT b.i, b.lane, b.flags, b.body::jsonb ->> 'event' AS event,
       convert_to(overlay(b.body PLACING 'ee' FROM b.gen_pos FOR 2), 'UTF8') AS body
  FROM bench.bodies b;

\echo '=== 1. order.status, first delivery of a new order'
SELECT 'new order' AS step, r.* FROM explain_bodies b,
	LATERAL biteship_webhook.ingest('bench', b.body, :'hdr'::jsonb) r
 WHERE b.i = (SELECT min(i) FROM explain_bodies WHERE flags = 'n' AND event = 'order.status');

\echo '=== 2. order.status, a later status of the same order'
SELECT 'status update' AS step, r.* FROM explain_bodies b,
	LATERAL biteship_webhook.ingest('bench', b.body, :'hdr'::jsonb) r
 WHERE b.i = (SELECT min(i) FROM explain_bodies
               WHERE flags = '-' AND event = 'order.status'
                 AND lane = (SELECT lane FROM explain_bodies WHERE flags = 'n' AND event = 'order.status' ORDER BY i LIMIT 1));

\echo '=== 3. order.waybill_id'
SELECT 'waybill' AS step, r.* FROM explain_bodies b,
	LATERAL biteship_webhook.ingest('bench', b.body, :'hdr'::jsonb) r
 WHERE b.i = (SELECT min(i) FROM explain_bodies WHERE event = 'order.waybill_id');

\echo '=== 4. order.price'
SELECT 'price' AS step, r.* FROM explain_bodies b,
	LATERAL biteship_webhook.ingest('bench', b.body, :'hdr'::jsonb) r
 WHERE b.i = (SELECT min(i) FROM explain_bodies WHERE event = 'order.price');

\echo '=== 5. exact redelivery of delivery 1'
SELECT 'redelivery' AS step, r.* FROM explain_bodies b,
	LATERAL biteship_webhook.ingest('bench', b.body, :'hdr'::jsonb) r
 WHERE b.i = (SELECT min(i) FROM explain_bodies WHERE flags = 'n' AND event = 'order.status');

\echo '=== 6. a late status (older updated_at than the stored one)'
-- first the deliveries of its order that came before it, unexplained
SET LOCAL auto_explain.log_min_duration = -1;
SELECT 'late status (its order first)' AS step, r.* FROM explain_bodies b,
	LATERAL biteship_webhook.ingest('bench', b.body, :'hdr'::jsonb) r
 WHERE b.lane = (SELECT lane FROM explain_bodies WHERE flags = 'l' ORDER BY i LIMIT 1)
   AND b.i < (SELECT min(i) FROM explain_bodies WHERE flags = 'l')
   AND b.flags <> 'd';
SET LOCAL auto_explain.log_min_duration = 0;
SELECT 'late status' AS step, r.* FROM explain_bodies b,
	LATERAL biteship_webhook.ingest('bench', b.body, :'hdr'::jsonb) r
 WHERE b.i = (SELECT min(i) FROM explain_bodies WHERE flags = 'l');

ROLLBACK;
