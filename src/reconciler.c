/*-------------------------------------------------------------------------
 *
 * reconciler.c
 *	  The reconciler background worker: fetches orders from Biteship's API
 *	  on the libcurl engine, paced per environment, and applies what the
 *	  API says through the ingest core.
 *
 * Two sources of work, claimed in short transactions:
 *
 *	  - the backfill queue (order_syncs rows whose next_sync_at has come:
 *		sync_orders(), and retries after errors), first;
 *	  - active (non-final) orders whose last change is older than
 *		biteship_webhook.reconcile_after, the oldest first, unless fetched
 *		within that time already, or refused by the API since their last
 *		change.
 *
 * A claim leases the rows (next_sync_at moves a minute or so ahead), so a
 * crash loses nothing: the lease runs out and the order is claimed again.
 * Claimed orders start only when their environment's next request slot
 * has come (see reconcile.c); several may be in flight at once, none
 * inside a transaction.  Each turn, the answers that arrived are logged,
 * applied and recorded in one short transaction.
 *
 * An environment without an API key, or whose key Biteship refused, is not
 * fetched: its stale orders are recorded as skipped (and counted once per
 * reconcile_after), and its queued orders wait for a key.  set_api_key()
 * and sync_orders() set our latch at commit.  Otherwise the worker sleeps
 * until the next order can become stale, or a quarter of reconcile_after
 * when that is sooner (to notice orders created meanwhile).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "reconcile.h"
#include "stats.h"

#define MAX_INFLIGHT_PER_ENV	16
#define NOT_READY_MS			10000
#define ERROR_BACKOFF_MS		5000

/* a claimed order, waiting for its slot */
typedef struct Claimed
{
	char	   *order_id;
	char	   *reason;
	int			attempts;
} Claimed;

typedef struct EnvState
{
	MemoryContext cxt;			/* the claimed queue and the key; reset by
								 * each claim (requests have their own) */
	Claimed    *queue;
	int			nqueue;
	int			next;			/* first unstarted in queue */
	BwApiRequest *inflight[MAX_INFLIGHT_PER_ENV];
	int			ninflight;
	char	   *key;			/* NULL: none */
	TimestampTz key_updated_at;
	bool		want_claim;
	TimestampTz next_claim;		/* 0: now */
} EnvState;

static const char *const env_names[BW_NENVIRONMENTS] = {"live", "test"};
static EnvState envs[BW_NENVIRONMENTS];
static BwCurlEngine *engine = NULL;
static SPIPlanPtr plan_claim = NULL;
static SPIPlanPtr plan_next_due = NULL;
static TimestampTz not_ready_until = 0;
static bool seeded = false;

static void
clear_latch(int code, Datum arg)
{
	bw_set_worker_latch(BW_LATCH_RECONCILER, NULL);
}

static bool
extension_ready(void)
{
	Oid			nsp;

	if (RecoveryInProgress() || !OidIsValid(get_extension_oid("biteship_webhook", true)))
		return false;
	/* the tables of 0.3.0: until ALTER EXTENSION UPDATE, nothing to do */
	nsp = get_namespace_oid("biteship_webhook", true);
	return OidIsValid(nsp) && OidIsValid(get_relname_relid("order_syncs", nsp));
}

