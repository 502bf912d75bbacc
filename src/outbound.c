/*-------------------------------------------------------------------------
 *
 * outbound.c
 *	  The outbound background worker: the sender loop of the outbox on the
 *	  libcurl engine.
 *
 * One WaitEventSet holds the latch (with postmaster death) and the engine's
 * private epoll fd; the wait's timeout is the earliest of the engine's
 * timer, the next message that falls due, and the retention purge.  Each
 * turn:
 *
 *	  - the engine services its sockets and reports the calls that finished;
 *	  - one short transaction records those outcomes (one set-based UPDATE of
 *		the messages, one INSERT of the attempts), notes what they mean for
 *		their endpoints, and claims due messages for every free slot;
 *	  - after COMMIT, the claimed messages are signed and handed to the
 *		engine.
 *
 * A finished call frees its slot at once and the next turn refills it, so
 * a slow endpoint never holds back the others; concurrency is bounded in
 * total and per endpoint.  No network wait ever happens inside a
 * transaction, and no transaction outlives its turn.  Whoever commits a new
 * message sets our latch at commit (send(), forwarding, retry_message),
 * so there is no polling; otherwise the worker sleeps until the next
 * message falls due.
 *
 * What is in flight is kept only here, in memory.  A crash or an immediate
 * shutdown loses nothing that was committed: a message whose outcome was
 * not recorded is still pending, and is sent again after the restart with
 * the same webhook-id (at-least-once delivery).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>
#include <time.h>

#include "access/xact.h"
#include "catalog/namespace.h"
#include "common/pg_prng.h"
#include "access/xlog.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "biteship_webhook.h"
#include "curl_engine.h"
#include "outbound_policy.h"
#include "outbox.h"
#include "route.h"
#include "signing.h"
#include "stats.h"

#define PURGE_BATCH			1000
#define MAX_PURGE_INTERVAL_S 3600
#define ERROR_BACKOFF_MS	1000
#define NOT_READY_MS		1000

/* Messages claimed in one turn share a memory context, freed with the last. */
typedef struct ClaimBatch
{
	MemoryContext cxt;
	int			refs;
} ClaimBatch;

/* One message in flight. */
typedef struct Slot
{
	BwHttpCall	call;
	ClaimBatch *batch;
	int64		message_id;
	int32		endpoint_id;
	char	   *endpoint_name;
	int			attempt;		/* the number of this attempt, from 1 */
	int			attempts_since_retry;	/* before this one */
	int			max_attempts;
	TimestampTz started_at;
	TimestampTz queued_at;
	bool		first_attempt;
	char		msg_id[32];
	struct Slot *prev;
	struct Slot *next;
} Slot;

static BwCurlEngine *engine = NULL;
static Slot *active = NULL;
static int	nactive = 0;

static MemoryContext eps_cxt = NULL;
static BwEndpoint *eps = NULL;
static int	neps = 0;
static bool eps_loaded = false;
static uint64 eps_generation = 0;

static int64 schedule[BW_MAX_RETRY_STEPS];
static int	nschedule = 0;

static bool want_claim = true;
static TimestampTz next_due = 0;	/* 0: nothing scheduled */
static TimestampTz not_ready_until = 0;
static TimestampTz next_purge = 0;
static BwOutboundStats local_stats;
static MemoryContext loop_cxt = NULL;

/* Forget our latch in shared memory on exit. */
static void
clear_latch(int code, Datum arg)
{
	bw_set_worker_latch(BW_LATCH_OUTBOUND, NULL);
}

/* The retry schedule, from its setting (validated by the check hook). */
static void
load_schedule(void)
{
	const char *bad;

	if (!bw_retry_schedule_parse(bw_outbox_retry_schedule, schedule, &nschedule, &bad))
	{
		schedule[0] = 0;
		nschedule = 1;
	}
}

static BwEndpoint *
find_endpoint(int32 id)
{
	for (int i = 0; i < neps; i++)
	{
		if (eps[i].id == id)
			return &eps[i];
	}
	return NULL;
}

