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
#include <signal.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "access/xact.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/guc.h"
#include "utils/varlena.h"

#include "biteship_webhook.h"
#include "netaddr.h"
#include "outbound_policy.h"
#include "outbox.h"
#include "curl_engine.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/* settings; see README.md for each one */
char	   *bw_database = NULL;
char	   *bw_role = NULL;
char	   *bw_listen_addresses = NULL;
int			bw_port = 8432;
int			bw_listener_workers = 2;
int			bw_max_connections = 256;
int			bw_max_body_size = 1024 * 1024;
int			bw_max_header_size = 16 * 1024;
int			bw_request_timeout = 10000;
int			bw_keepalive_timeout = 5000;
int			bw_apply_mode = BW_APPLY_INLINE;
int			bw_max_apply_attempts = 5;
int			bw_retry_base_delay = 10000;
int			bw_event_retention = 30 * 24 * 3600;
int			bw_rejected_body_limit = 4096;
int			bw_max_batch_size = 64;
int			bw_apply_timeout = 5000;
char	   *bw_apply_role = NULL;
int			bw_unverified_log_rate = 60;
int			bw_body_memory_limit = 64 * 1024;	/* kB */
bool		bw_outbound = true;
int			bw_outbox_max_concurrency = 128;
int			bw_outbox_max_per_endpoint = 32;
char	   *bw_outbox_retry_schedule = NULL;
int			bw_outbox_max_retry_after = 3600;
int			bw_outbox_response_body_limit = 4096;
int			bw_outbox_response_headers_limit = 4096;
int			bw_outbox_retention = 7 * 24 * 3600;
char	   *bw_outbound_ca_file = NULL;
int			bw_endpoint_disable_after = 5 * 24 * 3600;
char	   *bw_api_base_url = NULL;
int			bw_api_timeout = 10000;
int			bw_reconcile_after = 6 * 3600;
int			bw_api_rate_limit = 5;
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

static volatile sig_atomic_t cancel_on_term = false;

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
 * Check hook of the address lists: each item an address or a CIDR range.
 */
static bool
check_cidr_list(char **newval, void **extra, GucSource source)
{
	BwCidrList	list;
	const char *bad;

	if (*newval == NULL || bw_cidr_parse(*newval, &list, &bad))
		return true;
	GUC_check_errdetail("\"%s\" is not an IP address or CIDR range (at most %d entries).",
						bad, BW_MAX_CIDRS);
	GUC_check_errhint("Use addresses or ranges separated by commas, e.g. '10.0.0.0/8, ::1'.");
	return false;
}

/*
 * Check hook of biteship_webhook.listen_addresses: a comma-separated list
 * of host names, IP addresses or "*".  Resolution happens when the
 * listener binds; here only what can never work is refused.
 */
