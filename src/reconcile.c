/*-------------------------------------------------------------------------
 *
 * reconcile.c
 *	  The reconciliation room: Biteship API keys, the pacing and backoff of
 *	  API requests shared by every process, the request itself, the record
 *	  of each order's last fetch, and the SQL functions set_api_key(),
 *	  sync_order() and sync_orders().
 *
 * Pacing is even spacing, not a bucket with bursts: every process that
 * calls the API takes the next slot of its environment from shared memory,
 * and slots are 1/api_rate_limit seconds apart (plus 3%), so that no
 * second can ever see more requests than the limit.  A 429 pauses the
 * environment for its Retry-After; server and network errors back off
 * exponentially, up to five minutes; a refused key stops the environment
 * until the key is changed (or, once an hour, a probe).
 *
 * The API key travels only in the authorization header of requests to
 * biteship_webhook.api_base_url (a superuser-only setting).  It is never
 * logged, and any copy of it in an answer is redacted before the answer
 * is stored.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/time.h>

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/spin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "reconcile.h"
#include "stats.h"

PG_FUNCTION_INFO_V1(bw_set_api_key);
PG_FUNCTION_INFO_V1(bw_sync_order);
PG_FUNCTION_INFO_V1(bw_sync_orders);

#define MAX_BACKOFF_S		300
#define KEY_PROBE_S			3600
#define MAX_RETRY_AFTER_S	3600
#define MAX_KEY_LEN			512

static const char *const env_names[BW_NENVIRONMENTS] = {"live", "test"};

/* without shared memory (not preloaded), each process paces itself */
static BwApiPace local_pace[BW_NENVIRONMENTS];

static SPIPlanPtr plan_key = NULL;
static SPIPlanPtr plan_record = NULL;

/* the engine of a backend's sync_order() calls, kept for its connections */
static BwCurlEngine *backend_engine = NULL;

int
bw_env_index(const char *environment)
{
	if (environment == NULL)
		return -1;
	for (int i = 0; i < BW_NENVIRONMENTS; i++)
	{
		if (strcmp(environment, env_names[i]) == 0)
			return i;
	}
	return -1;
}

static int64
now_unix_us(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (int64) tv.tv_sec * 1000000 + tv.tv_usec;
}

static BwApiPace *
pace_lock(int env)
{
	if (bw_shared == NULL)
		return &local_pace[env];
	SpinLockAcquire(&bw_shared->api_mutex);
	return &bw_shared->api[env];
}

static void
pace_unlock(void)
{
	if (bw_shared != NULL)
		SpinLockRelease(&bw_shared->api_mutex);
}

bool
bw_api_try_slot(int env, long *wait_ms)
{
	TimestampTz now = GetCurrentTimestamp();
	int64		now_us = now_unix_us();
	int64		interval = bw_api_pace_interval(bw_api_rate_limit);
	BwApiPace  *p = pace_lock(env);
	bool		ok = false;

	*wait_ms = 0;
	if (p->paused_until > now)
		*wait_ms = (long) ((p->paused_until - now + 999) / 1000);
	else if (p->next_slot > now_us)
		*wait_ms = (long) ((p->next_slot - now_us + 999) / 1000);
	else
	{
		(void) bw_api_pace_take(&p->next_slot, now_us, interval);
		ok = true;
	}
	pace_unlock();
	return ok;
}

TimestampTz
bw_api_paused_until(int env)
{
	BwApiPace  *p = pace_lock(env);
	TimestampTz t = p->paused_until;

	pace_unlock();
	return t;
}

bool
bw_api_key_usable(int env, TimestampTz key_version)
{
	BwApiPace  *p = pace_lock(env);
	bool		usable;

	usable = p->key_refused_at == 0 || p->key_refused_version != key_version ||
		GetCurrentTimestamp() - p->key_refused_at > (int64) KEY_PROBE_S * USECS_PER_SEC;
	pace_unlock();
	return usable;
}

