/*-------------------------------------------------------------------------
 *
 * listener.c
 *	  The HTTP(S) listener background worker.
 *
 * One event loop per worker.  A WaitEventSet holds the latch, postmaster
 * death, the listen sockets and one private epoll fd in which every client
 * socket lives, so connections come and go without touching the set.  Each
 * turn of the loop reads what is ready, collects every request that became
 * complete, and handles them as one batch in one short transaction: each
 * delivery is logged and applied (each in its own subtransaction) and the
 * whole batch commits with one WAL flush.  Only after COMMIT is any
 * delivery answered.  No transaction is ever open while the worker waits on
 * the network.
 *
 * The HTTP framing and the transports live in http.c and transport.c, which
 * make no backend calls; this file is the glue between them and the ingest
 * core.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <http_parser.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/varlena.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "biteship_webhook.h"
#include "http.h"
#include "netaddr.h"
#include "stats.h"
#include "tls.h"
#include "transport.h"

#define MAX_LISTEN_SOCKETS	16
#define MAX_EPOLL_EVENTS	256
#define RETRY_AFTER_SECONDS 5

/* tags for the WaitEventSet's user_data */
#define TAG_LISTEN	((void *) 1)
#define TAG_EPOLL	((void *) 2)

/* One client connection. */
typedef struct Client
{
	BwConn	   *conn;
	int			fd;
	uint32		epoll_mask;		/* interest currently registered */
	bool		ready;			/* may have complete requests queued */
	bool		answered;		/* answered this turn: parse what is buffered */
	char		peer[BW_ADDRSTRLEN];
	struct Client *prev;
	struct Client *next;
} Client;

/* One request of a batch, and what to answer. */
typedef struct Job
{
	Client	   *client;
	BwHttpRequest *req;
	int			status;
	const char *extra_headers;
	char	   *body;
	const char *webhook;		/* for the request counters */
	bool		needs_db;		/* answer depends on the transaction */
	bool		close_after;
	BwDelivery *delivery;		/* for webhook deliveries */
} Job;

static int	listener_id = 0;
static int	epoll_fd = -1;
static int	listen_fds[MAX_LISTEN_SOCKETS];
static int	nlisten = 0;
static Client *clients = NULL;
static int	nclients = 0;
static Client *rr_next = NULL;	/* where the next batch starts collecting */
static BwHttpLimits limits;
static BwCidrList trusted_proxies;
static BwCidrList metrics_allow;
static BwLocalStats local_stats;
static MemoryContext batch_cxt = NULL;
static BwTlsContext *tls_ctx = NULL;

/* Monotonic milliseconds, for timeouts and latency. */
static int64
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Read the settings the event loop uses; called at start and on SIGHUP.
 */
static void
load_settings(void)
{
	const char *bad;

	limits.max_header_size = bw_max_header_size;
	limits.max_body_size = bw_max_body_size;
	limits.max_pipelined = 16;
	limits.request_timeout_ms = bw_request_timeout;
	limits.keepalive_timeout_ms = bw_keepalive_timeout;
	limits.write_timeout_ms = bw_request_timeout;

	if (!bw_cidr_parse(bw_trusted_proxies, &trusted_proxies, &bad))
	{
		ereport(WARNING,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid entry \"%s\" in biteship_webhook.trusted_proxies", bad),
				 errdetail("No proxy is trusted until the setting is fixed."),
				 errhint("Use addresses or CIDR ranges separated by commas, e.g. '10.0.0.0/8, ::1'.")));
		trusted_proxies.n = 0;
	}
	if (!bw_cidr_parse(bw_metrics_allow, &metrics_allow, &bad))
	{
		ereport(WARNING,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid entry \"%s\" in biteship_webhook.metrics_allow", bad),
				 errdetail("/metrics is served to loopback only until the setting is fixed.")));
		bw_cidr_parse("127.0.0.0/8,::1", &metrics_allow, &bad);
	}
}

/*
 * Set up (or, on reload, replace) the TLS context.  A bad new certificate or
 * key keeps the old context in use.
 */
