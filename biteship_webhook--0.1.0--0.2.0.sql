/* biteship_webhook--0.1.0--0.2.0.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION biteship_webhook UPDATE TO '0.2.0'" to load this file. \quit

--
-- pg_dump keeps the position of the identity sequences, so that a restored
-- database goes on numbering events after the last one instead of failing
-- every delivery on events_pkey.
--
SELECT pg_catalog.pg_extension_config_dump('biteship_webhook.webhooks_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('biteship_webhook.webhook_secrets_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('biteship_webhook.events_id_seq', '');

--
-- The apply role.  Events are applied, and application triggers on orders
-- and order_status_history run, as this role (biteship_webhook.apply_role),
-- never as the superuser the workers connect as.  It can write shipment
-- state and nothing else.  Roles belong to the cluster: DROP EXTENSION
-- leaves it, and a second database with the extension shares it.
--
DO $$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'biteship_webhook_apply') THEN
		CREATE ROLE biteship_webhook_apply NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
		COMMENT ON ROLE biteship_webhook_apply IS
			'biteship_webhook: applies events and runs application triggers';
	END IF;
END
$$;
GRANT USAGE ON SCHEMA biteship_webhook TO biteship_webhook_apply;
GRANT SELECT, INSERT, UPDATE ON biteship_webhook.orders TO biteship_webhook_apply;
GRANT SELECT, INSERT ON biteship_webhook.order_status_history TO biteship_webhook_apply;

--
-- The listener caches the webhook paths (it keeps request bodies only for
-- them).  Any change to the webhooks table moves the configuration
-- generation at commit, and the listeners reload.
--
CREATE FUNCTION biteship_webhook.config_changed()
RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 'bw_config_changed';

CREATE TRIGGER webhooks_config_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON biteship_webhook.webhooks
	FOR EACH STATEMENT EXECUTE FUNCTION biteship_webhook.config_changed();

--
-- Application triggers on the extension's tables are not part of pg_dump's
-- output (PostgreSQL dumps only the data of an extension's tables).  This
-- view lists them with their definitions, to keep with the dump.
--
CREATE VIEW biteship_webhook.application_triggers AS
	SELECT c.relname::text AS table_name,
	       t.tgname::text AS trigger_name,
	       t.tgfoid::pg_catalog.regprocedure AS function,
	       t.tgenabled <> 'D' AS enabled,
	       pg_catalog.pg_get_triggerdef(t.oid, true) AS definition
	  FROM pg_catalog.pg_trigger t
	  JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
	  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
	 WHERE n.nspname = 'biteship_webhook'
	   AND NOT t.tgisinternal
	   AND t.tgfoid <> 'biteship_webhook.config_changed()'::pg_catalog.regprocedure;

--
-- Every function runs with a pinned search_path: no object that another
-- role creates elsewhere can capture the statements inside.
--
ALTER FUNCTION biteship_webhook.create_webhook(text, text, text, text[], text, text, text)
	SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION biteship_webhook.drop_webhook(text)
	SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION biteship_webhook.add_webhook_secret(text, text, timestamptz)
	SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION biteship_webhook.remove_webhook_secret(text, integer)
	SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION biteship_webhook.ingest(text, bytea, jsonb)
	SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION biteship_webhook.ingest(text, text, jsonb)
	SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION biteship_webhook.ingest(text, jsonb, jsonb)
	SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION biteship_webhook.replay(bigint)
	SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION biteship_webhook.replay_failed(text)
	SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION biteship_webhook.purge_events(interval, boolean)
	SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION biteship_webhook.stats()
	SET search_path = pg_catalog, pg_temp;

REVOKE ALL ON FUNCTION biteship_webhook.config_changed() FROM PUBLIC;
REVOKE ALL ON biteship_webhook.application_triggers FROM PUBLIC;