static void
prepare_plans(void)
{
	if (plan_next_due != NULL)
		return;
	{
		Oid			types[5] = {TEXTOID, INT4OID, INT4OID, INT4OID, BOOLOID};
		SPIPlanPtr	p;

		/*
		 * $1 environment, $2 how many, $3 reconcile_after (s, 0 = off), $4
		 * lease (s), $5 whether queued orders may be taken (there is a key).
		 */
		p = SPI_prepare(
						"WITH due AS ("
						" (SELECT s.order_id, COALESCE(s.reason, 'retry') AS reason, s.attempts, "
						"         0 AS prio, s.next_sync_at AS t "
						"    FROM biteship_webhook.order_syncs s "
						"   WHERE $5 AND s.environment = $1 AND s.next_sync_at <= pg_catalog.now() "
						"   ORDER BY s.next_sync_at LIMIT $2) "
						" UNION ALL "
						" (SELECT o.order_id, 'stale', 0, 1, o.updated_at "
						"    FROM biteship_webhook.orders o "
						"    LEFT JOIN biteship_webhook.order_syncs s "
						"      ON s.environment = o.environment AND s.order_id = o.order_id "
						"   WHERE $3 OPERATOR(pg_catalog.>) 0 AND o.environment = $1 AND NOT o.is_final "
						"     AND o.order_id OPERATOR(pg_catalog.~) '^[A-Za-z0-9_-]{1,64}$' "
						"     AND o.updated_at < pg_catalog.now() OPERATOR(pg_catalog.-) "
						"         pg_catalog.make_interval(secs => $3::pg_catalog.float8) "
						"     AND s.next_sync_at IS NULL "
						"     AND (s.last_sync_at IS NULL OR s.last_sync_at < pg_catalog.now() "
						"          OPERATOR(pg_catalog.-) pg_catalog.make_interval(secs => $3::pg_catalog.float8)) "
						"     AND NOT COALESCE(s.last_result = 'not_found' AND s.last_sync_at >= o.updated_at, false) "
						"   ORDER BY o.updated_at LIMIT $2)), "
						"picked AS ("
						" SELECT * FROM (SELECT DISTINCT ON (d.order_id) d.* FROM due d "
						"                 ORDER BY d.order_id, d.prio) x "
						"  ORDER BY x.prio, x.t LIMIT $2) "
						"INSERT INTO biteship_webhook.order_syncs AS s "
						" (environment, order_id, reason, queued_at, next_sync_at, attempts) "
						"SELECT $1, p.order_id, p.reason, pg_catalog.now(), "
						"       pg_catalog.now() OPERATOR(pg_catalog.+) "
						"       pg_catalog.make_interval(secs => $4::pg_catalog.float8), p.attempts "
						"  FROM picked p "
						"ON CONFLICT (environment, order_id) DO UPDATE SET "
						"  next_sync_at = EXCLUDED.next_sync_at, "
						"  reason = EXCLUDED.reason, "
						"  queued_at = COALESCE(s.queued_at, EXCLUDED.queued_at) "
						"RETURNING s.order_id, s.reason, s.attempts",
						5, types);
		if (p == NULL || SPI_keepplan(p) != 0)
			elog(ERROR, "could not prepare the reconciler's claim");
		plan_claim = p;
	}
	{
		Oid			types[3] = {TEXTOID, INT4OID, BOOLOID};
		SPIPlanPtr	p;

		/* when the next order of the environment falls due */
		p = SPI_prepare(
						"SELECT LEAST("
						" (SELECT min(s.next_sync_at) FROM biteship_webhook.order_syncs s "
						"   WHERE $3 AND s.environment = $1 AND s.next_sync_at IS NOT NULL), "
						" (SELECT min(GREATEST(o.updated_at, COALESCE(s.last_sync_at, o.updated_at))) "
						"         OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => $2::pg_catalog.float8) "
						"    FROM biteship_webhook.orders o "
						"    LEFT JOIN biteship_webhook.order_syncs s "
						"      ON s.environment = o.environment AND s.order_id = o.order_id "
						"   WHERE $2 OPERATOR(pg_catalog.>) 0 AND o.environment = $1 AND NOT o.is_final "
						"     AND o.order_id OPERATOR(pg_catalog.~) '^[A-Za-z0-9_-]{1,64}$' "
						"     AND s.next_sync_at IS NULL "
						"     AND NOT COALESCE(s.last_result = 'not_found' AND s.last_sync_at >= o.updated_at, false)))",
						3, types);
		if (p == NULL || SPI_keepplan(p) != 0)
			elog(ERROR, "could not prepare the reconciler's schedule");
		plan_next_due = p;
	}
}

/* After a restart: the newest delivery of each webhook, from the log. */
static void
seed_deliveries(void)
{
	int			ret;

	ret = SPI_execute("SELECT w.name, max(e.received_at) "
					  "  FROM biteship_webhook.events e "
					  "  JOIN biteship_webhook.webhooks w ON w.id = e.webhook_id "
					  " WHERE e.received_at > pg_catalog.now() OPERATOR(pg_catalog.-) '1 day'::pg_catalog.interval "
					  "   AND e.state <> 'rejected' "
					  " GROUP BY w.name", true, 0);
	if (ret != SPI_OK_SELECT)
		return;
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		char	   *name = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		Datum		at = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull);

		if (name != NULL && !isnull)
			bw_stats_seed_delivery(name, DatumGetTimestampTz(at));
	}
}