/*
 * Reload the endpoints when the configuration generation has moved,
 * keeping the count of what is in flight to each.
 */
static void
reload_endpoints_if_changed(void)
{
	uint64		gen = bw_config_generation();
	MemoryContext newcxt;
	BwEndpoint *neweps;
	int			n;

	if (eps_loaded && gen == eps_generation && gen != 0)
		return;
	newcxt = AllocSetContextCreate(TopMemoryContext, "biteship_webhook endpoints",
								   ALLOCSET_SMALL_SIZES);
	neweps = bw_outbox_load_endpoints(&n, newcxt);
	for (Slot *s = active; s != NULL; s = s->next)
	{
		for (int i = 0; i < n; i++)
		{
			if (neweps[i].id == s->endpoint_id)
				neweps[i].inflight++;
		}
	}
	if (eps_cxt != NULL)
		MemoryContextDelete(eps_cxt);
	eps_cxt = newcxt;
	eps = neweps;
	neps = n;
	eps_loaded = true;
	eps_generation = gen;
}

/* The ids of the messages in flight. */
static int64 *
inflight_ids(int *n)
{
	int64	   *ids = palloc(sizeof(int64) * Max(nactive, 1));
	int			k = 0;

	for (Slot *s = active; s != NULL; s = s->next)
		ids[k++] = s->message_id;
	*n = k;
	return ids;
}

/*
 * Keep a response's headers for the attempts table: credentials redacted
 * (a Set-Cookie, an echoed token), valid text only.
 */
static char *
clean_headers(const char *raw, size_t len)
{
	StringInfoData out;
	const char *p = raw;
	const char *end = raw + len;

	if (raw == NULL || len == 0)
		return NULL;
	initStringInfo(&out);
	while (p < end)
	{
		const char *eol = memchr(p, '\n', end - p);
		size_t		linelen = (eol ? eol : end) - p;
		const char *colon = memchr(p, ':', linelen);

		while (linelen > 0 && (p[linelen - 1] == '\r' || p[linelen - 1] == '\n'))
			linelen--;
		if (linelen > 0)
		{
			char	   *name = colon ? pnstrdup(p, colon - p) : NULL;

			if (name != NULL && bw_header_is_secret(name, NULL))
				appendStringInfo(&out, "%s: [redacted]\n", name);
			else
			{
				appendBinaryStringInfo(&out, p, (int) linelen);
				appendStringInfoChar(&out, '\n');
			}
		}
		if (eol == NULL)
			break;
		p = eol + 1;
	}
	if (!pg_verifymbstr(out.data, out.len, true))
		return pstrdup("(response headers are not valid text)");
	return out.data;
}

/* A response body for the attempts table, as text. */
static char *
clean_body(const char *raw, size_t len, bool truncated)
{
	if (raw == NULL || len == 0)
		return NULL;
	if (memchr(raw, '\0', len) != NULL || !pg_verifymbstr(raw, (int) len, true))
	{
		/* a cut may split a character: try once more without the tail */
		int			cut = pg_mbcliplen(raw, (int) len, (int) len);

		if (memchr(raw, '\0', len) != NULL || cut <= 0 ||
			!pg_verifymbstr(raw, cut, true))
			return psprintf("(%zu bytes that are not valid text)", len);
		len = (size_t) cut;
	}
	return truncated ? psprintf("%.*s...", (int) len, raw) : pnstrdup(raw, len);
}

/*
 * The endpoint's own header values, to take out of what a receiver
 * answers (it may echo the token it was sent, in an error body or a
 * header): the attempts table is readable by application roles, the
 * endpoint's headers are not.  Values shorter than 8 bytes are not looked
 * for.  Of a value with a scheme ("Authorization: Bearer <token>"), both
 * the whole value and the part after its last space are.  Returns how
 * many, in *secrets (palloc'd).
 */
#define REDACT_MIN_LEN 8