static void
load_tls(bool at_start)
{
	BwTlsConfig cfg;
	BwTlsContext *newctx;
	char		err[512];

	if (!bw_ssl)
	{
		if (tls_ctx != NULL && !at_start)
			ereport(LOG,
					(errmsg("biteship_webhook listener: TLS switched off; new connections use plain HTTP")));
		bw_tls_context_release(tls_ctx);
		tls_ctx = NULL;
		return;
	}

	memset(&cfg, 0, sizeof(cfg));
	cfg.cert_file = bw_ssl_cert_file;
	cfg.key_file = bw_ssl_key_file;
	cfg.ca_file = bw_ssl_ca_file;
	cfg.ciphers = bw_ssl_ciphers;
	cfg.min_version = bw_ssl_min_protocol_version == 1 ?
		BW_TLS_VERSION_1_3 : BW_TLS_VERSION_1_2;

	newctx = bw_tls_context_new(&cfg, err, sizeof(err));
	if (newctx == NULL)
	{
		if (tls_ctx != NULL)
			ereport(LOG,
					(errcode(ERRCODE_CONFIG_FILE_ERROR),
					 errmsg("biteship_webhook listener: could not load the new TLS configuration, keeping the old one"),
					 errdetail("%s", err)));
		else
			ereport(at_start ? FATAL : LOG,
					(errcode(ERRCODE_CONFIG_FILE_ERROR),
					 errmsg("biteship_webhook listener: could not set up TLS"),
					 errdetail("%s", err),
					 errhint("Check biteship_webhook.ssl_cert_file and biteship_webhook.ssl_key_file, or set biteship_webhook.ssl = off.")));
		return;
	}
	bw_tls_context_release(tls_ctx);
	tls_ctx = newctx;
	if (!at_start)
		ereport(LOG,
				(errmsg("biteship_webhook listener: TLS configuration reloaded")));
}

/*
 * Is this listen address a loopback one?
 */
static bool
is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *) sa)->sin_addr.s_addr) >> 24) == 127;
	if (sa->sa_family == AF_INET6)
		return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *) sa)->sin6_addr);
	return false;
}

/*
 * Open the listen sockets for biteship_webhook.listen_addresses, shared
 * with the other listener workers through SO_REUSEPORT.
 */
static void
open_listen_sockets(void)
{
	char	   *rawstring = pstrdup(bw_listen_addresses);
	List	   *elemlist;
	ListCell   *l;
	char		portstr[16];
	bool		exposed = false;

	if (!SplitGUCList(rawstring, ',', &elemlist))
		ereport(FATAL,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid list syntax in biteship_webhook.listen_addresses")));
	snprintf(portstr, sizeof(portstr), "%d", bw_port);

	foreach(l, elemlist)
	{
		char	   *host = (char *) lfirst(l);
		struct addrinfo hints;
		struct addrinfo *res;
		struct addrinfo *ai;
		int			rc;

		memset(&hints, 0, sizeof(hints));
		hints.ai_family = AF_UNSPEC;
		hints.ai_socktype = SOCK_STREAM;
		hints.ai_flags = AI_PASSIVE;
		if (strcmp(host, "*") == 0)
			host = NULL;

		rc = getaddrinfo(host, portstr, &hints, &res);
		if (rc != 0)
		{
			ereport(LOG,
					(errmsg("biteship_webhook listener: could not resolve \"%s\": %s",
							host ? host : "*", gai_strerror(rc))));
			continue;
		}
		for (ai = res; ai != NULL && nlisten < MAX_LISTEN_SOCKETS; ai = ai->ai_next)
		{
			int			fd;
			int			one = 1;
			char		addr[BW_ADDRSTRLEN];

			bw_sockaddr_text(ai->ai_addr, addr, sizeof(addr));
			fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
			if (fd < 0)
				continue;
			setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
			setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
			if (ai->ai_family == AF_INET6)
				setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
			if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 1024) < 0)
			{
				int			save_errno = errno;

				close(fd);
				/* an address family the host lacks is not worth a log line */
				if (save_errno != EADDRNOTAVAIL && save_errno != EAFNOSUPPORT)
					ereport(LOG,
							(errcode_for_socket_access(),
							 errmsg("biteship_webhook listener: could not listen on %s port %d: %s",
									addr, bw_port, strerror(save_errno))));
				continue;
			}
			if (!is_loopback(ai->ai_addr))
				exposed = true;
			listen_fds[nlisten++] = fd;
			if (listener_id == 0)
				ereport(LOG,
						(errmsg("biteship_webhook listener: listening on %s port %d%s",
								addr, bw_port, bw_ssl ? " (HTTPS)" : "")));
		}
		freeaddrinfo(res);
	}

	if (nlisten == 0)
		ereport(FATAL,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("biteship_webhook listener: could not listen on any address"),
				 errhint("Check biteship_webhook.listen_addresses and biteship_webhook.port, and that nothing else uses the port.")));

	if (exposed && !bw_ssl && trusted_proxies.n == 0 && listener_id == 0)
		ereport(WARNING,
				(errmsg("biteship_webhook listener is reachable from the network without TLS"),
				 errdetail("Signature secrets travel in clear text over plain HTTP."),
				 errhint("Set biteship_webhook.ssl = on with a certificate, or put a TLS-terminating proxy in front and list it in biteship_webhook.trusted_proxies.")));
}

