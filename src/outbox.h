/*-------------------------------------------------------------------------
 *
 * outbox.h
 *	  The outbox room: endpoints and messages as the sender sees them, and
 *	  the statements that load, claim and record them.
 *
 * The SQL-facing functions (create_endpoint, send, retry_message, ...) and
 * the forwarding of applied events live in outbox.c too; the sender loop
 * that drives the libcurl engine lives in outbound.c.  The ingest core
 * knows nothing of this room: forwarding hangs on its after-apply hook.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BW_OUTBOX_H
#define BW_OUTBOX_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "signing.h"

/* An endpoint, as the sender needs it. */
typedef struct BwEndpoint
{
	int32		id;
	char	   *name;
	char	   *url;
	char	  **header_lines;	/* "Name: value" */
	char	  **header_names;	/* lower-cased, to let no message override */
	int			nheaders;
	bool		has_key;
	BwSigningKey key;
	bool		has_old_key;	/* the previous secret, still signed with */
	BwSigningKey old_key;
	TimestampTz old_key_expires;
	long		timeout_ms;
	int			max_attempts;
	bool		enabled;
	/* the sender's own bookkeeping */
	int			inflight;
	bool		touched;		/* had an outcome this turn */
	bool		any_success;
	bool		any_failure;
	bool		gone;			/* answered 410 this turn */
} BwEndpoint;

/* A claimed message. */
typedef struct BwOutboxMessage
{
	int64		id;
	int32		endpoint_id;
	char	   *body;
	size_t		body_len;
	char	   *content_type;
	char	  **header_lines;	/* the message's own headers */
	char	  **header_names;
	int			nheaders;
	int			attempts;		/* made so far, in all */
	int			attempts_since_retry;
	TimestampTz queued_at;
	bool		first_attempt;
} BwOutboxMessage;

/* The outcome of one attempt, to record. */
typedef struct BwOutboxResult
{
	int64		id;
	int32		endpoint_id;
	int			attempt;		/* its number, from 1 */
	const char *state;			/* pending, delivered, dead */
	TimestampTz next_attempt_at;
	TimestampTz started_at;
	TimestampTz finished_at;
	long		status;			/* 0: none */
	char	   *error;			/* NULL when delivered */
	char	   *response_headers;
	char	   *response_body;
} BwOutboxResult;

/* outbox.c: the sender's statements (in the caller's transaction) */
extern BwEndpoint *bw_outbox_load_endpoints(int *nendpoints, MemoryContext cxt);
extern int	bw_outbox_claim(const BwEndpoint *ep, int limit, const int64 *inflight,
							int ninflight, BwOutboxMessage *out, MemoryContext cxt);
extern TimestampTz bw_outbox_next_due(const int32 *endpoint_ids, int nids,
									   const int64 *exclude, int nexclude);
extern void bw_outbox_record(const BwOutboxResult *results, int nresults);
extern void bw_outbox_endpoint_outcomes(BwEndpoint *eps, int neps);
extern int64 bw_outbox_purge_batch(int retention_s, int limit);

/* outbox.c: set up the forwarding of applied events (from _PG_init) */
extern void bw_outbox_init(void);

/* outbound.c */
extern PGDLLEXPORT void bw_outbound_main(Datum main_arg);

#endif							/* BW_OUTBOX_H */