/*
 * Claim work for an environment, in the current transaction.  Orders that
 * cannot be fetched (no usable key) are recorded as skipped.
 */
static void
claim(int e, int want)
{
	EnvState   *es = &envs[e];
	Datum		values[5];
	bool		usable;
	int			ret;
	int			lease = 60 + 2 * (bw_api_timeout / 1000);

	/* only an empty queue is refilled: start afresh */
	Assert(es->next >= es->nqueue);
	MemoryContextReset(es->cxt);
	es->queue = NULL;
	es->nqueue = es->next = 0;
	es->key = NULL;
	{
		MemoryContext old = MemoryContextSwitchTo(es->cxt);

		es->key = bw_api_key_load(env_names[e], &es->key_updated_at);
		MemoryContextSwitchTo(old);
	}
	usable = es->key != NULL && bw_api_key_usable(e, es->key_updated_at);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	prepare_plans();
	values[0] = CStringGetTextDatum(env_names[e]);
	values[1] = Int32GetDatum(want);
	values[2] = Int32GetDatum(bw_reconcile_after);
	values[3] = Int32GetDatum(lease);
	values[4] = BoolGetDatum(usable);
	ret = SPI_execute_plan(plan_claim, values, NULL, false, 0);
	if (ret != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not claim orders to reconcile: %s", SPI_result_code_string(ret));

	if (SPI_processed > 0)
	{
		MemoryContext old = MemoryContextSwitchTo(es->cxt);
		int			base = es->nqueue;

		es->queue = palloc(sizeof(Claimed) * (SPI_processed + base));
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple	t = SPI_tuptable->vals[i];
			TupleDesc	d = SPI_tuptable->tupdesc;
			bool		isnull;
			Claimed    *c = &es->queue[es->nqueue++];

			c->order_id = SPI_getvalue(t, d, 1);
			c->reason = SPI_getvalue(t, d, 2);
			c->attempts = DatumGetInt32(SPI_getbinval(t, d, 3, &isnull));
		}
		MemoryContextSwitchTo(old);
	}

	/* when to look again */
	if ((int) SPI_processed < want)
	{
		Datum		nv[3] = {values[0], values[2], values[4]};
		bool		isnull;

		ret = SPI_execute_plan(plan_next_due, nv, NULL, true, 1);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "could not schedule the reconciler");
		{
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
			TimestampTz now = GetCurrentTimestamp();
			TimestampTz cap = bw_reconcile_after > 0 ?
				TimestampTzPlusMilliseconds(now, (int64) bw_reconcile_after * 250) : 0;

			es->next_claim = isnull ? cap : DatumGetTimestampTz(d);
			if (es->next_claim != 0 && es->next_claim < now)
				es->next_claim = TimestampTzPlusMilliseconds(now, 1000);
			if (cap != 0 && (es->next_claim == 0 || es->next_claim > cap))
				es->next_claim = cap;
		}
	}
	else
		es->next_claim = 0;
	SPI_finish();

	/* without a usable key, what was claimed (stale orders) is skipped */
	if (!usable)
	{
		for (int i = es->next; i < es->nqueue; i++)
			bw_api_record_skip(env_names[e], es->queue[i].order_id,
							   es->key == NULL ? BW_API_NO_KEY : BW_API_KEY_REFUSED);
		es->next = es->nqueue;
	}
	es->want_claim = false;
}

/*
 * Start what the pacing allows; returns ms until the next slot, or -1.
 * When the key has been refused, or the environment is paused for longer
 * than a claim's lease could wait, what is queued is dropped: its leases
 * run out and it is claimed again later.
 */
static long
start_requests(int e)
{
	EnvState   *es = &envs[e];
	long		wait_ms = -1;
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz paused = bw_api_paused_until(e);

	if (es->next < es->nqueue &&
		(!bw_api_key_usable(e, es->key_updated_at) ||
		 paused > TimestampTzPlusMilliseconds(now, 10000)))
	{
		es->next = es->nqueue;
		es->next_claim = Max(paused, TimestampTzPlusMilliseconds(now, 1000));
		return -1;
	}
	while (es->next < es->nqueue && es->ninflight < MAX_INFLIGHT_PER_ENV)
	{
		Claimed    *c = &es->queue[es->next];
		BwApiRequest *req;
		long		w;

		if (!bw_api_order_id_ok(c->order_id))
		{
			es->next++;			/* never in a URL (the claim filters them) */
			continue;
		}
		if (!bw_api_try_slot(e, &w))
		{
			wait_ms = w;
			break;
		}
		req = bw_api_request_new(TopMemoryContext, env_names[e], c->order_id, es->key,
								 es->key_updated_at, c->reason, c->attempts);
		es->next++;
		es->inflight[es->ninflight++] = req;
		(void) bw_curl_engine_start(engine, &req->call);
	}
	return wait_ms;
}

