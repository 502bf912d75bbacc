/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  Shared-memory state of biteship_webhook: counters and histograms of the
 *	  listener, and the dispatcher's latch.
 *
 * Workers accumulate counts locally and fold them in once per batch under a
 * spinlock, so the hot path takes no locks per request.  The counters are
 * read by biteship_webhook.stats() (and so by the stats view and the
 * listener's /metrics).  Without shared_preload_libraries there is no
 * shared memory; the functions here then do nothing and report nothing.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"

#include "biteship_webhook.h"
#include "stats.h"

PG_FUNCTION_INFO_V1(bw_stats);

static const char *const event_states[BW_NEVENT_STATES] = {
	"pending", "applied", "ignored", "ping", "failed", "rejected", "duplicate"
};

const double bw_batch_bounds[BW_BATCH_BUCKETS] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
const double bw_latency_bounds[BW_LATENCY_BUCKETS] = {
	0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10
};

BwShared   *bw_shared = NULL;

static Size
shared_size(void)
{
	return MAXALIGN(sizeof(BwShared));
}

void
bw_shmem_request(void)
{
	RequestAddinShmemSpace(shared_size());
}

void
bw_shmem_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	bw_shared = ShmemInitStruct("biteship_webhook", shared_size(), &found);
	if (!found)
	{
		memset(bw_shared, 0, shared_size());
		SpinLockInit(&bw_shared->mutex);
	}
	LWLockRelease(AddinShmemInitLock);
}

static int
state_index(const char *state)
{
	for (int i = 0; i < BW_NEVENT_STATES; i++)
	{
		if (strcmp(event_states[i], state) == 0)
			return i;
	}
	return -1;
}

/*
 * Count one event outcome.
 */
void
bw_stats_count_event(const char *state)
{
	int			i = state_index(state);

	if (bw_shared == NULL || i < 0)
		return;
	SpinLockAcquire(&bw_shared->mutex);
	bw_shared->events[i]++;
	SpinLockRelease(&bw_shared->mutex);
}

/*
 * Fold a worker's local counters into shared memory and zero them.
 */
void
bw_stats_flush(BwLocalStats *local)
{
	if (bw_shared == NULL)
	{
		memset(local, 0, sizeof(*local));
		return;
	}

	SpinLockAcquire(&bw_shared->mutex);
	for (int i = 0; i < local->nrequests; i++)
	{
		BwRequestCounter *lc = &local->requests[i];
		int			j;

		for (j = 0; j < bw_shared->nrequests; j++)
		{
			BwRequestCounter *sc = &bw_shared->requests[j];

			if (sc->status == lc->status && strcmp(sc->webhook, lc->webhook) == 0)
				break;
		}
		if (j == bw_shared->nrequests)
		{
			if (j == BW_MAX_REQUEST_COUNTERS)
				continue;		/* full: drop rather than block */
			bw_shared->requests[j] = *lc;
			bw_shared->requests[j].count = 0;
			bw_shared->nrequests++;
		}
		bw_shared->requests[j].count += lc->count;
	}
	for (int i = 0; i <= BW_BATCH_BUCKETS; i++)
		bw_shared->batch_buckets[i] += local->batch_buckets[i];
	bw_shared->batch_count += local->batch_count;
	bw_shared->batch_sum += local->batch_sum;
	for (int i = 0; i <= BW_LATENCY_BUCKETS; i++)
		bw_shared->latency_buckets[i] += local->latency_buckets[i];
	bw_shared->latency_count += local->latency_count;
	bw_shared->latency_sum += local->latency_sum;
	for (int i = 0; i < BW_NTLS_FAILURES; i++)
		bw_shared->tls_failures[i] += local->tls_failures[i];
	bw_shared->connections_refused += local->connections_refused;
	SpinLockRelease(&bw_shared->mutex);

	memset(local, 0, sizeof(*local));
}

/* Record one answered request in a worker's local counters. */
void
bw_stats_local_request(BwLocalStats *local, const char *webhook, int status,
					   double seconds)
{
	int			i;

	if (webhook == NULL)
		webhook = "";
	for (i = 0; i < local->nrequests; i++)
	{
		if (local->requests[i].status == status &&
			strcmp(local->requests[i].webhook, webhook) == 0)
			break;
	}
	if (i == local->nrequests && i < BW_MAX_REQUEST_COUNTERS)
	{
		local->requests[i].status = status;
		strlcpy(local->requests[i].webhook, webhook, sizeof(local->requests[i].webhook));
		local->requests[i].count = 0;
		local->nrequests++;
	}
	if (i < BW_MAX_REQUEST_COUNTERS)
		local->requests[i].count++;

	for (i = 0; i < BW_LATENCY_BUCKETS; i++)
	{
		if (seconds <= bw_latency_bounds[i])
			break;
	}
	local->latency_buckets[i]++;
	local->latency_count++;
	local->latency_sum += seconds;
}

