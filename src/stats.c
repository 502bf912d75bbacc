/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  Shared-memory state of biteship_webhook: counters and histograms of the
 *	  workers, the latches through which they are woken, the configuration
 *	  generation, the rate limiter of unverified deliveries, and what a
 *	  transaction leaves for its commit (counts, wake-ups).
 *
 * Counters that every event touches are atomics.  The label tables and the
 * histograms are folded in by each worker once per batch under one
 * LWLock, so the hot path takes no lock per request, and readers copy them
 * under the same lock in shared mode.  Event outcomes are counted only when
 * the transaction that produced them commits: a batch that rolls back
 * counts nothing.  Without shared_preload_libraries there is no shared
 * memory; the functions here then do nothing and report nothing.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
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
#include "utils/timestamp.h"

#include "biteship_webhook.h"
#include "outbound_policy.h"
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

/* what the current transaction leaves for its commit */
static uint64 pending_events[BW_NEVENT_STATES];
static uint64 pending_outbox[BW_NOUTBOX_STATES];
static bool pending_any = false;
static bool pending_wake[BW_NLATCHES];
static bool pending_config_bump = false;
static bool xact_callback_registered = false;

static Size
shared_size(void)
{
	return MAXALIGN(sizeof(BwShared));
}

void
bw_shmem_request(void)
{
	RequestAddinShmemSpace(shared_size());
	RequestNamedLWLockTranche("biteship_webhook", 1);
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
		bw_shared->lock = &(GetNamedLWLockTranche("biteship_webhook"))->lock;
		pg_atomic_init_u64(&bw_shared->config_generation, 1);
		for (int i = 0; i < BW_NEVENT_STATES; i++)
			pg_atomic_init_u64(&bw_shared->events[i], 0);
		pg_atomic_init_u64(&bw_shared->connections_refused, 0);
		for (int i = 0; i < BW_NTLS_FAILURES; i++)
			pg_atomic_init_u64(&bw_shared->tls_failures[i], 0);
		for (int i = 0; i < BW_NOUTBOX_STATES; i++)
			pg_atomic_init_u64(&bw_shared->outbox[i], 0);
		for (int i = 0; i < BW_MAX_LISTENERS; i++)
			pg_atomic_init_u32(&bw_shared->open_connections[i], 0);
		SpinLockInit(&bw_shared->api_mutex);
		for (int e = 0; e < BW_NENVIRONMENTS; e++)
		{
			for (int i = 0; i < BW_API_NRESULTS; i++)
				pg_atomic_init_u64(&bw_shared->api_requests[e][i], 0);
			for (int i = 0; i < BW_NRECONCILE_OUTCOMES; i++)
				pg_atomic_init_u64(&bw_shared->reconciled[e][i], 0);
		}
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
 * At commit, publish what the transaction counted and wake whoever it left
 * work for; at abort, forget it.  Waking earlier would be useless: the woken
 * worker could not see the rows yet.
 */
static void
at_commit_xact_callback(XactEvent event, void *arg)
{
	bool		commit;

	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
		commit = true;
	else if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		commit = false;
	else
		return;

	if (commit && bw_shared != NULL)
	{
		if (pending_any)
		{
			for (int i = 0; i < BW_NEVENT_STATES; i++)
			{
				if (pending_events[i] > 0)
					pg_atomic_fetch_add_u64(&bw_shared->events[i], pending_events[i]);
			}
			for (int i = 0; i < BW_NOUTBOX_STATES; i++)
			{
				if (pending_outbox[i] > 0)
					pg_atomic_fetch_add_u64(&bw_shared->outbox[i], pending_outbox[i]);
			}
		}
		if (pending_config_bump)
			pg_atomic_fetch_add_u64(&bw_shared->config_generation, 1);
		for (int i = 0; i < BW_NLATCHES; i++)
		{
			if (pending_wake[i])
				bw_wake_worker((BwWorkerLatch) i);
		}
	}
	if (pending_any)
	{
		memset(pending_events, 0, sizeof(pending_events));
		memset(pending_outbox, 0, sizeof(pending_outbox));
	}
	pending_any = false;
	pending_config_bump = false;
	memset(pending_wake, 0, sizeof(pending_wake));
}

static void
register_callback(void)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(at_commit_xact_callback, NULL);
		xact_callback_registered = true;
	}
}

/*
 * Count one event outcome, once the current transaction commits.
 */
void
bw_stats_count_event(const char *state)
{
	int			i = state_index(state);

	if (bw_shared == NULL || i < 0)
		return;
	register_callback();
	pending_events[i]++;
	pending_any = true;
}