static void
forget_inflight(int e, BwApiRequest *req)
{
	EnvState   *es = &envs[e];

	for (int i = 0; i < es->ninflight; i++)
	{
		if (es->inflight[i] == req)
		{
			es->inflight[i] = es->inflight[--es->ninflight];
			break;
		}
	}
}

/*
 * One turn's transaction: record what finished, then claim for each
 * environment that has room and wants work.
 */
static void
turn_transaction(BwApiRequest **done, int ndone)
{
	MemoryContext oldcxt = CurrentMemoryContext;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "biteship_webhook: reconcile");
	PG_TRY();
	{
		if (!extension_ready())
		{
			not_ready_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), NOT_READY_MS);
			/* answers in flight are dropped: their leases run out */
		}
		else
		{
			not_ready_until = 0;
			if (!seeded)
			{
				if (SPI_connect() == SPI_OK_CONNECT)
				{
					seed_deliveries();
					SPI_finish();
				}
				seeded = true;
			}
			/*
			 * Armed only for answers: a disarmed deadline leaves timeout.c's
			 * timer running, and its SIGALRM sets our latch, which would
			 * make an idle reconciler claim again every apply_timeout.
			 */
			if (ndone > 0)
			{
				bw_apply_deadline_arm();
				for (int i = 0; i < ndone; i++)
				{
					BwApiAnswer a;
					bool		have;

					(void) bw_api_finish(done[i], &a, &have);
					CommandCounterIncrement();
				}
				bw_apply_deadline_disarm();
			}
			for (int e = 0; e < BW_NENVIRONMENTS; e++)
			{
				EnvState   *es = &envs[e];
				TimestampTz paused = bw_api_paused_until(e);

				if (!es->want_claim || es->next < es->nqueue)
					continue;
				if (paused > GetCurrentTimestamp())
				{
					/* nothing could start: look again when the pause ends */
					es->want_claim = false;
					es->next_claim = paused;
					continue;
				}
				claim(e, Min(MAX_INFLIGHT_PER_ENV * 4, Max(bw_api_rate_limit * 4, 8)));
			}
		}
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcxt);
		bw_apply_deadline_disarm();
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		/* nothing recorded is lost: the leases run out and are claimed again */
		not_ready_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ERROR_BACKOFF_MS);
		for (int e = 0; e < BW_NENVIRONMENTS; e++)
			envs[e].want_claim = true;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
	pgstat_report_activity(STATE_IDLE, NULL);
	pgstat_report_stat(false);
}