void
bw_api_note_result(int env, BwApiResult r, const char *retry_after,
				   TimestampTz key_version)
{
	TimestampTz now = GetCurrentTimestamp();
	BwApiPace  *p;
	int64		pause_s = 0;

	if (r == BW_API_RATE_LIMITED)
	{
		int64		secs = 0;

		if (retry_after == NULL || retry_after[0] == '\0' ||
			!bw_parse_retry_after(retry_after, (int64) time(NULL), &secs))
			secs = 0;
		pause_s = Max(secs, 1);
		pause_s = Min(pause_s, MAX_RETRY_AFTER_S);
	}

	p = pace_lock(env);
	switch (r)
	{
		case BW_API_RATE_LIMITED:
			p->backoff++;
			p->paused_until = TimestampTzPlusMilliseconds(now, pause_s * 1000);
			break;
		case BW_API_SERVER_ERROR:
		case BW_API_NETWORK_ERROR:
		case BW_API_BAD_ANSWER:
			p->backoff = Min(p->backoff + 1, 16);
			p->paused_until = TimestampTzPlusMilliseconds(now,
														  (int64) Min(1L << (p->backoff - 1), MAX_BACKOFF_S) * 1000);
			break;
		case BW_API_KEY_REFUSED:
		case BW_API_NO_KEY:
			/* this key: a new one is tried at once */
			p->key_refused_at = now;
			p->key_refused_version = key_version;
			break;
		case BW_API_OK:
			if (p->key_refused_version == key_version)
				p->key_refused_at = 0;
			p->backoff = 0;
			break;
		default:
			p->backoff = 0;
			break;
	}
	pace_unlock();

	if (bw_shared != NULL && r >= 0 && r < BW_API_NRESULTS)
		pg_atomic_fetch_add_u64(&bw_shared->api_requests[env][r], 1);
}

void
bw_api_count_reconciled(int env, int outcome)
{
	if (bw_shared != NULL && env >= 0 && outcome >= 0 && outcome < BW_NRECONCILE_OUTCOMES)
		pg_atomic_fetch_add_u64(&bw_shared->reconciled[env][outcome], 1);
}

/* ---------------------------------------------------------------- keys */

static void
prepare_plans(void)
{
	if (plan_record != NULL)
		return;
	{
		Oid			types[1] = {TEXTOID};
		SPIPlanPtr	p = SPI_prepare("SELECT api_key, updated_at FROM biteship_webhook.api_keys "
									" WHERE environment = $1", 1, types);

		if (p == NULL || SPI_keepplan(p) != 0)
			elog(ERROR, "could not prepare the API key statement");
		plan_key = p;
	}
	{
		Oid			types[12] = {TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID, INT4OID,
			TIMESTAMPTZOID, TEXTOID, INT2OID, INT8OID, TEXTOID, INT8OID, BOOLOID};
		SPIPlanPtr	p = SPI_prepare(
									"INSERT INTO biteship_webhook.order_syncs AS s "
									" (environment, order_id, reason, queued_at, next_sync_at, attempts, "
									"  last_sync_at, last_result, last_http_status, last_api_code, "
									"  last_error, last_event_id, healed_at) "
									"VALUES ($1, $2, $3, CASE WHEN $4 IS NOT NULL THEN pg_catalog.now() END, "
									"        $4, $5, $6, $7, $8, $9, $10, $11, CASE WHEN $12 THEN $6 END) "
									"ON CONFLICT (environment, order_id) DO UPDATE SET "
									"  reason = EXCLUDED.reason, "
									"  queued_at = CASE WHEN EXCLUDED.next_sync_at IS NULL THEN NULL "
									"                   ELSE COALESCE(s.queued_at, EXCLUDED.queued_at) END, "
									"  next_sync_at = EXCLUDED.next_sync_at, "
									"  attempts = EXCLUDED.attempts, "
									"  last_sync_at = EXCLUDED.last_sync_at, "
									"  last_result = EXCLUDED.last_result, "
									"  last_http_status = EXCLUDED.last_http_status, "
									"  last_api_code = EXCLUDED.last_api_code, "
									"  last_error = EXCLUDED.last_error, "
									"  last_event_id = COALESCE(EXCLUDED.last_event_id, s.last_event_id), "
									"  healed_at = COALESCE(EXCLUDED.healed_at, s.healed_at)",
									12, types);

		if (p == NULL || SPI_keepplan(p) != 0)
			elog(ERROR, "could not prepare the order_syncs statement");
		plan_record = p;
	}
}

