/*-------------------------------------------------------------------------
 *
 * dispatcher.c
 *	  The dispatcher background worker: applies pending events (deferred
 *	  mode), retries failed ones with exponential backoff, and purges the
 *	  events log past biteship_webhook.event_retention.
 *
 * It sleeps on its latch until the next thing is due.  Whoever commits new
 * work for it (the listener, or ingest() from SQL) sets the latch at commit,
 * so there is no polling: an idle dispatcher wakes only for the hourly
 * retention check.  Work is done in short transactions of a bounded number
 * of events, claimed with FOR UPDATE SKIP LOCKED.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "biteship_webhook.h"
#include "stats.h"

#define APPLY_BATCH		50
#define PURGE_BATCH		1000
#define ERROR_BACKOFF_MS 10000
#define MAX_PURGE_INTERVAL_MS (3600 * 1000L)

static MemoryContext loop_cxt = NULL;

/* Forget our latch in shared memory on exit. */
static void
clear_latch(int code, Datum arg)
{
	bw_set_worker_latch(BW_LATCH_DISPATCHER, NULL);
}

/* Begin one short transaction of the dispatcher. */
static void
begin_xact(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

static void
commit_xact(void)
{
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	pgstat_report_stat(false);
}

/* Is the extension installed in our database?  (Needs a transaction.) */
static bool
extension_ready(void)
{
	return !RecoveryInProgress() &&
		OidIsValid(get_extension_oid("biteship_webhook", true));
}

/*
 * Apply one batch of due events: pending ones and failed ones whose retry
 * time has come.  They are claimed oldest-due first, then applied in order
 * of (environment, order id), the order the listeners lock orders in, so
 * that the dispatcher and the listeners cannot deadlock.  The batch stops
 * early at the apply deadline, or before the subtransactions of its
 * applies could overflow the subtransaction cache; the rest stays due.
 * Returns how many were processed (APPLY_BATCH: there may be more), or -1
 * when the extension is not installed.
 */
static int
apply_due_events(void)
{
	int64		ids[APPLY_BATCH];
	int			n = 0;
	int			done = 0;
	int			ret;

	begin_xact("biteship_webhook: applying events");
	if (!extension_ready())
	{
		commit_xact();
		return -1;
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	ret = SPI_execute("SELECT id FROM ("
					  " SELECT id, environment, order_id FROM biteship_webhook.events "
					  "  WHERE state IN ('pending', 'failed') "
					  "    AND next_attempt_at <= pg_catalog.clock_timestamp() "
					  "  ORDER BY next_attempt_at "
					  "  LIMIT " CppAsString2(APPLY_BATCH)
					  "  FOR UPDATE SKIP LOCKED) due "
					  "ORDER BY environment, order_id COLLATE \"C\", id", false, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not select due events: %s", SPI_result_code_string(ret));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		ids[n++] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
											   SPI_tuptable->tupdesc, 1, &isnull));
	}
	SPI_finish();

	/*
	 * Only with work to do: timeout.c leaves its interval timer running when
	 * the deadline is disarmed, and that SIGALRM sets our latch.  Arming on
	 * every wake-up would wake an idle dispatcher every apply_timeout.
	 */
	if (n > 0)
	{
		bw_apply_deadline_arm();
		for (int i = 0; i < n && bw_apply_room(); i++)
		{
			char	   *error;

			bw_apply_stored_event(ids[i], "webhook", true, &error);
			done++;
		}
		bw_apply_deadline_disarm();
	}
	commit_xact();
	/* stopped early: come back at once for the rest */
	return done < n ? APPLY_BATCH : n;
}

/*
 * Purge one batch of events past the retention period.  Failed and pending
 * events are kept.  Returns how many rows were deleted.
 */
