/*-------------------------------------------------------------------------
 *
 * module.c
 *	  Module entry point of biteship_webhook: settings, shared memory and
 *	  the registration of the background workers.
 *
 * The SQL core works when the library is merely loaded on demand (so that
 * CREATE EXTENSION works before the server is configured); the listener and
 * dispatcher workers, and the settings that only take effect at server
 * start, exist only when the library is in shared_preload_libraries.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "access/xact.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "utils/guc.h"

#include "biteship_webhook.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/* settings; see README.md for each one */
char	   *bw_database = NULL;
char	   *bw_role = NULL;
char	   *bw_listen_addresses = NULL;
int			bw_port = 8432;
int			bw_listener_workers = 1;
int			bw_max_connections = 256;
int			bw_max_body_size = 1024 * 1024;
int			bw_max_header_size = 16 * 1024;
int			bw_request_timeout = 10000;
int			bw_keepalive_timeout = 60000;
int			bw_apply_mode = BW_APPLY_INLINE;
int			bw_max_apply_attempts = 5;
int			bw_retry_base_delay = 10000;
int			bw_event_retention = 30 * 24 * 3600;
int			bw_rejected_body_limit = 4096;
int			bw_max_batch_size = 64;
char	   *bw_trusted_proxies = NULL;
char	   *bw_metrics_allow = NULL;
bool		bw_ssl = false;
char	   *bw_ssl_cert_file = NULL;
char	   *bw_ssl_key_file = NULL;
char	   *bw_ssl_ca_file = NULL;
int			bw_ssl_min_protocol_version = 0;
char	   *bw_ssl_ciphers = NULL;

bool		bw_preloaded = false;

static const struct config_enum_entry apply_mode_options[] = {
	{"inline", BW_APPLY_INLINE, false},
	{"deferred", BW_APPLY_DEFERRED, false},
	{NULL, 0, false}
};

/* values match transport.h's BW_TLS_VERSION_* */
static const struct config_enum_entry ssl_protocol_options[] = {
	{"TLSv1.2", 0, false},
	{"TLSv1.3", 1, false},
	{NULL, 0, false}
};

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
bw_shmem_request_hook(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	bw_shmem_request();
}

static void
bw_shmem_startup_hook(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	bw_shmem_startup();
}

/*
 * Settings that can be defined whenever the library is loaded.
 */