/* Register or update a client's epoll interest. */
static void
update_interest(Client *c)
{
	uint32		mask = 0;
	struct epoll_event ev;

	if (bw_conn_want_read(c->conn))
		mask |= EPOLLIN;
	if (bw_conn_want_write(c->conn))
		mask |= EPOLLOUT;
	if (mask == c->epoll_mask)
		return;
	ev.events = mask;
	ev.data.ptr = c;
	epoll_ctl(epoll_fd, EPOLL_CTL_MOD, c->fd, &ev);
	c->epoll_mask = mask;
}

/* Close a client and forget it. */
static void
drop_client(Client *c)
{
	const BwTransport *t = bw_conn_transport(c->conn);

	/* count TLS handshakes that never completed, by reason */
	if (bw_transport_is_tls(t) && !t->handshake_done)
	{
		int			reason = bw_tls_failure(t);

		if (reason >= 0 && reason < BW_NTLS_FAILURES)
		{
			local_stats.tls_failures[reason]++;
			ereport(DEBUG1,
					(errmsg_internal("biteship_webhook listener: TLS handshake with %s failed: %s",
									 c->peer, bw_tls_failure_detail(t))));
		}
	}
	if (rr_next == c)
		rr_next = c->next;
	epoll_ctl(epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
	bw_conn_free(c->conn);
	if (c->prev)
		c->prev->next = c->next;
	else
		clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	nclients--;
	pfree(c);
}

/*
 * Refuse a connection cheaply: one write of a canned 503 and close.
 */
static void
refuse_connection(int fd)
{
	static const char resp[] =
		"HTTP/1.1 503 Service Unavailable\r\n"
		"Content-Type: application/json\r\n"
		"Retry-After: " CppAsString2(RETRY_AFTER_SECONDS) "\r\n"
		"Connection: close\r\n"
		"Content-Length: 48\r\n"
		"\r\n"
		"{\"ok\":false,\"error\":\"too many open connections\"}";
	ssize_t		rc;

	StaticAssertStmt(sizeof("{\"ok\":false,\"error\":\"too many open connections\"}") - 1 == 48,
					 "canned 503 body length");
	rc = send(fd, resp, sizeof(resp) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
	(void) rc;
	close(fd);
	local_stats.connections_refused++;
}

/*
 * Accept what is pending on a listen socket.
 */
static void
accept_clients(int lfd)
{
	for (int i = 0; i < 64; i++)
	{
		struct sockaddr_storage addr;
		socklen_t	addrlen = sizeof(addr);
		int			fd = accept4(lfd, (struct sockaddr *) &addr, &addrlen,
								 SOCK_NONBLOCK | SOCK_CLOEXEC);
		BwTransport *t;
		Client	   *c;
		struct epoll_event ev;
		int			one = 1;

		if (fd < 0)
			return;				/* EAGAIN, or a transient error */
		if (nclients >= bw_max_connections)
		{
			refuse_connection(fd);
			continue;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

		t = tls_ctx ? bw_transport_tls_new(fd, tls_ctx) : bw_transport_plain_new(fd);
		if (t == NULL)
		{
			close(fd);
			continue;
		}
		c = MemoryContextAllocZero(TopMemoryContext, sizeof(Client));
		c->conn = bw_conn_new(t, &limits, now_ms());
		if (c->conn == NULL)
		{
			/* bw_conn_new closed the transport */
			pfree(c);
			continue;
		}
		c->fd = fd;
		bw_sockaddr_text((struct sockaddr *) &addr, c->peer, sizeof(c->peer));
		c->epoll_mask = EPOLLIN;
		ev.events = EPOLLIN;
		ev.data.ptr = c;
		if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0)
		{
			bw_conn_free(c->conn);
			pfree(c);
			continue;
		}
		c->next = clients;
		if (clients)
			clients->prev = c;
		clients = c;
		nclients++;
	}
}

/* JSON body of an answer: {"ok":false,"error":"..."} */
static char *
error_body(const char *message)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"ok\":false,\"error\":");
	escape_json(&buf, message);
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

static void
set_answer(Job *job, int status, const char *message)
{
	job->status = status;
	job->body = error_body(message);
	if (status == 503)
		job->extra_headers = "Retry-After: " CppAsString2(RETRY_AFTER_SECONDS) "\r\n";
}

/*
 * Render the stats view in the Prometheus text format.
 */
static char *
render_metrics(void)
{
	StringInfoData out;
	MemoryContext cxt = CurrentMemoryContext;
	char	   *last_family = NULL;
	int			ret;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	ret = SPI_execute("SELECT name, "
					  "  (SELECT pg_catalog.string_agg(key || '=\"' || "
					  "     pg_catalog.replace(pg_catalog.replace(value, '\\', '\\\\'), '\"', '\\\"') || '\"', ',' ORDER BY key) "
					  "     FROM pg_catalog.jsonb_each_text(labels)), value "
					  "FROM biteship_webhook.stats", true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read biteship_webhook.stats: %s", SPI_result_code_string(ret));

	initStringInfo(&out);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		char	   *name = SPI_getvalue(tup, desc, 1);
		char	   *labels = SPI_getvalue(tup, desc, 2);
		bool		isnull;
		double		value = DatumGetFloat8(SPI_getbinval(tup, desc, 3, &isnull));
		char	   *family = pstrdup(name);
		const char *type = "gauge";
		size_t		len = strlen(family);

		/* histograms: strip the _bucket/_sum/_count suffix */
		if (len > 7 && strcmp(family + len - 7, "_bucket") == 0)
			family[len - 7] = '\0', type = "histogram";
		else if (len > 4 && strcmp(family + len - 4, "_sum") == 0)
			family[len - 4] = '\0', type = "histogram";
		else if (len > 6 && strcmp(family + len - 6, "_count") == 0)
			family[len - 6] = '\0', type = "histogram";
		else if (len > 6 && strcmp(family + len - 6, "_total") == 0)
			type = "counter";

		if (last_family == NULL || strcmp(last_family, family) != 0)
		{
			appendStringInfo(&out, "# TYPE biteship_webhook_%s %s\n", family, type);
			last_family = family;
		}
		appendStringInfo(&out, "biteship_webhook_%s", name);
		if (labels != NULL)
			appendStringInfo(&out, "{%s}", labels);
		appendStringInfo(&out, " %.17g\n", value);
	}
	SPI_finish();
	return MemoryContextStrdup(cxt, out.data);
}

/*
 * Answer GET /metrics inside a subtransaction of the batch, so that a
 * failure there (say, the role may not read the stats view) costs only this
 * answer, never the deliveries committed with it.
 */
static void
render_metrics_job(Job *job)
{
	MemoryContext oldcontext = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcontext);
	PG_TRY();
	{
		job->body = render_metrics();
		job->status = 200;
		job->extra_headers = "Content-Type: text/plain; version=0.0.4\r\n";
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcontext);
		EmitErrorReport();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
		set_answer(job, 503, "metrics are unavailable, see the server log");
	}
	PG_END_TRY();
}