static const char *const outbox_states[BW_NOUTBOX_STATES] = {
	"queued", "delivered", "dead"
};

/*
 * Count an outbox transition (queued, delivered, dead) once the current
 * transaction commits.
 */
void
bw_stats_count_outbox(const char *state)
{
	if (bw_shared == NULL)
		return;
	for (int i = 0; i < BW_NOUTBOX_STATES; i++)
	{
		if (strcmp(outbox_states[i], state) == 0)
		{
			register_callback();
			pending_outbox[i]++;
			pending_any = true;
			return;
		}
	}
}

/* Has the current transaction changed the cached configuration? */
bool
bw_config_changed_locally(void)
{
	return pending_config_bump;
}

/* histogram helper: the bucket of a value */
static int
latency_bucket(double seconds)
{
	int			i;

	for (i = 0; i < BW_LATENCY_BUCKETS; i++)
	{
		if (seconds <= bw_latency_bounds[i])
			break;
	}
	return i;
}

/* Record one outbox attempt in the outbound worker's local counters. */
void
bw_stats_local_attempt(BwOutboundStats *local, const char *endpoint,
					   long http_status, double seconds)
{
	const char *cls = bw_status_class(http_status);
	int			i;

	for (i = 0; i < local->nattempts; i++)
	{
		if (strcmp(local->attempts[i].endpoint, endpoint) == 0 &&
			strcmp(local->attempts[i].cls, cls) == 0)
			break;
	}
	if (i == local->nattempts && i < BW_MAX_ATTEMPT_COUNTERS)
	{
		strlcpy(local->attempts[i].endpoint, endpoint, sizeof(local->attempts[i].endpoint));
		strlcpy(local->attempts[i].cls, cls, sizeof(local->attempts[i].cls));
		local->attempts[i].count = 0;
		local->nattempts++;
	}
	if (i < BW_MAX_ATTEMPT_COUNTERS)
		local->attempts[i].count++;
	local->attempt_duration_buckets[latency_bucket(seconds)]++;
	local->attempt_duration_count++;
	local->attempt_duration_sum += seconds;
}

/* Record the time from queueing to a message's first attempt. */
void
bw_stats_local_queue_latency(BwOutboundStats *local, double seconds)
{
	local->queue_latency_buckets[latency_bucket(seconds)]++;
	local->queue_latency_count++;
	local->queue_latency_sum += seconds;
}

/* Fold the outbound worker's counters into shared memory and zero them. */
void
bw_stats_outbound_flush(BwOutboundStats *local)
{
	if (bw_shared == NULL || (local->nattempts == 0 && local->queue_latency_count == 0 &&
							  local->delivered == 0 && local->dead == 0))
	{
		memset(local, 0, sizeof(*local));
		return;
	}
	if (local->delivered > 0)
		pg_atomic_fetch_add_u64(&bw_shared->outbox[1], local->delivered);
	if (local->dead > 0)
		pg_atomic_fetch_add_u64(&bw_shared->outbox[2], local->dead);
	LWLockAcquire(bw_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < local->nattempts; i++)
	{
		BwAttemptCounter *lc = &local->attempts[i];
		int			j;

		for (j = 0; j < bw_shared->nattempts; j++)
		{
			if (strcmp(bw_shared->attempts[j].endpoint, lc->endpoint) == 0 &&
				strcmp(bw_shared->attempts[j].cls, lc->cls) == 0)
				break;
		}
		if (j == bw_shared->nattempts)
		{
			if (j == BW_MAX_ATTEMPT_COUNTERS)
				continue;
			bw_shared->attempts[j] = *lc;
			bw_shared->attempts[j].count = 0;
			bw_shared->nattempts++;
		}
		bw_shared->attempts[j].count += lc->count;
	}
	for (int i = 0; i <= BW_LATENCY_BUCKETS; i++)
	{
		bw_shared->queue_latency_buckets[i] += local->queue_latency_buckets[i];
		bw_shared->attempt_duration_buckets[i] += local->attempt_duration_buckets[i];
	}
	bw_shared->queue_latency_count += local->queue_latency_count;
	bw_shared->queue_latency_sum += local->queue_latency_sum;
	bw_shared->attempt_duration_count += local->attempt_duration_count;
	bw_shared->attempt_duration_sum += local->attempt_duration_sum;
	LWLockRelease(bw_shared->lock);
	memset(local, 0, sizeof(*local));
}

/* Wake a worker when the current transaction commits. */
void
bw_wake_at_commit(BwWorkerLatch which)
{
	if (bw_shared == NULL)
		return;
	register_callback();
	pending_wake[which] = true;
}

