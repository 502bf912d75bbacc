/*-------------------------------------------------------------------------
 *
 * reconcile.h
 *	  The reconciliation room: Biteship API keys, the pacing and backoff of
 *	  API requests shared by every process, the request itself, and the
 *	  record of each order's last fetch (order_syncs).
 *
 * sync_order() and sync_orders() (in backends) and the reconciler worker
 * (reconciler.c) build on this.  The answers are applied by the ingest core
 * (bw_ingest_api_answer); the listener knows nothing of this room.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BW_RECONCILE_H
#define BW_RECONCILE_H

#include "postgres.h"

#include "datatype/timestamp.h"

#include "biteship_api.h"
#include "biteship_webhook.h"
#include "curl_engine.h"

/* reconciled_orders_total outcomes, indexes into BwShared.reconciled */
#define BW_RECONCILED_HEALED		0
#define BW_RECONCILED_BACKFILLED	1
#define BW_RECONCILED_UNCHANGED		2
#define BW_RECONCILED_REFUSED		3
#define BW_RECONCILED_SKIPPED		4

/* a request's response body is kept up to this */
#define BW_API_MAX_BODY			(1024 * 1024)

/* 0 for 'live', 1 for 'test', -1 otherwise */
extern int	bw_env_index(const char *environment);

/* An API request being made; its strings live in cxt. */
typedef struct BwApiRequest
{
	BwHttpCall	call;
	char	   *environment;
	char	   *order_id;
	MemoryContext cxt;			/* the request's own; deleted when done */
	char	   *key;			/* for redaction of the answer */
	TimestampTz key_version;	/* the key's api_keys.updated_at */
	char	   *reason;			/* backfill, stale, retry or manual */
	int			attempts;		/* failed fetches before this one */
	const char *headers[2];
	TimestampTz started_at;
} BwApiRequest;

/* The key of an environment (palloc'd), or NULL; *updated_at too. */
extern char *bw_api_key_load(const char *environment, TimestampTz *updated_at);

/*
 * A request for GET /v1/orders/{order_id}, in a memory context of its own
 * (a child of parent); free it with bw_api_request_free once done.
 */
extern BwApiRequest *bw_api_request_new(MemoryContext parent, const char *environment,
										const char *order_id, const char *key,
										TimestampTz key_version, const char *reason,
										int attempts);
extern void bw_api_request_free(BwApiRequest *req);

/* Is this key (by its version) usable: not refused, or due a probe? */
extern bool bw_api_key_usable(int env, TimestampTz key_version);

/*
 * Pacing and backoff, in shared memory (per process when the library is
 * not preloaded).  bw_api_try_slot takes the next slot if it has come
 * (true), or says in how many ms to ask again; it never waits.
 */
extern bool bw_api_try_slot(int env, long *wait_ms);
extern TimestampTz bw_api_paused_until(int env);

/* Count a result, and move the backoff and the key state accordingly. */
extern void bw_api_note_result(int env, BwApiResult r, const char *retry_after,
							   TimestampTz key_version);

/* Count a reconciled order's outcome. */
extern void bw_api_count_reconciled(int env, int outcome);

/*
 * Turn a finished request into an answer for the ingest core (body with
 * the key redacted), ingest it, and record the fetch on order_syncs.  In a
 * transaction.  Returns the result; *a is filled when an HTTP answer came.
 * A result worth retrying requeues the order, after next_retry.
 */
extern BwApiResult bw_api_finish(BwApiRequest *req, BwApiAnswer *a,
								 bool *have_answer);

/* Record a skipped order (no key, key refused) on order_syncs. */
extern void bw_api_record_skip(const char *environment, const char *order_id,
							   BwApiResult why);

#endif							/* BW_RECONCILE_H */