/*
 * Decide a request's answer where that needs no database, and classify the
 * rest.  Returns true when the job must go through the transaction.
 */
static bool
prepare_job(Job *job)
{
	BwHttpRequest *req = job->req;

	if (req->error_status != 0)
	{
		job->status = req->error_status;
		job->body = error_body(req->error_message ? req->error_message : "bad request");
		job->close_after = true;
		return false;
	}
	if (strcmp(req->path, "/metrics") == 0)
	{
		if (req->method != HTTP_GET && req->method != HTTP_HEAD)
		{
			set_answer(job, 405, "method not allowed");
			job->extra_headers = "Allow: GET, HEAD\r\n";
			return false;
		}
		if (!bw_cidr_match(&metrics_allow, job->client->peer))
		{
			set_answer(job, 403, "metrics are not served to this address");
			return false;
		}
		return true;
	}
	if (strcmp(req->path, "/healthz") == 0)
	{
		if (req->method != HTTP_GET && req->method != HTTP_HEAD)
		{
			set_answer(job, 405, "method not allowed");
			job->extra_headers = "Allow: GET, HEAD\r\n";
			return false;
		}
		return true;
	}
	/* a webhook path, or nothing: the database knows */
	return true;
}

/* A webhook looked up once per batch. */
typedef struct WebhookCacheEntry
{
	const char *path;
	BwWebhook  *webhook;
} WebhookCacheEntry;