/*
 * The configuration the listener caches (webhook paths, forwarding
 * endpoints) changes when the current transaction commits.
 */
void
bw_config_changed_at_commit(void)
{
	if (bw_shared == NULL)
		return;
	register_callback();
	pending_config_bump = true;
}

/* The configuration generation; 0 without shared memory. */
uint64
bw_config_generation(void)
{
	if (bw_shared == NULL)
		return 0;
	return pg_atomic_read_u64(&bw_shared->config_generation);
}

/*
 * May one more unverified delivery (an installation check, or a rejected
 * one) of this webhook be written to the events log?  A token bucket per
 * webhook, shared by every backend: per_minute tokens a minute, as many in
 * a burst.  When it says no, the delivery is still answered, counted under
 * its webhook and state, and not logged.
 */
bool
bw_unverified_allowed(int32 webhook_id, const char *webhook, const char *state,
					  int per_minute)
{
	TimestampTz now;
	BwRateSlot *slot = NULL;
	BwRateSlot *oldest = NULL;
	bool		allowed;

	if (bw_shared == NULL || per_minute < 0)
		return true;

	now = GetCurrentTimestamp();
	LWLockAcquire(bw_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < BW_MAX_RATE_SLOTS; i++)
	{
		BwRateSlot *s = &bw_shared->rate[i];

		if (s->webhook_id == webhook_id)
		{
			slot = s;
			break;
		}
		if (oldest == NULL || s->webhook_id == 0 ||
			(oldest->webhook_id != 0 && s->refilled_at < oldest->refilled_at))
			oldest = s;
	}
	if (slot == NULL)
	{
		/* a new webhook takes a free slot, or the one idle the longest */
		slot = oldest;
		slot->webhook_id = webhook_id;
		slot->tokens = per_minute;
		slot->refilled_at = now;
	}
	else
	{
		double		secs = (double) (now - slot->refilled_at) / USECS_PER_SEC;

		slot->tokens = Min((double) per_minute,
						   slot->tokens + secs * per_minute / 60.0);
		slot->refilled_at = now;
	}
	allowed = slot->tokens >= 1.0;
	if (allowed)
		slot->tokens -= 1.0;
	else
	{
		int			j;

		for (j = 0; j < bw_shared->nunlogged; j++)
		{
			BwUnloggedCounter *c = &bw_shared->unlogged[j];

			if (strcmp(c->webhook, webhook) == 0 && strcmp(c->state, state) == 0)
				break;
		}
		if (j == bw_shared->nunlogged && j < BW_MAX_UNLOGGED_COUNTERS)
		{
			strlcpy(bw_shared->unlogged[j].webhook, webhook,
					sizeof(bw_shared->unlogged[j].webhook));
			strlcpy(bw_shared->unlogged[j].state, state,
					sizeof(bw_shared->unlogged[j].state));
			bw_shared->unlogged[j].count = 0;
			bw_shared->nunlogged++;
		}
		if (j < BW_MAX_UNLOGGED_COUNTERS)
			bw_shared->unlogged[j].count++;
	}
	LWLockRelease(bw_shared->lock);
	return allowed;
}

/*
 * Fold a worker's local counters into shared memory and zero them.
 */
void
bw_stats_flush(BwLocalStats *local)
{
	TimestampTz now;

	if (bw_shared == NULL)
	{
		memset(local, 0, sizeof(*local));
		return;
	}
	if (local->nrequests == 0 && local->batch_count == 0 &&
		local->connections_refused == 0 && local->latency_count == 0)
	{
		bool		any_tls = false;

		for (int i = 0; i < BW_NTLS_FAILURES; i++)
			any_tls |= local->tls_failures[i] > 0;
		if (!any_tls)
			return;
	}

	if (local->connections_refused > 0)
		pg_atomic_fetch_add_u64(&bw_shared->connections_refused,
								local->connections_refused);
	for (int i = 0; i < BW_NTLS_FAILURES; i++)
	{
		if (local->tls_failures[i] > 0)
			pg_atomic_fetch_add_u64(&bw_shared->tls_failures[i],
									local->tls_failures[i]);
	}

	now = GetCurrentTimestamp();
	LWLockAcquire(bw_shared->lock, LW_EXCLUSIVE);
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
		if (lc->status >= 200 && lc->status < 300 && lc->webhook[0] != '\0')
			bw_shared->requests[j].last_at = now;
	}
	for (int i = 0; i <= BW_BATCH_BUCKETS; i++)
		bw_shared->batch_buckets[i] += local->batch_buckets[i];
	bw_shared->batch_count += local->batch_count;
	bw_shared->batch_sum += local->batch_sum;
	for (int i = 0; i <= BW_LATENCY_BUCKETS; i++)
		bw_shared->latency_buckets[i] += local->latency_buckets[i];
	bw_shared->latency_count += local->latency_count;
	bw_shared->latency_sum += local->latency_sum;
	LWLockRelease(bw_shared->lock);

	memset(local, 0, sizeof(*local));
}