static int
endpoint_credentials(const BwEndpoint *ep, const char ***secrets)
{
	int			n = 0;

	*secrets = NULL;
	if (ep == NULL || ep->nheaders == 0)
		return 0;
	*secrets = palloc(sizeof(char *) * ep->nheaders * 2);
	for (int i = 0; i < ep->nheaders; i++)
	{
		const char *colon = strchr(ep->header_lines[i], ':');
		char	   *value;
		size_t		len;
		char	   *sp;

		if (colon == NULL)
			continue;
		colon++;
		while (*colon == ' ' || *colon == '\t')
			colon++;
		value = pstrdup(colon);
		len = strlen(value);
		while (len > 0 && (value[len - 1] == ' ' || value[len - 1] == '\t'))
			value[--len] = '\0';
		if (len >= REDACT_MIN_LEN)
			(*secrets)[n++] = value;
		sp = strrchr(value, ' ');
		if (sp != NULL && strlen(sp + 1) >= REDACT_MIN_LEN)
			(*secrets)[n++] = sp + 1;
	}
	return n;
}

/* text with every copy of the secrets taken out; NULL in, NULL out */
static char *
redact_credentials(char *text, const char **secrets, int nsecrets)
{
	size_t		outlen;
	char	   *r;
	char	   *copy;

	if (text == NULL || nsecrets == 0)
		return text;
	r = bw_redact(text, strlen(text), secrets, nsecrets, &outlen);
	if (r == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	copy = palloc(outlen + 1);
	memcpy(copy, r, outlen + 1);
	free(r);
	return copy;
}

/*
 * The outcome of a finished call, as a row to record, and what it means for
 * the counters and the endpoint.
 */
static void
outcome_of(Slot *s, BwOutboxResult *r)
{
	BwHttpCall *c = &s->call;
	BwOutcome	o = bw_outcome_classify(c->status, c->terr);
	BwEndpoint *ep = find_endpoint(s->endpoint_id);
	TimestampTz now = GetCurrentTimestamp();
	double		secs = (double) (now - s->started_at) / USECS_PER_SEC;
	const char **secrets;
	int			nsecrets;

	memset(r, 0, sizeof(*r));
	r->id = s->message_id;
	r->endpoint_id = s->endpoint_id;
	r->attempt = s->attempt;
	r->started_at = s->started_at;
	r->finished_at = now;
	r->status = c->status;
	r->next_attempt_at = now;
	nsecrets = endpoint_credentials(ep, &secrets);
	r->response_headers = redact_credentials(clean_headers(c->resp_headers,
														  c->resp_headers_len),
											 secrets, nsecrets);
	r->response_body = redact_credentials(clean_body(c->resp_body, c->resp_body_len,
													 c->resp_body_truncated),
										  secrets, nsecrets);

	if (o == BW_OUTCOME_DELIVERED)
		r->state = "delivered";
	else if (o == BW_OUTCOME_DISABLE)
		r->state = "pending";	/* waits until the endpoint is enabled */
	else if (o == BW_OUTCOME_DEAD ||
			 s->attempts_since_retry + 1 >= s->max_attempts)
		r->state = "dead";
	else
	{
		int64		delay_ms = bw_retry_delay_ms(schedule, nschedule,
												 s->attempts_since_retry + 1,
												 pg_prng_double(&pg_global_prng_state));
		int64		ra;

		/* Retry-After, when given, says when (within our cap) */
		if (c->retry_after[0] != '\0' &&
			bw_parse_retry_after(c->retry_after, (int64) time(NULL), &ra))
			delay_ms = Min(Max(ra, 1), (int64) bw_outbox_max_retry_after) * 1000;
		r->state = "pending";
		r->next_attempt_at = TimestampTzPlusMilliseconds(now, delay_ms);
	}

	if (o != BW_OUTCOME_DELIVERED)
	{
		if (c->status != 0 && c->retry_after[0] != '\0')
			r->error = psprintf("HTTP %ld (Retry-After: %s)", c->status, c->retry_after);
		else if (c->status != 0)
			r->error = psprintf("HTTP %ld", c->status);
		else
			r->error = pstrdup(c->error[0] != '\0' ? c->error : "request failed");
	}

	bw_stats_local_attempt(&local_stats, s->endpoint_name, c->status, secs);
	if (s->first_attempt)
		bw_stats_local_queue_latency(&local_stats,
									 Max(0.0, (double) (s->started_at - s->queued_at) / USECS_PER_SEC));
	if (strcmp(r->state, "delivered") == 0)
		local_stats.delivered++;
	else if (strcmp(r->state, "dead") == 0)
		local_stats.dead++;
	if (ep != NULL)
	{
		ep->touched = true;
		if (o == BW_OUTCOME_DELIVERED)
			ep->any_success = true;
		else if (o == BW_OUTCOME_DISABLE)
			ep->gone = true;
		else
			ep->any_failure = true;
	}
}

/* Forget a finished slot; the last one of a claim batch frees the batch. */
static void
release_slot(Slot *s)
{
	BwEndpoint *ep = find_endpoint(s->endpoint_id);
	ClaimBatch *b = s->batch;

	if (ep != NULL && ep->inflight > 0)
		ep->inflight--;
	if (s->prev)
		s->prev->next = s->next;
	else
		active = s->next;
	if (s->next)
		s->next->prev = s->prev;
	nactive--;
	bw_http_call_release(&s->call);
	if (--b->refs == 0)
	{
		MemoryContextDelete(b->cxt);
		pfree(b);
	}
}

/*
 * Build and start the request of one claimed message: the endpoint's
 * headers, the message's own (never overriding the endpoint's), the
 * content type, and with a signing secret the Standard Webhooks headers,
 * signed over the exact bytes sent.  Runs outside any transaction.
 */
static void
start_message(BwEndpoint *ep, BwOutboxMessage *m, ClaimBatch *b)
{
	MemoryContext old = MemoryContextSwitchTo(b->cxt);
	Slot	   *s = palloc0(sizeof(Slot));
	const char **lines = palloc(sizeof(char *) * (ep->nheaders + m->nheaders + 5));
	int			n = 0;
	int64		ts = (int64) time(NULL);
	TimestampTz now = GetCurrentTimestamp();

	s->batch = b;
	s->message_id = m->id;
	s->endpoint_id = ep->id;
	s->endpoint_name = pstrdup(ep->name);
	s->attempt = m->attempts + 1;
	s->attempts_since_retry = m->attempts_since_retry;
	s->max_attempts = ep->max_attempts;
	s->started_at = now;
	s->queued_at = m->queued_at;
	s->first_attempt = m->first_attempt;
	snprintf(s->msg_id, sizeof(s->msg_id), "msg_" INT64_FORMAT, m->id);

	for (int i = 0; i < ep->nheaders; i++)
		lines[n++] = ep->header_lines[i];
	for (int i = 0; i < m->nheaders; i++)
	{
		bool		theirs = false;

		for (int j = 0; j < ep->nheaders; j++)
			theirs |= strcmp(m->header_names[i], ep->header_names[j]) == 0;
		if (!theirs)
			lines[n++] = m->header_lines[i];
	}
	lines[n++] = psprintf("Content-Type: %s", m->content_type);
	/* the receiver's idempotency key, signed or not */
	lines[n++] = psprintf("webhook-id: %s", s->msg_id);
	lines[n++] = psprintf("webhook-timestamp: " INT64_FORMAT, ts);
	if (ep->has_key)
	{
		char		sig[BW_SIGNATURE_SIZE];
		char		oldsig[BW_SIGNATURE_SIZE];
		bool		ok = bw_sign(&ep->key, s->msg_id, ts, m->body, m->body_len,
								 sig, sizeof(sig));

		if (ok && ep->has_old_key && ep->old_key_expires > now &&
			bw_sign(&ep->old_key, s->msg_id, ts, m->body, m->body_len,
					oldsig, sizeof(oldsig)))
			lines[n++] = psprintf("webhook-signature: %s %s", sig, oldsig);
		else if (ok)
			lines[n++] = psprintf("webhook-signature: %s", sig);
		else
			elog(ERROR, "could not sign outbox message " INT64_FORMAT, m->id);
	}

	s->call.method = "POST";
	s->call.url = pstrdup(ep->url);
	s->call.headers = lines;
	s->call.nheaders = n;
	s->call.body = m->body;
	s->call.body_len = m->body_len;
	s->call.timeout_ms = ep->timeout_ms;
	s->call.connect_timeout_ms = Min(ep->timeout_ms, 10000);
	s->call.max_response_headers = bw_outbox_response_headers_limit;
	s->call.max_response_body = bw_outbox_response_body_limit;
	s->call.user = s;
	MemoryContextSwitchTo(old);

	b->refs++;
	s->next = active;
	if (active)
		active->prev = s;
	active = s;
	nactive++;
	ep->inflight++;
	if (!bw_curl_engine_start(engine, &s->call))
	{
		/* it failed at once (done, no handle): the next turn records it */
		want_claim = true;
	}
}

/*
 * Is the extension installed at a version with the outbox (0.3.0), and the
 * server writable?  (In a transaction.)  Until ALTER EXTENSION UPDATE, the
 * worker waits quietly.
 */
static bool
extension_ready(void)
{
	Oid			nsp;

	if (RecoveryInProgress() || !OidIsValid(get_extension_oid("biteship_webhook", true)))
		return false;
	nsp = get_namespace_oid("biteship_webhook", true);
	return OidIsValid(nsp) && OidIsValid(get_relname_relid("outbox", nsp));
}

/*
 * One turn's transaction: record outcomes, reload endpoints if needed, and
 * claim due messages for the free slots.  Returns the claimed messages (in
 * a claim batch) through *claimed / *nclaimed; they are started after
 * COMMIT.
 */
static void
turn_transaction(BwOutboxResult *results, int nresults, BwOutboxMessage **claimed,
				 int **claimed_ep, int *nclaimed, ClaimBatch **batch)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	volatile bool ok = false;

	*nclaimed = 0;
	*batch = NULL;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "biteship_webhook: outbox");
	PG_TRY();
	{
		if (!extension_ready())
		{
			not_ready_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														  RecoveryInProgress() ? NOT_READY_MS : 60000);
			eps_loaded = false;
		}
		else
		{
			not_ready_until = 0;
			if (nresults > 0)
			{
				bw_outbox_record(results, nresults);

				/*
				 * The outcomes were noted on the endpoints as loaded: apply
				 * them before a reload replaces those.
				 */
				bw_outbox_endpoint_outcomes(eps, neps);
			}
			reload_endpoints_if_changed();

			if (want_claim || nresults > 0)
			{
				int			free_total = bw_outbox_max_concurrency - nactive;
				int			nin;
				int64	   *in = inflight_ids(&nin);
				ClaimBatch *b = NULL;
				BwOutboxMessage *msgs = NULL;
				int		   *msg_ep = NULL;
				int			k = 0;
				int32	   *open_eps = palloc(sizeof(int32) * Max(neps, 1));
				int			nopen = 0;
				int64	   *exclude;

				if (free_total > 0)
				{
					b = MemoryContextAlloc(TopMemoryContext, sizeof(ClaimBatch));
					b->cxt = AllocSetContextCreate(TopMemoryContext,
												   "biteship_webhook outbox claim",
												   ALLOCSET_DEFAULT_SIZES);
					b->refs = 0;
					msgs = MemoryContextAlloc(b->cxt, sizeof(BwOutboxMessage) * free_total);
					msg_ep = MemoryContextAlloc(b->cxt, sizeof(int) * free_total);
				}
				for (int i = 0; i < neps && free_total > 0; i++)
				{
					BwEndpoint *ep = &eps[i];
					int			room = Min(bw_outbox_max_per_endpoint - ep->inflight, free_total);
					int			got;

					if (!ep->enabled || room <= 0)
						continue;
					got = bw_outbox_claim(ep, room, in, nin, msgs + k, b->cxt);
					for (int j = 0; j < got; j++)
						msg_ep[k + j] = i;
					k += got;
					free_total -= got;
					/* a slot left over: its next message is worth a timer */
					if (got < room)
						open_eps[nopen++] = ep->id;
				}

				/*
				 * When the next message falls due, for the endpoints with a
				 * free slot, not counting what is in flight or was just
				 * claimed.  A full endpoint (or no free slot at all) waits for
				 * a call to finish, which wakes us; a timer for it would fire
				 * at once and claim nothing, again and again.
				 */
				exclude = palloc(sizeof(int64) * (nin + k + 1));
				memcpy(exclude, in, sizeof(int64) * nin);
				for (int j = 0; j < k; j++)
					exclude[nin + j] = msgs[j].id;
				next_due = free_total > 0 ?
					bw_outbox_next_due(open_eps, nopen, exclude, nin + k) : 0;
				want_claim = false;
				if (k > 0)
				{
					*claimed = msgs;
					*claimed_ep = msg_ep;
					*nclaimed = k;
					*batch = b;
				}
				else if (b != NULL)
				{
					MemoryContextDelete(b->cxt);
					pfree(b);
				}
			}
		}
		PopActiveSnapshot();
		CommitTransactionCommand();
		ok = true;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcxt);
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		if (*batch != NULL)
		{
			MemoryContextDelete((*batch)->cxt);
			pfree(*batch);
			*batch = NULL;
		}
		*nclaimed = 0;
		/* outcomes not recorded: those messages are sent again later */
		not_ready_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ERROR_BACKOFF_MS);
		want_claim = true;
		eps_loaded = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
	pgstat_report_activity(STATE_IDLE, NULL);
	if (ok)
		pgstat_report_stat(false);
}