/*
 * Handle the database part of one job, inside the batch transaction.
 */
static void
run_job(Job *job, WebhookCacheEntry *cache, int *ncache, TimestampTz batch_now,
		int64 mono_now)
{
	BwHttpRequest *req = job->req;
	BwWebhook  *wh = NULL;
	BwDelivery *d;
	BwHeader   *headers;
	char		remote[BW_ADDRSTRLEN];
	int			i;

	if (strcmp(req->path, "/healthz") == 0)
	{
		job->status = 200;
		job->body = pstrdup("{\"ok\":true}");
		return;
	}
	if (strcmp(req->path, "/metrics") == 0)
	{
		render_metrics_job(job);
		return;
	}

	for (i = 0; i < *ncache; i++)
	{
		if (strcmp(cache[i].path, req->path) == 0)
		{
			wh = cache[i].webhook;
			break;
		}
	}
	if (i == *ncache)
	{
		wh = bw_lookup_webhook(NULL, req->path);
		if (*ncache < bw_max_batch_size)
		{
			cache[*ncache].path = req->path;
			cache[*ncache].webhook = wh;
			(*ncache)++;
		}
	}
	if (wh == NULL)
	{
		set_answer(job, 404, "no webhook at this path");
		return;
	}
	job->webhook = wh->name;
	if (req->method != HTTP_POST)
	{
		set_answer(job, 405, "webhooks accept POST only");
		job->extra_headers = "Allow: POST\r\n";
		return;
	}

	headers = palloc(sizeof(BwHeader) * Max(req->nheaders, 1));
	for (i = 0; i < req->nheaders; i++)
	{
		headers[i].name = req->headers[i].name;
		headers[i].value = req->headers[i].value;
	}
	bw_forwarded_client(&trusted_proxies, job->client->peer,
						bw_http_header(req, "x-forwarded-for"),
						remote, sizeof(remote));

	d = palloc0(sizeof(BwDelivery));
	d->webhook = wh;
	d->body = req->body;
	d->body_len = req->body_len;
	d->headers = headers;
	d->nheaders = req->nheaders;
	d->remote_addr = remote[0] ? pstrdup(remote) : NULL;
	d->received_at = batch_now - (mono_now - req->received_at_ms) * 1000;
	d->deferred = (bw_apply_mode == BW_APPLY_DEFERRED);

	bw_ingest_one(d);
	job->delivery = d;
}

/*
 * The answer to a delivery, once its outcome is known.
 */
static void
answer_delivery(Job *job)
{
	BwDelivery *d = job->delivery;
	StringInfoData body;

	job->status = d->http_status;
	initStringInfo(&body);
	if (d->http_status == 200)
		appendStringInfo(&body, "{\"ok\":true,\"event_id\":" INT64_FORMAT ",\"state\":\"%s\"}",
						 d->event_id, d->state);
	else
	{
		appendStringInfoString(&body, "{\"ok\":false,\"error\":");
		escape_json(&body, d->error ? d->error : "rejected");
		if (d->event_id > 0)
			appendStringInfo(&body, ",\"event_id\":" INT64_FORMAT, d->event_id);
		appendStringInfoChar(&body, '}');
	}
	job->body = body.data;
}

