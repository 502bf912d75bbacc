/*-------------------------------------------------------------------------
 *
 * stats.h
 *	  Layout of biteship_webhook's shared memory: counters, histograms and
 *	  the dispatcher's latch.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BW_STATS_H
#define BW_STATS_H

#include "storage/latch.h"
#include "storage/spin.h"

#define BW_MAX_REQUEST_COUNTERS	256
#define BW_MAX_LISTENERS		16
#define BW_NEVENT_STATES		7
#define BW_BATCH_BUCKETS		9
#define BW_LATENCY_BUCKETS		14
#define BW_NTLS_FAILURES		3

/* reasons a TLS handshake failed, indexes into tls_failures[] */
#define BW_TLS_FAIL_HANDSHAKE	0
#define BW_TLS_FAIL_PROTOCOL	1
#define BW_TLS_FAIL_UNKNOWN_CA	2

typedef struct BwRequestCounter
{
	char		webhook[64];	/* webhook name; "" for other paths */
	int			status;
	uint64		count;
} BwRequestCounter;

typedef struct BwShared
{
	slock_t		mutex;
	Latch	   *dispatcher_latch;
	int			nrequests;
	BwRequestCounter requests[BW_MAX_REQUEST_COUNTERS];
	uint64		events[BW_NEVENT_STATES];
	uint64		batch_buckets[BW_BATCH_BUCKETS + 1];
	uint64		batch_count;
	uint64		batch_sum;
	uint64		latency_buckets[BW_LATENCY_BUCKETS + 1];
	uint64		latency_count;
	double		latency_sum;
	int			open_connections[BW_MAX_LISTENERS];
	uint64		connections_refused;
	uint64		tls_failures[BW_NTLS_FAILURES];
} BwShared;

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

#endif							/* BW_STATS_H */