char *
bw_api_key_load(const char *environment, TimestampTz *updated_at)
{
	MemoryContext callercxt = CurrentMemoryContext;
	Datum		arg = CStringGetTextDatum(environment);
	char	   *key = NULL;
	int			ret;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	prepare_plans();
	ret = SPI_execute_plan(plan_key, &arg, NULL, true, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read the API key: %s", SPI_result_code_string(ret));
	if (SPI_processed == 1)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
			key = MemoryContextStrdup(callercxt, TextDatumGetCString(d));
		if (updated_at != NULL)
			*updated_at = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0],
															SPI_tuptable->tupdesc, 2, &isnull));
	}
	SPI_finish();
	return key;
}

/* ------------------------------------------------------------ requests */

BwApiRequest *
bw_api_request_new(MemoryContext parent, const char *environment, const char *order_id,
				   const char *key, TimestampTz key_version, const char *reason,
				   int attempts)
{
	MemoryContext cxt = AllocSetContextCreate(parent, "biteship_webhook API request",
											  ALLOCSET_SMALL_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	BwApiRequest *r = palloc0(sizeof(BwApiRequest));

	r->cxt = cxt;
	r->environment = pstrdup(environment);
	r->order_id = pstrdup(order_id);
	r->key = pstrdup(key);
	r->key_version = key_version;
	r->reason = pstrdup(reason);
	r->attempts = attempts;
	r->headers[0] = psprintf("Authorization: %s", key);
	r->headers[1] = "Accept: application/json";
	r->call.method = "GET";
	r->call.url = psprintf("%s/v1/orders/%s", bw_api_base_url, order_id);
	r->call.headers = r->headers;
	r->call.nheaders = 2;
	r->call.timeout_ms = bw_api_timeout;
	r->call.connect_timeout_ms = Min(bw_api_timeout, 10000);
	r->call.max_response_headers = 8192;
	r->call.max_response_body = BW_API_MAX_BODY;
	r->call.user = r;
	r->started_at = GetCurrentTimestamp();
	MemoryContextSwitchTo(old);
	return r;
}

void
bw_api_request_free(BwApiRequest *req)
{
	bw_http_call_release(&req->call);
	MemoryContextDelete(req->cxt);
}

/* The body with every copy of the key replaced (palloc'd). */
static char *
redact(const char *body, size_t len, const char *key, size_t *outlen)
{
	const char *secrets[1] = {key};
	char	   *r = bw_redact(body, len, secrets, 1, outlen);
	char	   *copy;

	if (r == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	copy = palloc(*outlen + 1);
	memcpy(copy, r, *outlen + 1);
	free(r);
	return copy;
}

static void
record(const char *environment, const char *order_id, const char *reason,
	   TimestampTz next_sync_at, int attempts, BwApiResult r, long http_status,
	   const BwApiAnswer *a, const char *error)
{
	Datum		values[12];
	char		nulls[12];
	int			ret;

	memset(nulls, ' ', sizeof(nulls));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	prepare_plans();
	values[0] = CStringGetTextDatum(environment);
	values[1] = CStringGetTextDatum(order_id);
	if (next_sync_at != 0 && reason != NULL)
	{
		values[2] = CStringGetTextDatum(reason);
		values[3] = TimestampTzGetDatum(next_sync_at);
	}
	else
		nulls[2] = nulls[3] = 'n';
	values[4] = Int32GetDatum(attempts);
	values[5] = TimestampTzGetDatum(GetCurrentTimestamp());
	values[6] = CStringGetTextDatum(bw_api_result_name(r));
	if (http_status > 0)
		values[7] = Int16GetDatum((int16) Min(http_status, 999));
	else
		nulls[7] = 'n';
	if (a != NULL && a->have_code)
		values[8] = Int64GetDatum(a->code);
	else
		nulls[8] = 'n';
	if (error != NULL)
		values[9] = CStringGetTextDatum(error);
	else
		nulls[9] = 'n';
	if (a != NULL && a->event_id > 0)
		values[10] = Int64GetDatum(a->event_id);
	else
		nulls[10] = 'n';
	values[11] = BoolGetDatum(a != NULL && a->changed);
	ret = SPI_execute_plan(plan_record, values, nulls, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "could not record a sync: %s", SPI_result_code_string(ret));
	SPI_finish();
}

void
bw_api_record_skip(const char *environment, const char *order_id, BwApiResult why)
{
	record(environment, order_id, NULL, 0, 0, why, 0, NULL,
		   why == BW_API_NO_KEY ?
		   "skipped: the environment has no API key (set one with biteship_webhook.set_api_key())" :
		   "skipped: Biteship refused the environment's API key");
	bw_api_count_reconciled(bw_env_index(environment), BW_RECONCILED_SKIPPED);
}

BwApiResult
bw_api_finish(BwApiRequest *req, BwApiAnswer *a, bool *have_answer)
{
	BwHttpCall *c = &req->call;
	int			env = bw_env_index(req->environment);
	BwApiResult r;
	char	   *error = NULL;
	TimestampTz next = 0;
	int			attempts = 0;

	*have_answer = false;
	memset(a, 0, sizeof(*a));
	if (c->terr != BW_TRANSPORT_OK || c->status == 0)
	{
		r = BW_API_NETWORK_ERROR;
		error = psprintf("could not reach Biteship's API: %s",
						 c->error[0] != '\0' ? c->error : "no answer");
	}
	else
	{
		size_t		len;
		char	   *body = redact(c->resp_body != NULL ? c->resp_body : "",
								  c->resp_body != NULL ? c->resp_body_len : 0,
								  req->key, &len);

		a->environment = req->environment;
		a->order_id = req->order_id;
		a->http_status = c->status;
		a->body = body;
		a->body_len = len;
		a->body_truncated = c->resp_body_truncated;
		a->fetched_at = req->started_at;
		bw_ingest_api_answer(a);
		*have_answer = true;
		r = a->result;
		error = a->error;
		if (r == BW_API_OK && strcmp(a->state, "failed") == 0)
			error = psprintf("fetched, but could not apply: %s", a->error);
	}
	bw_api_note_result(env, r, c->retry_after, req->key_version);

	/* what next for this order */
	switch (r)
	{
		case BW_API_RATE_LIMITED:
		case BW_API_SERVER_ERROR:
		case BW_API_NETWORK_ERROR:
		case BW_API_BAD_ANSWER:
			attempts = req->attempts + 1;
			if (r == BW_API_RATE_LIMITED)
			{
				/* exactly when Biteship said, however often */
				next = Max(bw_api_paused_until(env),
						   TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 1000));
				attempts = req->attempts;
			}
			else if (attempts < 10)
			{
				TimestampTz paused = bw_api_paused_until(env);
				int64		secs = Min((int64) 10 << Min(attempts - 1, 9), 3600);

				next = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), secs * 1000);
				if (paused > next)
					next = paused;
			}
			break;
		case BW_API_KEY_REFUSED:
		case BW_API_NO_KEY:
			/* the key's fault, not the order's: it stays queued */
			next = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), (int64) KEY_PROBE_S * 1000);
			attempts = req->attempts;
			break;
		default:
			break;
	}
	if (attempts >= 10 && next == 0)
		error = psprintf("%s (gave up after %d attempts in a row)",
						 error != NULL ? error : bw_api_result_name(r), attempts);
	record(req->environment, req->order_id,
		   next == 0 ? NULL : (bw_api_result_refuses_key(r) ? req->reason : "retry"),
		   next, attempts, r, c->status, *have_answer ? a : NULL, error);

	if (r == BW_API_OK && *have_answer)
	{
		if (a->created)
			bw_api_count_reconciled(env, BW_RECONCILED_BACKFILLED);
		else if (a->changed)
			bw_api_count_reconciled(env, BW_RECONCILED_HEALED);
		else
			bw_api_count_reconciled(env, BW_RECONCILED_UNCHANGED);
	}
	else if (bw_api_result_refuses_order(r) || bw_api_result_refuses_key(r))
		bw_api_count_reconciled(env, BW_RECONCILED_REFUSED);
	return r;
}