/*
 * After a restart: the newest accepted delivery of a webhook, as the events
 * log knows it, unless a newer one has been counted since.
 */
void
bw_stats_seed_delivery(const char *webhook, TimestampTz at)
{
	int			j;

	if (bw_shared == NULL || webhook == NULL || webhook[0] == '\0')
		return;
	LWLockAcquire(bw_shared->lock, LW_EXCLUSIVE);
	for (j = 0; j < bw_shared->nrequests; j++)
	{
		BwRequestCounter *sc = &bw_shared->requests[j];

		if (sc->status == 200 && strcmp(sc->webhook, webhook) == 0)
			break;
	}
	if (j == bw_shared->nrequests && j < BW_MAX_REQUEST_COUNTERS)
	{
		memset(&bw_shared->requests[j], 0, sizeof(BwRequestCounter));
		strlcpy(bw_shared->requests[j].webhook, webhook, sizeof(bw_shared->requests[j].webhook));
		bw_shared->requests[j].status = 200;
		bw_shared->nrequests++;
	}
	if (j < BW_MAX_REQUEST_COUNTERS && bw_shared->requests[j].last_at < at)
		bw_shared->requests[j].last_at = at;
	LWLockRelease(bw_shared->lock);
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
	pg_atomic_write_u32(&bw_shared->open_connections[listener], (uint32) n);
}

/*
 * Publish (or, with NULL, withdraw) the latch through which a worker is
 * woken.  Withdrawing only clears it if it is still ours.
 */
void
bw_set_worker_latch(BwWorkerLatch which, Latch *latch)
{
	if (bw_shared == NULL)
		return;
	SpinLockAcquire(&bw_shared->mutex);
	if (latch != NULL)
		bw_shared->latches[which] = latch;
	else if (bw_shared->latches[which] == MyLatch)
		bw_shared->latches[which] = NULL;
	SpinLockRelease(&bw_shared->mutex);
}

/*
 * Wake a worker, if it runs.  Setting a latch is cheap and safe from any
 * backend.
 */
void
bw_wake_worker(BwWorkerLatch which)
{
	Latch	   *latch;

	if (bw_shared == NULL)
		return;
	SpinLockAcquire(&bw_shared->mutex);
	latch = bw_shared->latches[which];
	SpinLockRelease(&bw_shared->mutex);
	if (latch != NULL)
		SetLatch(latch);
}