/* qsort comparator: deliveries to apply, by order key, then batch position */
static int
apply_order_cmp(const void *a, const void *b)
{
	const Job  *ja = *(Job *const *) a;
	const Job  *jb = *(Job *const *) b;
	const char *ka = ja->delivery->order_key ? ja->delivery->order_key : "";
	const char *kb = jb->delivery->order_key ? jb->delivery->order_key : "";
	int			c = strcmp(ka, kb);

	if (c != 0)
		return c;
	return (ja > jb) - (ja < jb);
}

/*
 * Apply the logged deliveries of a batch.  They go in order of order id,
 * keeping request order within one order: concurrent listener workers then
 * take the orders' row locks in the same order and cannot deadlock.
 */
static void
apply_batch(Job *jobs, int njobs)
{
	Job		  **todo = palloc(sizeof(Job *) * njobs);
	int			n = 0;

	for (int i = 0; i < njobs; i++)
	{
		if (jobs[i].delivery != NULL && jobs[i].delivery->apply_payload != NULL)
			todo[n++] = &jobs[i];
	}
	if (n > 1)
		qsort(todo, n, sizeof(Job *), apply_order_cmp);
	for (int i = 0; i < n; i++)
		bw_ingest_apply(todo[i]->delivery);
	for (int i = 0; i < njobs; i++)
	{
		if (jobs[i].delivery != NULL)
			answer_delivery(&jobs[i]);
	}
}

/*
 * Run the database part of a batch in one transaction.  On any error the
 * transaction is rolled back and every job that needed it is answered 503:
 * nothing is acknowledged that was not committed.
 */
static void
run_batch_transaction(Job *jobs, int njobs)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	TimestampTz batch_now = GetCurrentTimestamp();
	int64		mono_now = now_ms();
	uint32		save_holdoff = InterruptHoldoffCount;
	volatile bool committed = false;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "biteship_webhook: ingest batch");

	PG_TRY();
	{
		WebhookCacheEntry *cache = palloc(sizeof(WebhookCacheEntry) * bw_max_batch_size);
		int			ncache = 0;

		MemoryContextSwitchTo(oldcxt);

		if (RecoveryInProgress())
		{
			for (int i = 0; i < njobs; i++)
				if (jobs[i].needs_db)
					set_answer(&jobs[i], 503, "database is read-only (standby), retry later");
		}
		else if (!OidIsValid(get_extension_oid("biteship_webhook", true)))
		{
			for (int i = 0; i < njobs; i++)
				if (jobs[i].needs_db)
					set_answer(&jobs[i], 503, "biteship_webhook is not installed in this database yet");
		}
		else
		{
			for (int i = 0; i < njobs; i++)
				if (jobs[i].needs_db)
					run_job(&jobs[i], cache, &ncache, batch_now, mono_now);
			apply_batch(jobs, njobs);
		}

		PopActiveSnapshot();
		CommitTransactionCommand();
		committed = true;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcxt);
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		/* an ERROR resets the holdoff count; the batch still holds them */
		InterruptHoldoffCount = save_holdoff;
	}
	PG_END_TRY();

	MemoryContextSwitchTo(oldcxt);
	pgstat_report_activity(STATE_IDLE, NULL);

	/*
	 * Report table and WAL statistics (rate-limited inside): autovacuum
	 * relies on them to vacuum orders and the events log.
	 */
	pgstat_report_stat(false);

	if (!committed)
	{
		for (int i = 0; i < njobs; i++)
		{
			if (jobs[i].needs_db)
			{
				jobs[i].extra_headers = NULL;
				set_answer(&jobs[i], 503, "database unavailable, retry later");
			}
		}
	}
}

/*
 * Collect the complete requests of every ready client, up to the batch
 * size, handle them in one transaction and answer them in order.  Returns
 * true when requests were left queued for the next turn.
 */