/* -------------------------------------------------------- SQL functions */

static int
env_arg(FunctionCallInfo fcinfo, int argno, char **name)
{
	char	   *env;
	int			i;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("environment must not be null")));
	env = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	i = bw_env_index(env);
	if (i < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("environment must be 'live' or 'test'"),
				 errdetail("The environment given was \"%s\".", env)));
	*name = env;
	return i;
}

static void
check_order_id(const char *id)
{
	if (!bw_api_order_id_ok(id))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid Biteship order id \"%s\"", id),
				 errdetail("An order id has 1 to %d letters, digits, \"-\" or \"_\".",
						   BW_API_ORDER_ID_MAXLEN),
				 errhint("Use Biteship's order id (24 hex digits), not the merchant's reference_id.")));
}

/*
 * set_api_key(environment, api_key): store the key, or remove it (NULL).
 */
Datum
bw_set_api_key(PG_FUNCTION_ARGS)
{
	char	   *environment;
	int			env = env_arg(fcinfo, 0, &environment);
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		values[2];
	int			ret;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	values[0] = CStringGetTextDatum(environment);
	if (PG_ARGISNULL(1))
	{
		ret = SPI_execute_with_args("DELETE FROM biteship_webhook.api_keys WHERE environment = $1",
									1, types, values, NULL, false, 0);
		if (ret != SPI_OK_DELETE)
			elog(ERROR, "could not remove the API key");
	}
	else
	{
		char	   *key = text_to_cstring(PG_GETARG_TEXT_PP(1));
		size_t		n = strlen(key);

		/* never echo the key in a message */
		if (n < 8 || n > MAX_KEY_LEN)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("an API key has 8 to %d characters", MAX_KEY_LEN)));
		for (size_t i = 0; i < n; i++)
		{
			unsigned char c = (unsigned char) key[i];

			if (c <= 0x20 || c >= 0x7f)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("an API key must be printable ASCII without spaces"),
						 errhint("Copy the key from Biteship's dashboard (Settings, API Keys) as it is.")));
		}
		if (!bw_api_key_prefix_matches(environment, key))
			ereport(WARNING,
					(errmsg("the API key does not look like a %s key", environment),
					 errdetail("Biteship's %s keys start with \"biteship_%s.\"; the key decides the mode, whatever the environment it is stored for.",
							   environment, environment),
					 errhint("Check that the key was copied from the right mode of the dashboard.")));
		values[1] = CStringGetTextDatum(key);
		ret = SPI_execute_with_args("INSERT INTO biteship_webhook.api_keys (environment, api_key) "
									"VALUES ($1, $2) ON CONFLICT (environment) DO UPDATE SET "
									"api_key = EXCLUDED.api_key, updated_at = pg_catalog.now()",
									2, types, values, NULL, false, 0);
		if (ret != SPI_OK_INSERT)
			elog(ERROR, "could not store the API key");
	}
	SPI_finish();

	/* a new key is tried at once (it has a new updated_at) */
	(void) env;
	bw_wake_at_commit(BW_LATCH_RECONCILER);
	PG_RETURN_VOID();
}