/* Purge delivered messages past the retention, in short transactions. */
static void
purge_if_due(void)
{
	TimestampTz now = GetCurrentTimestamp();
	int64		n;

	if (bw_outbox_retention <= 0 || now < next_purge || not_ready_until > now)
		return;
	do
	{
		n = 0;
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		PG_TRY();
		{
			if (extension_ready())
				n = bw_outbox_purge_batch(bw_outbox_retention, PURGE_BATCH);
			PopActiveSnapshot();
			CommitTransactionCommand();
		}
		PG_CATCH();
		{
			EmitErrorReport();
			FlushErrorState();
			AbortCurrentTransaction();
			n = 0;
		}
		PG_END_TRY();
		CHECK_FOR_INTERRUPTS();
	} while (n == PURGE_BATCH && !ShutdownRequestPending);
	next_purge = TimestampTzPlusMilliseconds(now,
											 (int64) Min(bw_outbox_retention, MAX_PURGE_INTERVAL_S) * 1000);
}

/* Milliseconds until the next thing is due, or -1. */
static long
compute_timeout(void)
{
	TimestampTz now = GetCurrentTimestamp();
	long		t = bw_curl_engine_timeout(engine);
	TimestampTz deadlines[3] = {next_due, not_ready_until,
	bw_outbox_retention > 0 ? next_purge : 0};

	for (int i = 0; i < 3; i++)
	{
		long		ms;

		if (deadlines[i] == 0)
			continue;
		ms = deadlines[i] <= now ? 0 : (long) ((deadlines[i] - now + 999) / 1000);
		if (t < 0 || ms < t)
			t = ms;
	}
	if (want_claim && not_ready_until <= now)
		t = 0;
	return t;
}

