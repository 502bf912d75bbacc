--
-- Installing, dropping and reinstalling the extension.
--
CREATE EXTENSION biteship_webhook;
SELECT extname, extversion, extrelocatable FROM pg_extension WHERE extname = 'biteship_webhook';

-- the schema belongs to the extension and goes with it
DROP EXTENSION biteship_webhook;
SELECT count(*) AS schemas_left FROM pg_namespace WHERE nspname = 'biteship_webhook';

-- it cannot be put into another schema
CREATE EXTENSION biteship_webhook SCHEMA public;

-- a leftover schema of the same name is refused rather than adopted
CREATE SCHEMA biteship_webhook;
CREATE EXTENSION biteship_webhook;
DROP SCHEMA biteship_webhook;

CREATE EXTENSION biteship_webhook;

-- extension objects
SELECT c.relname, c.relkind
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'biteship_webhook' AND c.relkind IN ('r', 'v')
 ORDER BY 1;

-- nothing is granted to PUBLIC (a NULL acl on a function would mean EXECUTE for PUBLIC)
SELECT count(*) AS public_table_grants
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
       aclexplode(c.relacl) a
 WHERE n.nspname = 'biteship_webhook' AND a.grantee = 0;
SELECT count(*) AS public_function_grants
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'biteship_webhook'
   AND (p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0));
SELECT has_schema_privilege('public', 'biteship_webhook', 'USAGE') AS public_usage;

-- no SECURITY DEFINER functions
SELECT count(*) AS security_definer
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'biteship_webhook' AND p.prosecdef;

-- without shared_preload_libraries the counters are simply empty
SELECT count(*) >= 0 AS stats_readable FROM biteship_webhook.stats;