static int
purge_batch(void)
{
	Datum		arg;
	Oid			type = FLOAT8OID;
	int			ret;
	int			n;

	begin_xact("biteship_webhook: purging old events");
	if (!extension_ready())
	{
		commit_xact();
		return 0;
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	arg = Float8GetDatum((double) bw_event_retention);
	ret = SPI_execute_with_args("DELETE FROM biteship_webhook.events WHERE id IN ("
								" SELECT id FROM biteship_webhook.events "
								"  WHERE received_at < pg_catalog.now() - pg_catalog.make_interval(secs => $1) "
								"    AND state NOT IN ('failed', 'pending') "
								"  LIMIT " CppAsString2(PURGE_BATCH) ")",
								1, &type, &arg, NULL, false, 0);
	if (ret != SPI_OK_DELETE)
		elog(ERROR, "could not purge events: %s", SPI_result_code_string(ret));
	n = (int) SPI_processed;
	SPI_finish();
	commit_xact();
	return n;
}

/*
 * Milliseconds until the next failed event is due for a retry, or -1 when
 * none is scheduled.
 */
static long
ms_until_next_retry(void)
{
	long		result = -1;
	int			ret;

	begin_xact("biteship_webhook: scheduling");
	if (extension_ready())
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		ret = SPI_execute("SELECT pg_catalog.ceil(pg_catalog.date_part('epoch', "
						  "  pg_catalog.min(next_attempt_at) - pg_catalog.clock_timestamp()) "
						  "  * 1000::pg_catalog.float8)::pg_catalog.int8 "
						  "FROM biteship_webhook.events "
						  "WHERE state IN ('pending', 'failed') AND next_attempt_at IS NOT NULL",
						  true, 0);
		if (ret == SPI_OK_SELECT && SPI_processed == 1)
		{
			bool		isnull;
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0],
										  SPI_tuptable->tupdesc, 1, &isnull);

			if (!isnull)
				result = (long) Max(DatumGetInt64(d), 100);	/* locked rows: look again soon */
		}
		SPI_finish();
	}
	commit_xact();
	return result;
}

/*
 * One round of work.  Returns the time to sleep, in ms (-1: until woken).
 */
static long
dispatch_round(TimestampTz *next_purge)
{
	long		timeout;
	int			n;

	/* apply everything that is due, batch by batch */
	while ((n = apply_due_events()) == APPLY_BATCH)
		CHECK_FOR_INTERRUPTS();
	/*
	 * Not ready: on a standby, look again every second so that work due
	 * after a promotion is not left waiting; without the extension, once a
	 * minute (the first pending or failed event wakes us sooner).
	 */
	if (n < 0)
		return RecoveryInProgress() ? 1000 : 60000;

	/* retention */
	if (bw_event_retention > 0)
	{
		TimestampTz now = GetCurrentTimestamp();

		if (now >= *next_purge)
		{
			long		interval = Min((long) bw_event_retention * 1000L,
									   MAX_PURGE_INTERVAL_MS);

			while (purge_batch() == PURGE_BATCH)
				CHECK_FOR_INTERRUPTS();
			*next_purge = TimestampTzPlusMilliseconds(now, interval);
		}
	}

	timeout = ms_until_next_retry();
	if (bw_event_retention > 0)
	{
		long		purge_in = (long) ((*next_purge - GetCurrentTimestamp()) / 1000);

		purge_in = Max(purge_in, 0);
		if (timeout < 0 || purge_in < timeout)
			timeout = purge_in;
	}
	return timeout;
}

/*
 * Entry point of the dispatcher worker.
 */
void
bw_dispatcher_main(Datum main_arg)
{
	static TimestampTz next_purge = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(bw_database,
										 bw_role[0] != '\0' ? bw_role : NULL, 0);
	pgstat_report_appname("biteship_webhook dispatcher");
	bw_worker_session_settings();

	bw_set_worker_latch(BW_LATCH_DISPATCHER, MyLatch);
	on_shmem_exit(clear_latch, (Datum) 0);

	loop_cxt = AllocSetContextCreate(TopMemoryContext,
									 "biteship_webhook dispatcher loop",
									 ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		long		timeout;
		int			flags = WL_LATCH_SET | WL_EXIT_ON_PM_DEATH;

		MemoryContextSwitchTo(loop_cxt);
		PG_TRY();
		{
			timeout = dispatch_round(&next_purge);
		}
		PG_CATCH();
		{
			MemoryContextSwitchTo(loop_cxt);
			EmitErrorReport();
			FlushErrorState();
			AbortCurrentTransaction();
			pgstat_report_activity(STATE_IDLE, NULL);
			timeout = ERROR_BACKOFF_MS;
		}
		PG_END_TRY();
		MemoryContextSwitchTo(TopMemoryContext);
		MemoryContextReset(loop_cxt);

		if (timeout >= 0)
			flags |= WL_TIMEOUT;
		(void) WaitLatch(MyLatch, flags, timeout, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);

		/*
		 * A query cancel between rounds has nothing to cancel: ignore it,
		 * as postgres.c does while it waits for a command, rather than let
		 * it become an ERROR outside any handler (a FATAL).
		 */
		QueryCancelPending = false;
		CHECK_FOR_INTERRUPTS();

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			bw_worker_session_settings();
			next_purge = 0;
		}
	}
}