static bool
process_batch(void)
{
	Job		   *jobs = palloc0(sizeof(Job) * bw_max_batch_size);
	int			njobs = 0;
	bool		any_db = false;
	bool		leftover = false;
	int64		t_end;

	Client	   *start = rr_next != NULL ? rr_next : clients;
	Client	   *c = start;

	/*
	 * Visit the clients round-robin, starting where the previous full batch
	 * stopped, so that under more load than one batch takes no connection
	 * waits behind the others turn after turn.
	 */
	rr_next = NULL;
	while (c != NULL)
	{
		BwHttpRequest *req;

		if (c->ready)
		{
			while (njobs < bw_max_batch_size &&
				   (req = bw_conn_pop_request(c->conn)) != NULL)
			{
				Job		   *job = &jobs[njobs++];

				job->client = c;
				job->req = req;
				job->needs_db = prepare_job(job);
				any_db |= job->needs_db;
			}
			if (njobs >= bw_max_batch_size)
			{
				leftover = true;
				rr_next = c->next;	/* c may have more: it is still ready */
				break;
			}
			c->ready = false;
		}
		c = c->next != NULL ? c->next : clients;
		if (c == start)
			break;
	}
	if (njobs == 0)
		return leftover;

	if (any_db)
		run_batch_transaction(jobs, njobs);

	/* Answer in pop order; each client's answers stay in request order. */
	t_end = now_ms();
	for (int i = 0; i < njobs; i++)
	{
		Job		   *job = &jobs[i];
		double		secs = (t_end - job->req->received_at_ms) / 1000.0;
		const char *extra = job->extra_headers;

		bw_stats_local_request(&local_stats, job->webhook, job->status, secs);
		bw_conn_respond(job->client->conn, job->req, job->status, extra,
						job->body, strlen(job->body), job->close_after);
		job->client->answered = true;
	}
	bw_stats_local_batch(&local_stats, njobs);
	return leftover;
}

/*
 * Flush every client with output pending, drop the finished ones, and
 * update epoll interest.
 */
static void
flush_clients(void)
{
	Client	   *next;
	int64		now = now_ms();

	for (Client *c = clients; c != NULL; c = next)
	{
		next = c->next;
		if (bw_conn_want_write(c->conn) && bw_conn_flush(c->conn, now) < 0)
		{
			drop_client(c);
			continue;
		}

		/*
		 * Answering frees pipeline slots.  Requests already in the input
		 * buffer raise no new socket event, so parse them now.
		 */
		if (c->answered)
		{
			c->answered = false;
			if (bw_conn_want_read(c->conn))
			{
				int			rc = bw_conn_on_readable(c->conn, now);

				if (rc > 0)
					c->ready = true;
				else if (rc < 0 && !bw_conn_want_write(c->conn))
				{
					drop_client(c);
					continue;
				}
			}
		}
		update_interest(c);
	}
}

/*
 * Handle client socket events reported by the private epoll fd.
 */
static void
service_clients(void)
{
	struct epoll_event evs[MAX_EPOLL_EVENTS];
	int			n = epoll_wait(epoll_fd, evs, MAX_EPOLL_EVENTS, 0);
	int64		now = now_ms();

	for (int i = 0; i < n; i++)
	{
		Client	   *c = (Client *) evs[i].data.ptr;
		int			rc;

		if (evs[i].events & EPOLLOUT)
		{
			if (bw_conn_flush(c->conn, now) < 0)
			{
				drop_client(c);
				continue;
			}
		}
		if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
		{
			/* a paused connection does not read, so would miss a reset */
			if ((evs[i].events & EPOLLERR) ||
				((evs[i].events & EPOLLHUP) && !bw_conn_want_read(c->conn)))
			{
				drop_client(c);
				continue;
			}
			rc = bw_conn_on_readable(c->conn, now);
			if (rc < 0)
			{
				drop_client(c);
				continue;
			}
			if (rc > 0)
				c->ready = true;
		}
		update_interest(c);
	}
}

/* Has any client complete requests waiting for the next batch? */
static bool
any_client_ready(void)
{
	for (Client *c = clients; c != NULL; c = c->next)
	{
		if (c->ready)
			return true;
	}
	return false;
}