/* Record one batch size in a worker's local counters. */
void
bw_stats_local_batch(BwLocalStats *local, int size)
{
	int			i;

	for (i = 0; i < BW_BATCH_BUCKETS; i++)
	{
		if (size <= bw_batch_bounds[i])
			break;
	}
	local->batch_buckets[i]++;
	local->batch_count++;
	local->batch_sum += size;
}

/* Publish a listener's number of open connections. */
void
bw_stats_set_connections(int listener, int n)
{
	if (bw_shared == NULL || listener < 0 || listener >= BW_MAX_LISTENERS)
		return;
	SpinLockAcquire(&bw_shared->mutex);
	bw_shared->open_connections[listener] = n;
	SpinLockRelease(&bw_shared->mutex);
}

/*
 * Wake the dispatcher, if it runs.  Setting a latch is cheap and safe from
 * any backend.
 */
void
bw_wake_dispatcher(void)
{
	Latch	   *latch;

	if (bw_shared == NULL)
		return;
	SpinLockAcquire(&bw_shared->mutex);
	latch = bw_shared->dispatcher_latch;
	SpinLockRelease(&bw_shared->mutex);
	if (latch != NULL)
		SetLatch(latch);
}

/* Add one row to the stats result. */
static void
put_row(ReturnSetInfo *rsinfo, const char *name, const char *labels, double value)
{
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	values[0] = CStringGetTextDatum(name);
	values[1] = DirectFunctionCall1(jsonb_in, CStringGetDatum(labels ? labels : "{}"));
	values[2] = Float8GetDatum(value);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

/* Emit a cumulative histogram in Prometheus form. */
static void
put_histogram(ReturnSetInfo *rsinfo, const char *name, const double *bounds,
			  int nbounds, const uint64 *buckets, uint64 count, double sum)
{
	char		metric[NAMEDATALEN];
	uint64		cumulative = 0;

	snprintf(metric, sizeof(metric), "%s_bucket", name);
	for (int i = 0; i <= nbounds; i++)
	{
		char		labels[64];

		cumulative += buckets[i];
		if (i < nbounds)
			snprintf(labels, sizeof(labels), "{\"le\": \"%g\"}", bounds[i]);
		else
			snprintf(labels, sizeof(labels), "{\"le\": \"+Inf\"}");
		put_row(rsinfo, metric, labels, (double) cumulative);
	}
	snprintf(metric, sizeof(metric), "%s_sum", name);
	put_row(rsinfo, metric, NULL, sum);
	snprintf(metric, sizeof(metric), "%s_count", name);
	put_row(rsinfo, metric, NULL, (double) count);
}

/*
 * biteship_webhook.stats(): every counter in shared memory, one row each.
 */
Datum
bw_stats(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	BwShared   *snap;
	int			open = 0;
	static const char *const tls_reasons[BW_NTLS_FAILURES] = {
		"handshake", "protocol_version", "unknown_ca"
	};

	InitMaterializedSRF(fcinfo, 0);
	if (bw_shared == NULL)
		PG_RETURN_VOID();

	snap = palloc(sizeof(BwShared));
	SpinLockAcquire(&bw_shared->mutex);
	memcpy(snap, bw_shared, sizeof(BwShared));
	SpinLockRelease(&bw_shared->mutex);

	for (int i = 0; i < snap->nrequests; i++)
	{
		StringInfoData labels;

		initStringInfo(&labels);
		appendStringInfoString(&labels, "{\"webhook\": ");
		escape_json(&labels, snap->requests[i].webhook);
		appendStringInfo(&labels, ", \"status\": \"%d\"}", snap->requests[i].status);
		put_row(rsinfo, "requests_total", labels.data, (double) snap->requests[i].count);
	}
	for (int i = 0; i < BW_NEVENT_STATES; i++)
	{
		char		labels[64];

		snprintf(labels, sizeof(labels), "{\"state\": \"%s\"}", event_states[i]);
		put_row(rsinfo, "events_total", labels, (double) snap->events[i]);
	}
	put_histogram(rsinfo, "batch_size", bw_batch_bounds, BW_BATCH_BUCKETS,
				  snap->batch_buckets, snap->batch_count, (double) snap->batch_sum);
	put_histogram(rsinfo, "request_duration_seconds", bw_latency_bounds,
				  BW_LATENCY_BUCKETS, snap->latency_buckets, snap->latency_count,
				  snap->latency_sum);
	for (int i = 0; i < BW_MAX_LISTENERS; i++)
		open += snap->open_connections[i];
	put_row(rsinfo, "open_connections", NULL, (double) open);
	put_row(rsinfo, "connections_refused_total", NULL, (double) snap->connections_refused);
	for (int i = 0; i < BW_NTLS_FAILURES; i++)
	{
		char		labels[64];

		snprintf(labels, sizeof(labels), "{\"reason\": \"%s\"}", tls_reasons[i]);
		put_row(rsinfo, "tls_handshake_failures_total", labels, (double) snap->tls_failures[i]);
	}

	PG_RETURN_VOID();
}