void
bw_reconciler_main(Datum main_arg)
{
	WaitEventSet *wes;
	BwCurlEngineOptions opts;
	char		err[256];
	MemoryContext loop_cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(bw_database,
										 bw_role[0] != '\0' ? bw_role : NULL, 0);
	pgstat_report_appname("biteship_webhook reconciler");
	bw_worker_session_settings();
	bw_set_worker_latch(BW_LATCH_RECONCILER, MyLatch);
	on_shmem_exit(clear_latch, (Datum) 0);

	memset(&opts, 0, sizeof(opts));
	/* never more in flight than connections: curl must not queue requests */
	opts.max_total_connections = MAX_INFLIGHT_PER_ENV * BW_NENVIRONMENTS;
	opts.max_host_connections = MAX_INFLIGHT_PER_ENV * BW_NENVIRONMENTS;
	opts.ca_file = bw_outbound_ca_file;
	opts.user_agent = "biteship_webhook/" BW_VERSION;
	engine = bw_curl_engine_new(&opts, err, sizeof(err));
	if (engine == NULL)
		ereport(FATAL,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("biteship_webhook reconciler: could not start the HTTP engine: %s", err)));

	for (int e = 0; e < BW_NENVIRONMENTS; e++)
	{
		envs[e].cxt = AllocSetContextCreate(TopMemoryContext, "biteship_webhook reconciler",
											ALLOCSET_DEFAULT_SIZES);
		envs[e].want_claim = true;
	}
	loop_cxt = AllocSetContextCreate(TopMemoryContext, "biteship_webhook reconciler loop",
									 ALLOCSET_DEFAULT_SIZES);
	wes = BW_CREATE_WAIT_EVENT_SET(3);
	AddWaitEventToSet(wes, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wes, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(wes, WL_SOCKET_READABLE, bw_curl_engine_fd(engine), NULL, NULL);

	for (;;)
	{
		WaitEvent	events[3];
		BwApiRequest *done[MAX_INFLIGHT_PER_ENV * BW_NENVIRONMENTS];
		int			ndone = 0;
		BwHttpCall *call;
		long		timeout = -1;
		TimestampTz now;
		bool		need_txn;

		/* what to wait for */
		now = GetCurrentTimestamp();
		for (int e = 0; e < BW_NENVIRONMENTS; e++)
		{
			EnvState   *es = &envs[e];
			long		t = -1;

			if (es->next < es->nqueue)
			{
				long		w = start_requests(e);

				if (w >= 0)
					t = w;
			}
			else if (es->want_claim)
				t = 0;
			else if (es->next_claim != 0)
				t = es->next_claim <= now ? 0 : (long) ((es->next_claim - now + 999) / 1000);
			if (t >= 0 && (timeout < 0 || t < timeout))
				timeout = t;
		}
		/* after the starts above: a new request wants the engine at once */
		{
			long		t = bw_curl_engine_timeout(engine);

			if (t >= 0 && (timeout < 0 || t < timeout))
				timeout = t;
		}
		if (not_ready_until > now)
		{
			long		t = (long) ((not_ready_until - now + 999) / 1000);

			if (timeout < 0 || timeout < t)
				timeout = Max(timeout, t);
		}

		{
			int			n = WaitEventSetWait(wes, timeout, events, lengthof(events),
											 PG_WAIT_EXTENSION);

			for (int i = 0; i < n; i++)
			{
				if (events[i].events & WL_LATCH_SET)
				{
					/* a new key, or new backfill, was committed */
					ResetLatch(MyLatch);
					for (int e = 0; e < BW_NENVIRONMENTS; e++)
						envs[e].want_claim = true;
					not_ready_until = 0;
				}
			}
		}
		QueryCancelPending = false;
		CHECK_FOR_INTERRUPTS();
		if (ShutdownRequestPending)
			break;
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			bw_worker_session_settings();
			for (int e = 0; e < BW_NENVIRONMENTS; e++)
				envs[e].want_claim = true;
		}

		MemoryContextSwitchTo(loop_cxt);
		bw_curl_engine_run(engine);
		while ((call = bw_curl_engine_next_done(engine)) != NULL)
			done[ndone++] = (BwApiRequest *) call->user;
		/* calls that could not start are done too */
		for (int e = 0; e < BW_NENVIRONMENTS; e++)
		{
			for (int i = 0; i < envs[e].ninflight; i++)
			{
				BwApiRequest *r = envs[e].inflight[i];
				bool		listed = false;

				if (!r->call.done || r->call.easy != NULL)
					continue;
				for (int j = 0; j < ndone; j++)
					listed |= done[j] == r;
				if (!listed)
					done[ndone++] = r;
			}
		}

		now = GetCurrentTimestamp();
		need_txn = ndone > 0;
		for (int e = 0; e < BW_NENVIRONMENTS; e++)
		{
			EnvState   *es = &envs[e];

			if (es->next >= es->nqueue &&
				(es->next_claim == 0 || es->next_claim <= now))
				es->want_claim = true;
			need_txn |= es->want_claim && es->next >= es->nqueue;
		}
		if (need_txn && (not_ready_until <= now || ndone > 0))
			turn_transaction(done, ndone);

		for (int i = 0; i < ndone; i++)
		{
			BwApiRequest *r = done[i];

			forget_inflight(bw_env_index(r->environment), r);
			bw_api_request_free(r);
		}
		MemoryContextSwitchTo(TopMemoryContext);
		MemoryContextReset(loop_cxt);
	}

	bw_curl_engine_free(engine);
	proc_exit(1);
}