static bool
check_listen_addresses(char **newval, void **extra, GucSource source)
{
	char	   *raw;
	List	   *items;
	ListCell   *l;
	bool		ok = true;

	if (*newval == NULL)
		return true;
	raw = pstrdup(*newval);
	if (!SplitGUCList(raw, ',', &items))
	{
		GUC_check_errdetail("List syntax is invalid.");
		pfree(raw);
		return false;
	}
	if (items == NIL)
	{
		GUC_check_errdetail("The list is empty.");
		GUC_check_errhint("To run no listener, set biteship_webhook.listener_workers = 0.");
		ok = false;
	}
	foreach(l, items)
	{
		const char *item = lfirst(l);

		if (strcmp(item, "*") == 0)
			continue;
		if (strlen(item) == 0 || strlen(item) > 255 ||
			strspn(item, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_:%") != strlen(item))
		{
			GUC_check_errdetail("\"%s\" is not a host name or IP address.", item);
			ok = false;
			break;
		}
	}
	list_free(items);
	pfree(raw);
	return ok;
}

/* Check hook of biteship_webhook.outbox_retry_schedule. */
static bool
check_retry_schedule(char **newval, void **extra, GucSource source)
{
	int64		delays[BW_MAX_RETRY_STEPS];
	int			n;
	const char *bad;

	if (*newval != NULL && bw_retry_schedule_parse(*newval, delays, &n, &bad))
		return true;
	GUC_check_errdetail("\"%s\" is not a delay such as 0, 500ms, 5s, 5min, 2h or 1d (at most %d, each at most a week).",
						*newval ? bad : "", BW_MAX_RETRY_STEPS);
	return false;
}

/* Check hook of biteship_webhook.apply_role: a role name, or empty. */
static bool
check_api_base_url(char **newval, void **extra, GucSource source)
{
	char		err[256];
	size_t		n = strlen(*newval);

	if (!bw_url_check(*newval, err, sizeof(err)))
	{
		GUC_check_errdetail("%s", err);
		GUC_check_errhint("Use https://api.biteship.com, or the address of a proxy or test server.");
		return false;
	}
	if (strchr(*newval, '?') != NULL || (n > 0 && (*newval)[n - 1] == '/'))
	{
		GUC_check_errdetail("The URL must not end with \"/\" or carry a query string.");
		return false;
	}
	return true;
}

static bool
check_apply_role(char **newval, void **extra, GucSource source)
{
	if (*newval == NULL || (*newval)[0] == '\0')
		return true;
	if (strlen(*newval) >= NAMEDATALEN)
	{
		GUC_check_errdetail("A role name is at most %d bytes.", NAMEDATALEN - 1);
		return false;
	}
	return true;
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
							gettext_noop("Time an idle keep-alive connection is kept open between requests."),
							gettext_noop("A new connection that sends nothing is closed after request_timeout."),
							&bw_keepalive_timeout, 5000, 0, 3600 * 1000,
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
	DefineCustomIntVariable("biteship_webhook.apply_timeout",
							gettext_noop("Longest time the workers spend applying one batch of events."),
							gettext_noop("An event whose apply (application triggers included) runs past it "
										 "is marked failed and retried; the rest of the batch is left to the "
										 "dispatcher. A shorter statement_timeout of the database or role wins. "
										 "0 leaves only statement_timeout."),
							&bw_apply_timeout, 5000, 0, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomStringVariable("biteship_webhook.apply_role",
							   gettext_noop("Role that applies events to orders and runs application triggers."),
							   gettext_noop("Application code runs as this role, in a security-restricted operation. "
											"Empty means the role applying the event (not recommended)."),
							   &bw_apply_role, "biteship_webhook_apply",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, check_apply_role, NULL, NULL);
	DefineCustomIntVariable("biteship_webhook.unverified_log_rate",
							gettext_noop("Unverified deliveries logged per minute and webhook."),
							gettext_noop("Rejected deliveries and unsigned installation checks beyond this rate "
										 "are answered as usual and counted in /metrics, but not logged. "
										 "-1 logs them all."),
							&bw_unverified_log_rate, 60, -1, 1000000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("biteship_webhook.body_memory_limit",
							gettext_noop("Request bodies one listener worker buffers at most, in total."),
							gettext_noop("A request that would take more is answered 503 with Retry-After."),
							&bw_body_memory_limit, 64 * 1024, 1024, INT_MAX / 1024,
							PGC_SIGHUP, GUC_UNIT_KB, NULL, NULL, NULL);
	DefineCustomIntVariable("biteship_webhook.outbox_max_concurrency",
							gettext_noop("Outbox requests in flight at once, in total."),
							NULL,
							&bw_outbox_max_concurrency, 128, 1, 4096,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("biteship_webhook.outbox_max_per_endpoint",
							gettext_noop("Outbox requests in flight at once to one endpoint."),
							NULL,
							&bw_outbox_max_per_endpoint, 32, 1, 4096,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("biteship_webhook.outbox_retry_schedule",
							   gettext_noop("Delays before each attempt of an outbox message, comma-separated."),
							   gettext_noop("The first is counted from queueing; past the end, the last repeats. "
											"Each delay is jittered by +-20%."),
							   &bw_outbox_retry_schedule,
							   "0, 5s, 5min, 30min, 2h, 5h, 10h, 14h, 20h, 24h",
							   PGC_SIGHUP, 0, check_retry_schedule, NULL, NULL);
	DefineCustomIntVariable("biteship_webhook.outbox_max_retry_after",
							gettext_noop("Longest Retry-After of an endpoint that the outbox honours."),
							NULL,
							&bw_outbox_max_retry_after, 3600, 1, 7 * 24 * 3600,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("biteship_webhook.outbox_response_body_limit",
							gettext_noop("Bytes of a response body kept with each outbox attempt."),
							NULL,
							&bw_outbox_response_body_limit, 4096, 0, 1024 * 1024,
							PGC_SIGHUP, GUC_UNIT_BYTE, NULL, NULL, NULL);
	DefineCustomIntVariable("biteship_webhook.outbox_response_headers_limit",
							gettext_noop("Bytes of response headers kept with each outbox attempt."),
							NULL,
							&bw_outbox_response_headers_limit, 4096, 0, 1024 * 1024,
							PGC_SIGHUP, GUC_UNIT_BYTE, NULL, NULL, NULL);
	DefineCustomIntVariable("biteship_webhook.outbox_retention",
							gettext_noop("Age after which delivered outbox messages and their attempts are purged."),
							gettext_noop("Dead messages are kept until retried or purged. 0 disables purging."),
							&bw_outbox_retention, 7 * 24 * 3600, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomStringVariable("biteship_webhook.outbound_ca_file",
							   gettext_noop("CA certificates (PEM) that outbound HTTPS peers are verified against."),
							   gettext_noop("Empty means the system's CA bundle."),
							   &bw_outbound_ca_file, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	DefineCustomIntVariable("biteship_webhook.endpoint_disable_after",
							gettext_noop("An endpoint whose every attempt fails for this long is disabled."),
							gettext_noop("0 never disables an endpoint for failing."),
							&bw_endpoint_disable_after, 5 * 24 * 3600, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomStringVariable("biteship_webhook.api_base_url",
							   gettext_noop("Base URL of Biteship's API, for reconciliation."),
							   gettext_noop("The API key is sent to this address."),
							   &bw_api_base_url, "https://api.biteship.com",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, check_api_base_url, NULL, NULL);
	DefineCustomIntVariable("biteship_webhook.api_timeout",
							gettext_noop("Longest time one request to Biteship's API may take."),
							NULL,
							&bw_api_timeout, 10000, 100, 300000,
							PGC_SUSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("biteship_webhook.reconcile_after",
							gettext_noop("An active order that has not changed for this long is fetched from Biteship's API."),
							gettext_noop("0 disables automatic reconciliation; sync_orders() still works."),
							&bw_reconcile_after, 6 * 3600, 0, 30 * 24 * 3600,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("biteship_webhook.api_rate_limit",
							gettext_noop("Requests per second to Biteship's API, per environment."),
							gettext_noop("Requests are spaced evenly; Biteship allows 5 in the sandbox and 20 in production."),
							&bw_api_rate_limit, 5, 1, 1000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("biteship_webhook.trusted_proxies",
							   gettext_noop("Addresses (CIDR, comma-separated) whose X-Forwarded-For header is trusted."),
							   NULL,
							   &bw_trusted_proxies, "",
							   PGC_SIGHUP, 0, check_cidr_list, NULL, NULL);
	DefineCustomStringVariable("biteship_webhook.metrics_allow",
							   gettext_noop("Addresses (CIDR, comma-separated) allowed to read /metrics."),
							   NULL,
							   &bw_metrics_allow, "127.0.0.0/8,::1/128",
							   PGC_SIGHUP, 0, check_cidr_list, NULL, NULL);
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
							   PGC_POSTMASTER, GUC_LIST_INPUT, check_listen_addresses, NULL, NULL);
	DefineCustomIntVariable("biteship_webhook.port",
							gettext_noop("TCP port of the HTTP listener."),
							NULL,
							&bw_port, 8432, 1, 65535,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("biteship_webhook.listener_workers",
							gettext_noop("Number of listener workers sharing the port."),
							gettext_noop("0 disables the listener."),
							&bw_listener_workers, 2, 0, 16,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("biteship_webhook.outbound",
							 gettext_noop("Run the outbound worker, which sends the outbox."),
							 NULL,
							 &bw_outbound, true,
							 PGC_POSTMASTER, 0, NULL, NULL, NULL);
}

/*
 * Session settings of the workers, applied at start and after each reload.
 *
 * search_path: pg_catalog, then pg_temp, and nothing else.  The workers
 * usually connect as a superuser; no function or operator that anyone
 * creates in another schema (public belongs to the database owner) can
 * then capture their statements, not even one that matches an expression
 * better than pg_catalog's.  Application triggers must qualify the names
 * they use, or set search_path on their function, as they must for
 * PostgreSQL's own maintenance commands.
 *
 * synchronous_commit: a 200 promises a durable event, so the workers never
 * commit asynchronously, whatever the database or role says.
 */
void
bw_worker_session_settings(void)
{
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
	if (synchronous_commit == SYNCHRONOUS_COMMIT_OFF)
		SetConfigOption("synchronous_commit", "local", PGC_SUSET, PGC_S_OVERRIDE);
}

/*
 * SIGTERM of the workers: shut down at the end of the current turn.  While
 * a batch runs (bw_worker_set_cancel_on_term), the batch is cancelled too,
 * so that a fast shutdown never waits for a slow trigger: its requests are
 * answered 503.
 */
void
bw_worker_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	ShutdownRequestPending = true;
	if (cancel_on_term)
	{
		InterruptPending = true;
		QueryCancelPending = true;
	}
	SetLatch(MyLatch);
	errno = save_errno;
}

void
bw_worker_set_cancel_on_term(bool on)
{
	cancel_on_term = on;
	if (on && ShutdownRequestPending)
	{
		InterruptPending = true;
		QueryCancelPending = true;
	}
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

	if (bw_outbound)
	{
		snprintf(worker.bgw_function_name, BGW_MAXLEN, "bw_outbound_main");
		snprintf(worker.bgw_name, BGW_MAXLEN, "biteship_webhook outbound");
		snprintf(worker.bgw_type, BGW_MAXLEN, "biteship_webhook outbound");
		worker.bgw_main_arg = Int32GetDatum(0);
		RegisterBackgroundWorker(&worker);

		snprintf(worker.bgw_function_name, BGW_MAXLEN, "bw_reconciler_main");
		snprintf(worker.bgw_name, BGW_MAXLEN, "biteship_webhook reconciler");
		snprintf(worker.bgw_type, BGW_MAXLEN, "biteship_webhook reconciler");
		worker.bgw_main_arg = Int32GetDatum(0);
		RegisterBackgroundWorker(&worker);
	}
}

/*
 * Module load callback.
 */
void
_PG_init(void)
{
	define_reloadable_settings();
	bw_outbox_init();

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