static void
free_backend_engine(int code, Datum arg)
{
	if (backend_engine != NULL)
		bw_curl_engine_free(backend_engine);
	backend_engine = NULL;
}

/*
 * Make one request from a backend, waiting on the latch and the engine's
 * sockets: a cancel or terminate interrupts it, and the request's own
 * timeout (api_timeout) bounds it.
 */
static void
fetch_blocking(BwApiRequest *req)
{
	WaitEventSet *volatile wes = NULL;
	BwHttpCall *call = &req->call;

	if (backend_engine == NULL)
	{
		BwCurlEngineOptions opts;
		char		err[256];

		memset(&opts, 0, sizeof(opts));
		opts.max_total_connections = 4;
		opts.max_host_connections = 2;
		opts.ca_file = bw_outbound_ca_file;
		opts.user_agent = "biteship_webhook/" BW_VERSION;
		backend_engine = bw_curl_engine_new(&opts, err, sizeof(err));
		if (backend_engine == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not start the HTTP engine: %s", err)));
		on_proc_exit(free_backend_engine, (Datum) 0);
	}
	if (!bw_curl_engine_start(backend_engine, call))
		return;					/* done, with the error */

	PG_TRY();
	{
		wes = BW_CREATE_WAIT_EVENT_SET(3);
		AddWaitEventToSet(wes, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
		AddWaitEventToSet(wes, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
		AddWaitEventToSet(wes, WL_SOCKET_READABLE, bw_curl_engine_fd(backend_engine), NULL, NULL);
		while (!call->done)
		{
			WaitEvent	ev[3];
			long		t = bw_curl_engine_timeout(backend_engine);

			(void) WaitEventSetWait(wes, t, ev, lengthof(ev), PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
			bw_curl_engine_run(backend_engine);
			while (bw_curl_engine_next_done(backend_engine) != NULL)
				;
		}
	}
	PG_CATCH();
	{
		if (!call->done)
			bw_curl_engine_abort(backend_engine, call);
		bw_http_call_release(call);
		if (wes != NULL)
			FreeWaitEventSet(wes);
		PG_RE_THROW();
	}
	PG_END_TRY();
	FreeWaitEventSet(wes);
}

/* Wait for a request slot of the environment, at most until deadline. */
static void
wait_for_slot(int env, const char *environment, TimestampTz deadline)
{
	for (;;)
	{
		long		wait_ms;
		TimestampTz now;

		if (bw_api_try_slot(env, &wait_ms))
			return;
		now = GetCurrentTimestamp();
		if (TimestampTzPlusMilliseconds(now, wait_ms) > deadline)
		{
			TimestampTz paused = bw_api_paused_until(env);

			if (paused > now)
				ereport(ERROR,
						(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
						 errmsg("Biteship's API is paused for environment %s until %s",
								environment, timestamptz_to_str(paused)),
						 errdetail("The API answered 429 (too many requests) or kept failing; requests back off."),
						 errhint("Try again later, or queue the order with biteship_webhook.sync_orders().")));
			ereport(ERROR,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("no request to Biteship's API could start within biteship_webhook.api_timeout"),
					 errdetail("Requests of environment %s are spaced under biteship_webhook.api_rate_limit (%d per second), and others were queued first.",
							   environment, bw_api_rate_limit),
					 errhint("Queue many orders with biteship_webhook.sync_orders() instead.")));
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Max(wait_ms, 1), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * sync_order(order_id, environment): fetch the order now, apply it, and
 * return its row.  Biteship's refusals and transport failures raise an
 * ERROR (nothing is recorded: the transaction rolls back); an answer that
 * could not be applied (an application trigger failed) stays in the
 * events log as failed, for the dispatcher to retry, with a WARNING.
 */
Datum
bw_sync_order(PG_FUNCTION_ARGS)
{
	char	   *order_id = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *environment;
	int			env = env_arg(fcinfo, 1, &environment);
	char	   *key;
	TimestampTz key_version = 0;
	BwApiRequest *req;
	BwApiAnswer a;
	bool		have_answer;
	volatile BwApiResult r = BW_API_NETWORK_ERROR;
	TimestampTz deadline;
	Datum		result = (Datum) 0;
	bool		isnull = true;

	check_order_id(order_id);
	if (bw_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("sync_order() needs biteship_webhook in shared_preload_libraries"),
				 errdetail("Requests to Biteship's API are paced in shared memory, across all sessions.")));
	if (bw_apply_role == NULL || bw_apply_role[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("sync_order() needs biteship_webhook.apply_role"),
				 errdetail("With an empty apply_role, application triggers would run as the role that owns sync_order()."),
				 errhint("Set biteship_webhook.apply_role to biteship_webhook_apply (the default).")));
	key = bw_api_key_load(environment, &key_version);
	if (key == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("no Biteship API key is set for environment %s", environment),
				 errhint("Set one with: SELECT biteship_webhook.set_api_key('%s', '<key>');",
						 environment)));

	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), bw_api_timeout);
	wait_for_slot(env, environment, deadline);

	req = bw_api_request_new(CurrentMemoryContext, environment, order_id, key,
							 key_version, "manual", 0);
	pgstat_report_wait_start(PG_WAIT_EXTENSION);
	fetch_blocking(req);
	pgstat_report_wait_end();

	PG_TRY();
	{
		r = bw_api_finish(req, &a, &have_answer);
	}
	PG_FINALLY();
	{
		bw_http_call_release(&req->call);
	}
	PG_END_TRY();

	switch (r)
	{
		case BW_API_OK:
			if (strcmp(a.state, "failed") == 0)
				ereport(WARNING,
						(errmsg("order %s was fetched but could not be applied", order_id),
						 errdetail("%s", a.error),
						 errhint("The answer is event " INT64_FORMAT " in biteship_webhook.events; it is retried like a failed delivery.",
								 a.event_id)));
			break;
		case BW_API_NOT_FOUND:
			ereport(ERROR,
					(errcode(ERRCODE_NO_DATA_FOUND),
					 errmsg("Biteship has no order \"%s\" in environment %s", order_id, environment),
					 errdetail("%s", a.error != NULL ? a.error : "not found"),
					 errhint("The id must be Biteship's order id, and the key must be of the account and mode that created the order.")));
			break;
		case BW_API_KEY_REFUSED:
		case BW_API_NO_KEY:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
					 errmsg("Biteship's API refused the API key of environment %s", environment),
					 errdetail("%s", have_answer && a.error != NULL ? a.error : "authorization failed"),
					 errhint("Set the right key with biteship_webhook.set_api_key().")));
			break;
		case BW_API_RATE_LIMITED:
			ereport(ERROR,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("Biteship's API answered 429 (too many requests)"),
					 errdetail("Requests of environment %s are paused until %s.", environment,
							   timestamptz_to_str(bw_api_paused_until(env))),
					 errhint("Lower biteship_webhook.api_rate_limit, or queue orders with biteship_webhook.sync_orders().")));
			break;
		case BW_API_NETWORK_ERROR:
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("could not reach Biteship's API"),
					 errdetail("%s", req->call.error[0] != '\0' ? req->call.error : "no answer"),
					 errhint("Check biteship_webhook.api_base_url and the network; the request is bounded by biteship_webhook.api_timeout.")));
			break;
		default:
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_EXCEPTION),
					 errmsg("Biteship's API answered %ld (%s)", a.http_status, bw_api_result_name(r)),
					 errdetail("%s", a.error != NULL ? a.error : "no details"),
					 errhint("The answer is in biteship_webhook.events (event \"api.order\").")));
	}

	/* the row as it is now */
	{
		Oid			types[2] = {TEXTOID, TEXTOID};
		Datum		values[2];
		int			ret;

		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		values[0] = CStringGetTextDatum(environment);
		values[1] = CStringGetTextDatum(order_id);
		ret = SPI_execute_with_args("SELECT o FROM biteship_webhook.orders o "
									" WHERE o.environment = $1 AND o.order_id = $2",
									2, types, values, NULL, false, 1);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "could not read the order");
		if (SPI_processed == 1)
		{
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

			if (!isnull)
				result = SPI_datumTransfer(d, false, -1);
		}
		SPI_finish();
	}
	if (isnull)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(result);
}