/*
 * Entry point of the outbound worker.
 */
void
bw_outbound_main(Datum main_arg)
{
	WaitEventSet *wes;
	BwCurlEngineOptions opts;
	char		err[256];

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(bw_database,
										 bw_role[0] != '\0' ? bw_role : NULL, 0);
	pgstat_report_appname("biteship_webhook outbound");
	bw_worker_session_settings();
	bw_set_worker_latch(BW_LATCH_OUTBOUND, MyLatch);
	on_shmem_exit(clear_latch, (Datum) 0);
	load_schedule();

	memset(&opts, 0, sizeof(opts));
	opts.max_total_connections = bw_outbox_max_concurrency;
	opts.max_host_connections = bw_outbox_max_per_endpoint;
	opts.ca_file = bw_outbound_ca_file;
	opts.user_agent = "biteship_webhook/" BW_VERSION;
	engine = bw_curl_engine_new(&opts, err, sizeof(err));
	if (engine == NULL)
		ereport(FATAL,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("biteship_webhook outbound: could not start the HTTP engine: %s", err)));

	loop_cxt = AllocSetContextCreate(TopMemoryContext, "biteship_webhook outbound loop",
									 ALLOCSET_DEFAULT_SIZES);
	wes = BW_CREATE_WAIT_EVENT_SET(3);
	AddWaitEventToSet(wes, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wes, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(wes, WL_SOCKET_READABLE, bw_curl_engine_fd(engine), NULL, NULL);

	for (;;)
	{
		WaitEvent	events[3];
		int			n;
		BwOutboxResult *results;
		int			nresults = 0;
		BwOutboxMessage *claimed = NULL;
		int		   *claimed_ep = NULL;
		int			nclaimed = 0;
		ClaimBatch *batch = NULL;
		BwHttpCall *call;
		TimestampTz now;

		n = WaitEventSetWait(wes, compute_timeout(), events, lengthof(events),
							 PG_WAIT_EXTENSION);
		for (int i = 0; i < n; i++)
		{
			if (events[i].events & WL_LATCH_SET)
			{
				ResetLatch(MyLatch);
				/* new messages, or a retry, were committed: look again now */
				want_claim = true;
				not_ready_until = 0;
			}
		}
		/* a cancel between turns has nothing to cancel */
		QueryCancelPending = false;
		CHECK_FOR_INTERRUPTS();
		if (ShutdownRequestPending)
			break;
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			bw_worker_session_settings();
			load_schedule();
			want_claim = true;
			next_purge = 0;
		}

		MemoryContextSwitchTo(loop_cxt);

		/* what finished */
		bw_curl_engine_run(engine);
		results = palloc(sizeof(BwOutboxResult) * Max(nactive, 1));
		while ((call = bw_curl_engine_next_done(engine)) != NULL)
		{
			Slot	   *s = (Slot *) call->user;

			outcome_of(s, &results[nresults++]);
			release_slot(s);
		}
		/* calls that failed to start are done too */
		for (Slot *s = active, *next; s != NULL; s = next)
		{
			next = s->next;
			if (s->call.done && s->call.easy == NULL)
			{
				outcome_of(s, &results[nresults++]);
				release_slot(s);
			}
		}

		now = GetCurrentTimestamp();
		if (next_due != 0 && now >= next_due)
			want_claim = true;
		if ((nresults > 0 || want_claim || bw_config_generation() != eps_generation) &&
			(not_ready_until <= now || nresults > 0))
			turn_transaction(results, nresults, &claimed, &claimed_ep, &nclaimed, &batch);

		/* after COMMIT: onto the wire */
		for (int i = 0; i < nclaimed; i++)
		{
			BwEndpoint *ep = &eps[claimed_ep[i]];

			start_message(ep, &claimed[i], batch);
		}
		if (batch != NULL && batch->refs == 0)
		{
			MemoryContextDelete(batch->cxt);
			pfree(batch);
		}

		purge_if_due();
		bw_stats_outbound_flush(&local_stats);
		MemoryContextSwitchTo(TopMemoryContext);
		MemoryContextReset(loop_cxt);
	}

	/*
	 * Calls in flight are abandoned: their messages are still pending and
	 * are sent again, with the same webhook-id, by the next worker.
	 */
	if (nactive > 0)
		ereport(LOG,
				(errmsg("biteship_webhook outbound: shutting down with %d requests in flight; they will be sent again",
						nactive)));
	bw_curl_engine_free(engine);
	proc_exit(1);
}