/* Kept for the dispatcher's callers. */
void
bw_wake_dispatcher(void)
{
	bw_wake_worker(BW_LATCH_DISPATCHER);
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
	uint64		open = 0;
	static const char *const tls_reasons[BW_NTLS_FAILURES] = {
		"handshake", "protocol_version", "unknown_ca"
	};

	InitMaterializedSRF(fcinfo, 0);
	if (bw_shared == NULL)
		PG_RETURN_VOID();

	/* the tables and histograms under the lock; atomics need none */
	snap = palloc(sizeof(BwShared));
	LWLockAcquire(bw_shared->lock, LW_SHARED);
	memcpy(snap, bw_shared, sizeof(BwShared));
	LWLockRelease(bw_shared->lock);

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
		put_row(rsinfo, "events_total", labels,
				(double) pg_atomic_read_u64(&bw_shared->events[i]));
	}
	for (int i = 0; i < snap->nunlogged; i++)
	{
		StringInfoData labels;

		initStringInfo(&labels);
		appendStringInfoString(&labels, "{\"webhook\": ");
		escape_json(&labels, snap->unlogged[i].webhook);
		appendStringInfoString(&labels, ", \"state\": ");
		escape_json(&labels, snap->unlogged[i].state);
		appendStringInfoChar(&labels, '}');
		put_row(rsinfo, "unlogged_deliveries_total", labels.data,
				(double) snap->unlogged[i].count);
	}
	put_histogram(rsinfo, "batch_size", bw_batch_bounds, BW_BATCH_BUCKETS,
				  snap->batch_buckets, snap->batch_count, (double) snap->batch_sum);
	put_histogram(rsinfo, "request_duration_seconds", bw_latency_bounds,
				  BW_LATENCY_BUCKETS, snap->latency_buckets, snap->latency_count,
				  snap->latency_sum);
	for (int i = 0; i < BW_MAX_LISTENERS; i++)
		open += pg_atomic_read_u32(&bw_shared->open_connections[i]);
	put_row(rsinfo, "open_connections", NULL, (double) open);
	for (int i = 0; i < BW_NOUTBOX_STATES; i++)
	{
		char		labels[64];

		snprintf(labels, sizeof(labels), "{\"state\": \"%s\"}", outbox_states[i]);
		put_row(rsinfo, "outbox_messages_total", labels,
				(double) pg_atomic_read_u64(&bw_shared->outbox[i]));
	}
	for (int i = 0; i < snap->nattempts; i++)
	{
		StringInfoData labels;

		initStringInfo(&labels);
		appendStringInfoString(&labels, "{\"endpoint\": ");
		escape_json(&labels, snap->attempts[i].endpoint);
		appendStringInfo(&labels, ", \"class\": \"%s\"}", snap->attempts[i].cls);
		put_row(rsinfo, "outbox_attempts_total", labels.data, (double) snap->attempts[i].count);
	}
	put_histogram(rsinfo, "outbox_queue_latency_seconds", bw_latency_bounds,
				  BW_LATENCY_BUCKETS, snap->queue_latency_buckets,
				  snap->queue_latency_count, snap->queue_latency_sum);
	put_histogram(rsinfo, "outbox_attempt_duration_seconds", bw_latency_bounds,
				  BW_LATENCY_BUCKETS, snap->attempt_duration_buckets,
				  snap->attempt_duration_count, snap->attempt_duration_sum);
	/* the newest accepted delivery of each webhook */
	{
		TimestampTz now = GetCurrentTimestamp();

		for (int i = 0; i < snap->nrequests; i++)
		{
			TimestampTz newest = 0;
			bool		first = true;
			StringInfoData labels;

			if (snap->requests[i].webhook[0] == '\0' || snap->requests[i].last_at == 0)
				continue;
			/* once per webhook: at its first row that has a time */
			for (int j = 0; j < snap->nrequests; j++)
			{
				if (strcmp(snap->requests[j].webhook, snap->requests[i].webhook) != 0 ||
					snap->requests[j].last_at == 0)
					continue;
				if (j < i)
					first = false;
				newest = Max(newest, snap->requests[j].last_at);
			}
			if (!first)
				continue;
			initStringInfo(&labels);
			appendStringInfoString(&labels, "{\"webhook\": ");
			escape_json(&labels, snap->requests[i].webhook);
			appendStringInfoChar(&labels, '}');
			put_row(rsinfo, "newest_delivery_age_seconds", labels.data,
					Max(0.0, (double) (now - newest) / 1000000.0));
		}
	}
	for (int e = 0; e < BW_NENVIRONMENTS; e++)
	{
		static const char *const envs[BW_NENVIRONMENTS] = {"live", "test"};
		static const char *const outcomes[BW_NRECONCILE_OUTCOMES] = {
			"healed", "backfilled", "unchanged", "refused", "skipped"
		};

		for (int r = 0; r < BW_API_NRESULTS; r++)
		{
			char		labels[96];

			snprintf(labels, sizeof(labels), "{\"environment\": \"%s\", \"result\": \"%s\"}",
					 envs[e], bw_api_result_name((BwApiResult) r));
			put_row(rsinfo, "api_requests_total", labels,
					(double) pg_atomic_read_u64(&bw_shared->api_requests[e][r]));
		}
		for (int r = 0; r < BW_NRECONCILE_OUTCOMES; r++)
		{
			char		labels[96];

			snprintf(labels, sizeof(labels), "{\"environment\": \"%s\", \"outcome\": \"%s\"}",
					 envs[e], outcomes[r]);
			put_row(rsinfo, "reconciled_orders_total", labels,
					(double) pg_atomic_read_u64(&bw_shared->reconciled[e][r]));
		}
	}
	put_row(rsinfo, "connections_refused_total", NULL,
			(double) pg_atomic_read_u64(&bw_shared->connections_refused));
	for (int i = 0; i < BW_NTLS_FAILURES; i++)
	{
		char		labels[64];

		snprintf(labels, sizeof(labels), "{\"reason\": \"%s\"}", tls_reasons[i]);
		put_row(rsinfo, "tls_handshake_failures_total", labels,
				(double) pg_atomic_read_u64(&bw_shared->tls_failures[i]));
	}

	PG_RETURN_VOID();
}