/*
 * sync_orders(order_ids, environment): queue orders for the reconciler.
 * Returns how many were queued now (those already queued are not counted
 * again).
 */
Datum
bw_sync_orders(PG_FUNCTION_ARGS)
{
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(0);
	char	   *environment;
	int			env = env_arg(fcinfo, 1, &environment);
	Datum	   *elems;
	bool	   *elemnulls;
	int			n;
	Oid			types[2] = {TEXTOID, TEXTARRAYOID};
	Datum		values[2];
	int			ret;
	int64		queued;

	(void) env;
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &elemnulls, &n);
	for (int i = 0; i < n; i++)
	{
		if (elemnulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("order_ids must not contain nulls")));
		check_order_id(TextDatumGetCString(elems[i]));
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	values[0] = CStringGetTextDatum(environment);
	values[1] = PointerGetDatum(arr);
	ret = SPI_execute_with_args("INSERT INTO biteship_webhook.order_syncs AS s "
								" (environment, order_id, reason, queued_at, next_sync_at) "
								"SELECT DISTINCT $1, id, 'backfill', pg_catalog.now(), pg_catalog.now() "
								"  FROM pg_catalog.unnest($2) AS id "
								"ON CONFLICT (environment, order_id) DO UPDATE SET "
								"  reason = 'backfill', queued_at = EXCLUDED.queued_at, "
								"  next_sync_at = EXCLUDED.next_sync_at, attempts = 0 "
								"WHERE s.next_sync_at IS NULL",
								2, types, values, NULL, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "could not queue the orders: %s", SPI_result_code_string(ret));
	queued = (int64) SPI_processed;
	SPI_finish();

	if (queued > 0)
	{
		TimestampTz updated;
		char	   *key = bw_api_key_load(environment, &updated);

		if (key == NULL)
			ereport(WARNING,
					(errmsg("no Biteship API key is set for environment %s", environment),
					 errdetail("The orders stay queued until one is set."),
					 errhint("Set one with: SELECT biteship_webhook.set_api_key('%s', '<key>');",
							 environment)));
		if (!bw_outbound)
			ereport(WARNING,
					(errmsg("the reconciler does not run: biteship_webhook.outbound is off")));
		bw_wake_at_commit(BW_LATCH_RECONCILER);
	}
	PG_RETURN_INT64(queued);
}