static void
define_reloadable_settings(void)
{
	DefineCustomIntVariable("biteship_webhook.max_connections",
							gettext_noop("Maximum number of open HTTP connections per listener worker."),
							gettext_noop("Connections beyond this are answered 503 and closed at once."),
							&bw_max_connections, 256, 1, 65536,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("biteship_webhook.max_body_size",
							gettext_noop("Largest request body the listener accepts."),
							gettext_noop("Larger bodies are answered 413 and the connection is closed."),
							&bw_max_body_size, 1024 * 1024, 1024, 64 * 1024 * 1024,
							PGC_SIGHUP, GUC_UNIT_BYTE, NULL, NULL, NULL);
	DefineCustomIntVariable("biteship_webhook.max_header_size",
							gettext_noop("Largest request line plus headers the listener accepts."),
							gettext_noop("Larger requests are answered 431."),
							&bw_max_header_size, 16 * 1024, 1024, 1024 * 1024,
							PGC_SIGHUP, GUC_UNIT_BYTE, NULL, NULL, NULL);
	DefineCustomIntVariable("biteship_webhook.request_timeout",
							gettext_noop("Time a client has to send a whole request, and to take its answer."),
							gettext_noop("A slower client is answered 408 and disconnected."),
							&bw_request_timeout, 10000, 100, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("biteship_webhook.keepalive_timeout",
							gettext_noop("Time an idle keep-alive connection is kept open."),
							NULL,
							&bw_keepalive_timeout, 60000, 0, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomEnumVariable("biteship_webhook.apply_mode",
							 gettext_noop("When deliveries are applied to orders."),
							 gettext_noop("inline applies in the listener's transaction; deferred "
										  "answers once the event is logged and lets the dispatcher apply it."),
							 &bw_apply_mode, BW_APPLY_INLINE, apply_mode_options,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("biteship_webhook.max_apply_attempts",
							gettext_noop("How many times an event is applied before it stays failed."),
							NULL,
							&bw_max_apply_attempts, 5, 1, 1000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("biteship_webhook.retry_base_delay",
							gettext_noop("Delay before the first retry of a failed event; doubles each attempt."),
							gettext_noop("The delay is capped at one hour."),
							&bw_retry_base_delay, 10000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("biteship_webhook.event_retention",
							gettext_noop("Age after which the dispatcher purges events from the log."),
							gettext_noop("Failed and pending events are kept. 0 disables purging."),
							&bw_event_retention, 30 * 24 * 3600, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("biteship_webhook.rejected_body_limit",
							gettext_noop("Bytes of a rejected body kept in the events log."),
							gettext_noop("Bodies of rejected deliveries are truncated to this size."),
							&bw_rejected_body_limit, 4096, 0, 1024 * 1024,
							PGC_SIGHUP, GUC_UNIT_BYTE, NULL, NULL, NULL);
	DefineCustomIntVariable("biteship_webhook.max_batch_size",
							gettext_noop("Most deliveries the listener commits in one transaction."),
							NULL,
							&bw_max_batch_size, 64, 1, 1024,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("biteship_webhook.trusted_proxies",
							   gettext_noop("Addresses (CIDR, comma-separated) whose X-Forwarded-For header is trusted."),
							   NULL,
							   &bw_trusted_proxies, "",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("biteship_webhook.metrics_allow",
							   gettext_noop("Addresses (CIDR, comma-separated) allowed to read /metrics."),
							   NULL,
							   &bw_metrics_allow, "127.0.0.0/8,::1/128",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("biteship_webhook.ssl",
							 gettext_noop("Serve HTTPS instead of HTTP."),
							 NULL,
							 &bw_ssl, false,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("biteship_webhook.ssl_cert_file",
							   gettext_noop("Server certificate (PEM, full chain) for HTTPS."),
							   NULL,
							   &bw_ssl_cert_file, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	DefineCustomStringVariable("biteship_webhook.ssl_key_file",
							   gettext_noop("Private key (PEM) for HTTPS."),
							   gettext_noop("Must not be readable by group or others."),
							   &bw_ssl_key_file, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	DefineCustomStringVariable("biteship_webhook.ssl_ca_file",
							   gettext_noop("CA certificates (PEM) for verifying client certificates."),
							   gettext_noop("Empty means clients are not asked for a certificate."),
							   &bw_ssl_ca_file, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	DefineCustomEnumVariable("biteship_webhook.ssl_min_protocol_version",
							 gettext_noop("Oldest TLS version the listener accepts."),
							 NULL,
							 &bw_ssl_min_protocol_version, 0, ssl_protocol_options,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("biteship_webhook.ssl_ciphers",
							   gettext_noop("TLS 1.2 cipher list (OpenSSL syntax)."),
							   NULL,
							   &bw_ssl_ciphers, "HIGH:!aNULL:!MD5:!3DES:!RC4:!SHA1",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
}

/*
 * Settings that only take effect at server start; they can only be defined
 * while shared_preload_libraries is processed.
 */
static void
define_postmaster_settings(void)
{
	DefineCustomStringVariable("biteship_webhook.database",
							   gettext_noop("Database the listener and dispatcher connect to."),
							   NULL,
							   &bw_database, "postgres",
							   PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("biteship_webhook.role",
							   gettext_noop("Role the listener and dispatcher connect as."),
							   gettext_noop("Empty means the bootstrap superuser."),
							   &bw_role, "",
							   PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("biteship_webhook.listen_addresses",
							   gettext_noop("Addresses the HTTP listener binds, comma-separated; * for all."),
							   NULL,
							   &bw_listen_addresses, "localhost",
							   PGC_POSTMASTER, GUC_LIST_INPUT, NULL, NULL, NULL);
	DefineCustomIntVariable("biteship_webhook.port",
							gettext_noop("TCP port of the HTTP listener."),
							NULL,
							&bw_port, 8432, 1, 65535,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("biteship_webhook.listener_workers",
							gettext_noop("Number of listener workers sharing the port."),
							gettext_noop("0 disables the listener."),
							&bw_listener_workers, 1, 0, 16,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
}

/*
 * Session settings of the workers, applied at start and after each reload.
 *
 * search_path: the workers usually connect as a superuser; with pg_catalog
 * first, an operator or function that a database owner creates elsewhere
 * cannot capture the workers' statements.  public stays on the path so
 * that application triggers that name their tables unqualified still work.
 *
 * synchronous_commit: a 200 promises a durable event, so the workers never
 * commit asynchronously, whatever the database or role says.
 */
void
bw_worker_session_settings(void)
{
	SetConfigOption("search_path", "pg_catalog, public", PGC_SUSET, PGC_S_OVERRIDE);
	if (synchronous_commit == SYNCHRONOUS_COMMIT_OFF)
		SetConfigOption("synchronous_commit", "local", PGC_SUSET, PGC_S_OVERRIDE);
}

/*
 * Register the listener and dispatcher workers.
 */
static void
register_workers(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_ConsistentState;
	worker.bgw_restart_time = 1;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "biteship_webhook");

	for (int i = 0; i < bw_listener_workers; i++)
	{
		snprintf(worker.bgw_function_name, BGW_MAXLEN, "bw_listener_main");
		snprintf(worker.bgw_name, BGW_MAXLEN, "biteship_webhook listener %d", i);
		snprintf(worker.bgw_type, BGW_MAXLEN, "biteship_webhook listener");
		worker.bgw_main_arg = Int32GetDatum(i);
		RegisterBackgroundWorker(&worker);
	}

	snprintf(worker.bgw_function_name, BGW_MAXLEN, "bw_dispatcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "biteship_webhook dispatcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "biteship_webhook dispatcher");
	worker.bgw_main_arg = Int32GetDatum(0);
	RegisterBackgroundWorker(&worker);
}

/*
 * Module load callback.
 */
void
_PG_init(void)
{
	define_reloadable_settings();

	if (!process_shared_preload_libraries_in_progress)
		return;

	bw_preloaded = true;
	define_postmaster_settings();
	MarkGUCPrefixReserved("biteship_webhook");

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = bw_shmem_request_hook;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = bw_shmem_startup_hook;

	register_workers();
}
