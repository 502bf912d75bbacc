/*-------------------------------------------------------------------------
 *
 * stats.h
 *	  Layout of biteship_webhook's shared memory: counters and histograms,
 *	  the workers' latches, the configuration generation and the rate
 *	  limiter of unverified deliveries.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BW_STATS_H
#define BW_STATS_H

#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/spin.h"
#include "datatype/timestamp.h"

#include "biteship_api.h"

#define BW_MAX_REQUEST_COUNTERS	256
#define BW_MAX_UNLOGGED_COUNTERS 64
#define BW_MAX_RATE_SLOTS		64
#define BW_MAX_LISTENERS		16
#define BW_NEVENT_STATES		7
#define BW_BATCH_BUCKETS		9
#define BW_LATENCY_BUCKETS		14
#define BW_NTLS_FAILURES		3

/* reasons a TLS handshake failed, indexes into tls_failures[] */
#define BW_TLS_FAIL_HANDSHAKE	0
#define BW_TLS_FAIL_PROTOCOL	1
#define BW_TLS_FAIL_UNKNOWN_CA	2

/* workers that others wake through their latch */
typedef enum BwWorkerLatch
{
	BW_LATCH_DISPATCHER,
	BW_LATCH_OUTBOUND,
	BW_LATCH_RECONCILER,
	BW_NLATCHES
} BwWorkerLatch;

/* outbox message transitions, indexes into outbox[] */
#define BW_NOUTBOX_STATES		3	/* queued, delivered, dead */
#define BW_MAX_ATTEMPT_COUNTERS	128

/* outbox attempts by endpoint and status class */
typedef struct BwAttemptCounter
{
	char		endpoint[64];
	char		cls[8];			/* 2xx, 3xx, 4xx, 5xx, error */
	uint64		count;
} BwAttemptCounter;

typedef struct BwRequestCounter
{
	char		webhook[64];	/* webhook name; "" for other paths */
	int			status;
	uint64		count;
	TimestampTz last_at;		/* the newest such answer (shared only) */
} BwRequestCounter;

/* reconciliation: per environment (0 live, 1 test) */
#define BW_NENVIRONMENTS		2
#define BW_NRECONCILE_OUTCOMES	5	/* healed, backfilled, unchanged,
									 * refused, skipped */

typedef struct BwApiPace
{
	int64		next_slot;		/* pacing: the earliest start of the next
								 * request (microseconds, Unix epoch) */
	TimestampTz paused_until;	/* 429 and error backoff */
	int			backoff;		/* errors in a row */
	TimestampTz key_refused_at; /* Biteship refused the key; 0 = not */
	TimestampTz key_refused_version;	/* that key's api_keys.updated_at */
} BwApiPace;

/* deliveries answered but not logged, because of the rate limit */
typedef struct BwUnloggedCounter
{
	char		webhook[64];
	char		state[16];		/* ping or rejected */
	uint64		count;
} BwUnloggedCounter;

/* token bucket of one webhook's unverified deliveries */
typedef struct BwRateSlot
{
	int32		webhook_id;		/* 0 = free */
	double		tokens;
	TimestampTz refilled_at;
} BwRateSlot;

typedef struct BwShared
{
	/* protects the latch pointers only (short, fixed-size critical sections) */
	slock_t		mutex;
	Latch	   *latches[BW_NLATCHES];

	/* protects everything below that is not atomic */
	LWLock	   *lock;

	/* bumped at commit whenever webhooks (or endpoints) change */
	pg_atomic_uint64 config_generation;

	pg_atomic_uint64 events[BW_NEVENT_STATES];
	pg_atomic_uint64 connections_refused;
	pg_atomic_uint64 tls_failures[BW_NTLS_FAILURES];
	pg_atomic_uint32 open_connections[BW_MAX_LISTENERS];

	int			nrequests;
	BwRequestCounter requests[BW_MAX_REQUEST_COUNTERS];
	uint64		batch_buckets[BW_BATCH_BUCKETS + 1];
	uint64		batch_count;
	uint64		batch_sum;
	uint64		latency_buckets[BW_LATENCY_BUCKETS + 1];
	uint64		latency_count;
	double		latency_sum;

	int			nunlogged;
	BwUnloggedCounter unlogged[BW_MAX_UNLOGGED_COUNTERS];
	BwRateSlot	rate[BW_MAX_RATE_SLOTS];

	/* the outbox */
	pg_atomic_uint64 outbox[BW_NOUTBOX_STATES];
	int			nattempts;
	BwAttemptCounter attempts[BW_MAX_ATTEMPT_COUNTERS];
	uint64		queue_latency_buckets[BW_LATENCY_BUCKETS + 1];
	uint64		queue_latency_count;
	double		queue_latency_sum;
	uint64		attempt_duration_buckets[BW_LATENCY_BUCKETS + 1];
	uint64		attempt_duration_count;
	double		attempt_duration_sum;

	/* reconciliation; api[] under api_mutex */
	slock_t		api_mutex;
	BwApiPace	api[BW_NENVIRONMENTS];
	pg_atomic_uint64 api_requests[BW_NENVIRONMENTS][BW_API_NRESULTS];
	pg_atomic_uint64 reconciled[BW_NENVIRONMENTS][BW_NRECONCILE_OUTCOMES];
} BwShared;

/* The outbound worker's counters between two flushes. */
typedef struct BwOutboundStats
{
	int			nattempts;
	BwAttemptCounter attempts[BW_MAX_ATTEMPT_COUNTERS];
	uint64		queue_latency_buckets[BW_LATENCY_BUCKETS + 1];
	uint64		queue_latency_count;
	double		queue_latency_sum;
	uint64		attempt_duration_buckets[BW_LATENCY_BUCKETS + 1];
	uint64		attempt_duration_count;
	double		attempt_duration_sum;
	uint64		delivered;
	uint64		dead;
} BwOutboundStats;

/* A worker's counters between two flushes. */
typedef struct BwLocalStats
{
	int			nrequests;
	BwRequestCounter requests[BW_MAX_REQUEST_COUNTERS];
	uint64		batch_buckets[BW_BATCH_BUCKETS + 1];
	uint64		batch_count;
	uint64		batch_sum;
	uint64		latency_buckets[BW_LATENCY_BUCKETS + 1];
	uint64		latency_count;
	double		latency_sum;
	uint64		connections_refused;
	uint64		tls_failures[BW_NTLS_FAILURES];
} BwLocalStats;

extern BwShared *bw_shared;

extern void bw_stats_flush(BwLocalStats *local);
extern void bw_stats_local_request(BwLocalStats *local, const char *webhook,
								   int status, double seconds);
extern void bw_stats_local_batch(BwLocalStats *local, int size);
extern void bw_stats_set_connections(int listener, int n);

extern void bw_set_worker_latch(BwWorkerLatch which, Latch *latch);
extern void bw_wake_worker(BwWorkerLatch which);
extern void bw_wake_at_commit(BwWorkerLatch which);

extern void bw_stats_count_outbox(const char *state);
extern void bw_stats_local_attempt(BwOutboundStats *local, const char *endpoint,
								   long http_status, double seconds);
extern void bw_stats_local_queue_latency(BwOutboundStats *local, double seconds);
extern void bw_stats_outbound_flush(BwOutboundStats *local);
extern bool bw_config_changed_locally(void);
extern void bw_stats_seed_delivery(const char *webhook, TimestampTz at);

#endif							/* BW_STATS_H */