/*
 * Enforce timeouts; returns the wait until the next deadline in ms, or -1.
 */
static long
check_timeouts(void)
{
	int64		now = now_ms();
	int64		next = PG_INT64_MAX;
	Client	   *nextc;

	for (Client *c = clients; c != NULL; c = nextc)
	{
		int64		deadline = bw_conn_next_deadline(c->conn);

		nextc = c->next;
		if (deadline <= now)
		{
			if (bw_conn_check_timeout(c->conn, now) < 0 ||
				(bw_conn_want_write(c->conn) && bw_conn_flush(c->conn, now) < 0))
			{
				drop_client(c);
				continue;
			}
			update_interest(c);
			deadline = bw_conn_next_deadline(c->conn);
		}
		if (deadline < next)
			next = deadline;
	}
	if (next == PG_INT64_MAX)
		return -1;
	return (long) Max(next - now, 0) + 1;
}

/*
 * Entry point of a listener worker.
 */
void
bw_listener_main(Datum main_arg)
{
	WaitEventSet *wes;
	bool		leftover = false;
	int			last_nclients = 0;

	listener_id = DatumGetInt32(main_arg);

	/*
	 * SIGTERM asks for a shutdown at the end of the current turn: the batch
	 * in flight commits and is answered first.  Interrupts are not held, so
	 * a query cancel, statement_timeout or lock_timeout still ends a batch
	 * that waits on a lock (it is then answered 503).
	 */
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(bw_database,
										 bw_role[0] != '\0' ? bw_role : NULL, 0);
	pgstat_report_appname("biteship_webhook listener");
	bw_worker_session_settings();

	batch_cxt = AllocSetContextCreate(TopMemoryContext,
									  "biteship_webhook listener batch",
									  ALLOCSET_DEFAULT_SIZES);
	load_settings();
	load_tls(true);
	open_listen_sockets();

	epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (epoll_fd < 0)
		ereport(FATAL,
				(errcode_for_socket_access(),
				 errmsg("biteship_webhook listener: could not create epoll instance: %m")));

	wes = BW_CREATE_WAIT_EVENT_SET(3 + nlisten);
	AddWaitEventToSet(wes, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wes, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	for (int i = 0; i < nlisten; i++)
		AddWaitEventToSet(wes, WL_SOCKET_READABLE, listen_fds[i], NULL, TAG_LISTEN);
	AddWaitEventToSet(wes, WL_SOCKET_READABLE, epoll_fd, NULL, TAG_EPOLL);

	for (;;)
	{
		WaitEvent	events[MAX_LISTEN_SOCKETS + 3];
		long		timeout;
		int			n;

		timeout = check_timeouts();
		if (nclients != last_nclients)
		{
			/* timeouts closed connections: publish before sleeping */
			bw_stats_flush(&local_stats);
			bw_stats_set_connections(listener_id, nclients);
			last_nclients = nclients;
		}
		if (leftover || any_client_ready())
			timeout = 0;
		n = WaitEventSetWait(wes, timeout, events, lengthof(events),
							 PG_WAIT_EXTENSION);

		MemoryContextSwitchTo(batch_cxt);
		for (int i = 0; i < n; i++)
		{
			if (events[i].events & WL_LATCH_SET)
				ResetLatch(MyLatch);
			else if (events[i].user_data == TAG_LISTEN)
				accept_clients(events[i].fd);
		}
		CHECK_FOR_INTERRUPTS();
		if (ShutdownRequestPending)
			break;

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			bw_worker_session_settings();
			load_settings();
			load_tls(false);
		}

		service_clients();
		leftover = process_batch();
		flush_clients();

		bw_stats_flush(&local_stats);
		bw_stats_set_connections(listener_id, nclients);
		last_nclients = nclients;
		MemoryContextSwitchTo(TopMemoryContext);
		MemoryContextReset(batch_cxt);
	}

	/*
	 * Every answer of the last batch has been handed to the kernel.  Exit
	 * with a non-zero code, so that the postmaster starts a new listener
	 * unless it is shutting down itself.
	 */
	ereport(LOG,
			(errmsg("biteship_webhook listener %d shutting down", listener_id)));
	proc_exit(1);
}
