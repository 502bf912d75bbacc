/*-------------------------------------------------------------------------
 *
 * listener.c
 *	  The HTTP(S) listener background worker.
 *
 * One event loop per worker.  A WaitEventSet holds the latch, postmaster
 * death and one private epoll fd in which the listen sockets and every
 * client socket live, so that connections come and go, and accepting can
 * pause, without touching the set.  Each turn of the loop reads what is
 * ready, collects every request that became complete, and handles them as
 * one batch in one short transaction: the batch's deliveries are logged,
 * then applied (each in its own subtransaction), and the whole batch
 * commits with one WAL flush.  Only after COMMIT is any delivery answered.
 * No transaction is ever open while the worker waits on the network.
 *
 * What a client can make this process hold is bounded: connections
 * (max_connections, and a few more being refused over TLS), per
 * connection the limits of http.c (headers, pipelined requests, unsent
 * output), and across connections the request bodies (body_memory_limit).
 * Bodies are kept only for POSTs to a webhook's path; the listener knows
 * the paths from a cache that is reloaded whenever the configuration
 * generation moves.
 *
 * The HTTP framing and the transports live in http.c, transport.c and
 * tls.c, which make no backend calls; this file is the glue between them
 * and the ingest core.
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
#include "storage/fd.h"
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
#include "route.h"
#include "stats.h"
#include "tls.h"
#include "transport.h"

#define MAX_LISTEN_SOCKETS	16
#define MAX_EPOLL_EVENTS	256
#define RETRY_AFTER_SECONDS 5
/* how long accepting pauses when the process is out of file descriptors */
#define ACCEPT_PAUSE_MS		100
/* how often binding is retried while no listen socket could be opened */
#define LISTEN_RETRY_MS		10000
/* TLS connections over max_connections that still get a proper 503 */
#define MAX_REFUSING		32

/* tags for the WaitEventSet's user_data */
#define TAG_EPOLL	((void *) 2)

/* One listen socket; its address is the epoll user data. */
typedef struct ListenSock
{
	int			fd;
} ListenSock;

/* One client connection. */
typedef struct Client
{
	BwConn	   *conn;
	int			fd;
	uint32		epoll_mask;		/* interest currently registered */
	bool		ready;			/* may have complete requests queued */
	bool		answered;		/* answered this turn: parse what is buffered */
	bool		refusing;		/* over max_connections: answer 503 and close */
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
static ListenSock listen_socks[MAX_LISTEN_SOCKETS];
static int	nlisten = 0;
static bool accept_paused = false;
static int64 accept_resume_ms = 0;
static int64 listen_retry_ms = 0;	/* 0: no retry pending */
static bool listen_failed_logged = false;
static bool tls_broken = false; /* ssl = on, but no usable context */
static Client *clients = NULL;
static int	nclients = 0;		/* served connections */
static int	nrefusing = 0;		/* connections being refused */
static Client *rr_next = NULL;	/* where the next batch starts collecting */
static BwHttpLimits limits;
static BwHttpLimits refusing_limits;
static BwHttpBudget body_budget;
static BwCidrList trusted_proxies;
static BwCidrList metrics_allow;
static BwLocalStats local_stats;
static MemoryContext batch_cxt = NULL;
static BwTlsContext *tls_ctx = NULL;

/* the webhook paths, sorted, as of config generation paths_generation */
static BwPathList webhook_paths = {NULL, 0};
static uint64 paths_generation = 0;
static bool paths_loaded = false;
static bool paths_reload = false;	/* the cache is known to be stale */
static bool extension_seen = false; /* the last reload found the extension */
static bool notify_pending = false; /* a committed batch's NOTIFYs to send */
static bool stats_pending = false;	/* a batch ran: report statistics */

static void close_listen_sockets(void);
static void open_listen_sockets(void);
static void check_apply_role(void);

/* Monotonic milliseconds, for timeouts and latency. */
static int64
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * http.c asks this when a request's headers are in: keep its body only if
 * it is a POST to a webhook's path.  Everything else the listener answers
 * (404, 405, /healthz, /metrics) needs no body, so none is buffered.
 */
static bool
listener_wants_body(void *arg, int method, const char *path)
{
	return bw_route_wants_body(&webhook_paths, method, path);
}

/* Refusing connections keep no body at all. */
static bool
wants_no_body(void *arg, int method, const char *path)
{
	return false;
}

/*
 * Reload the webhook paths when the configuration generation has moved
 * (create_webhook, drop_webhook, or any change to the webhooks table
 * commits), or when the cache is known to be stale.  One short read-only
 * transaction; on any error the old cache stays.
 */
static void
refresh_webhook_paths(void)
{
	uint64		gen = bw_config_generation();
	MemoryContext oldcxt = CurrentMemoryContext;

	if (paths_loaded && !paths_reload && gen == paths_generation)
		return;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	PG_TRY();
	{
		char	  **paths = NULL;
		int			npaths = 0;
		bool		installed = OidIsValid(get_extension_oid("biteship_webhook", true));

		if (installed)
		{
			if (SPI_connect() != SPI_OK_CONNECT)
				elog(ERROR, "SPI_connect failed");
			if (SPI_execute("SELECT path FROM biteship_webhook.webhooks", true, 0) != SPI_OK_SELECT)
				elog(ERROR, "could not read the webhook paths");
			paths = MemoryContextAllocZero(TopMemoryContext,
										   sizeof(char *) * Max(SPI_processed, 1));
			for (uint64 i = 0; i < SPI_processed; i++)
			{
				char	   *p = SPI_getvalue(SPI_tuptable->vals[i],
											 SPI_tuptable->tupdesc, 1);

				if (p != NULL)
					paths[npaths++] = MemoryContextStrdup(TopMemoryContext, p);
			}
			SPI_finish();
		}
		PopActiveSnapshot();
		CommitTransactionCommand();

		for (int i = 0; i < webhook_paths.npaths; i++)
			pfree(webhook_paths.paths[i]);
		if (webhook_paths.paths != NULL)
			pfree(webhook_paths.paths);
		webhook_paths.paths = paths;
		webhook_paths.npaths = npaths;
		bw_path_list_sort(&webhook_paths);

		/* the extension just appeared: now the apply role must exist */
		if (installed && !extension_seen)
			check_apply_role();
		extension_seen = installed;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcxt);
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
	paths_generation = gen;
	paths_loaded = true;
	paths_reload = false;
}

/*
 * Read the settings the event loop uses; called at start and on SIGHUP.
 * The check hooks have validated the address lists already.
 */
static void
load_settings(void)
{
	const char *bad;

	limits.max_header_size = bw_max_header_size;
	limits.max_body_size = bw_max_body_size;
	limits.max_pipelined = 16;
	limits.max_pending_output = BW_HTTP_DEFAULT_MAX_OUTPUT;
	limits.request_timeout_ms = bw_request_timeout;
	limits.keepalive_timeout_ms = bw_keepalive_timeout;
	limits.write_timeout_ms = bw_request_timeout;
	limits.budget = &body_budget;
	limits.wants_body = listener_wants_body;
	limits.wants_body_arg = NULL;
	body_budget.limit = (size_t) bw_body_memory_limit * 1024;

	refusing_limits = limits;
	refusing_limits.max_pipelined = 1;
	refusing_limits.budget = NULL;
	refusing_limits.wants_body = wants_no_body;

	if (!bw_cidr_parse(bw_trusted_proxies, &trusted_proxies, &bad))
		trusted_proxies.n = 0;
	if (!bw_cidr_parse(bw_metrics_allow, &metrics_allow, &bad))
		bw_cidr_parse("127.0.0.0/8,::1", &metrics_allow, &bad);
}

/*
 * Warn (once, from listener 0) when application code would run with more
 * rights than it should: the apply role is missing, or a superuser.
 */
static void
check_apply_role(void)
{
	if (listener_id != 0)
		return;
	StartTransactionCommand();
	{
		Oid			role = bw_apply_role_oid(true);

		if (!OidIsValid(role))
			ereport(WARNING,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("biteship_webhook.apply_role \"%s\" does not exist", bw_apply_role),
					 errdetail("Deliveries are logged and answered, but every apply fails until the role exists."),
					 errhint("Run CREATE EXTENSION or ALTER EXTENSION biteship_webhook UPDATE, which create the role, or set biteship_webhook.apply_role.")));
		else if (superuser_arg(role))
			ereport(WARNING,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("biteship_webhook applies events as a superuser"),
					 errdetail("Application triggers on orders and order_status_history would run as superuser \"%s\".",
							   GetUserNameFromId(role, false)),
					 errhint("Set biteship_webhook.apply_role to a role without superuser rights, such as biteship_webhook_apply.")));
	}
	CommitTransactionCommand();
}

/*
 * Set up (or, on reload, replace) the TLS context.  A bad new certificate or
 * key keeps the old context in use.  Without any usable context and with
 * ssl = on, the listener closes its sockets (it never serves plain HTTP in
 * place of HTTPS) and keeps running, so that a reload can fix it without a
 * restart loop.
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
		tls_broken = false;
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
		{
			if (listener_id == 0)
				ereport(LOG,
						(errcode(ERRCODE_CONFIG_FILE_ERROR),
						 errmsg("biteship_webhook listener: could not set up TLS; not listening until the configuration is fixed"),
						 errdetail("%s", err),
						 errhint("Fix biteship_webhook.ssl_cert_file and biteship_webhook.ssl_key_file, or set biteship_webhook.ssl = off, then reload.")));
			tls_broken = true;
		}
		return;
	}
	bw_tls_context_release(tls_ctx);
	tls_ctx = newctx;
	tls_broken = false;
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

/* Register a listen socket in the private epoll fd. */
static void
watch_listen_socket(ListenSock *ls, bool on)
{
	struct epoll_event ev;

	ev.events = on ? EPOLLIN : 0;
	ev.data.ptr = ls;
	epoll_ctl(epoll_fd, EPOLL_CTL_MOD, ls->fd, &ev);
}

/* Is this epoll user data one of our listen sockets? */
static bool
is_listen_sock(const void *ptr)
{
	return ptr >= (const void *) &listen_socks[0] &&
		ptr < (const void *) &listen_socks[MAX_LISTEN_SOCKETS];
}

/*
 * Open the listen sockets for biteship_webhook.listen_addresses, shared
 * with the other listener workers through SO_REUSEPORT.  When none can be
 * opened (the port is taken, the address is gone) the listener keeps
 * running and tries again every LISTEN_RETRY_MS; the check hook has
 * already refused what can never work.
 */
static void
open_listen_sockets(void)
{
	char	   *rawstring = pstrdup(bw_listen_addresses);
	List	   *elemlist;
	ListCell   *l;
	char		portstr[16];
	bool		exposed = false;
	int			elevel = listen_failed_logged ? DEBUG1 : LOG;

	listen_retry_ms = 0;
	if (tls_broken || nlisten > 0)
		return;
	if (!SplitGUCList(rawstring, ',', &elemlist))
		elemlist = NIL;			/* the check hook refuses this */
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
			ereport(elevel,
					(errmsg("biteship_webhook listener: could not resolve \"%s\": %s",
							host ? host : "*", gai_strerror(rc))));
			continue;
		}
		for (ai = res; ai != NULL && nlisten < MAX_LISTEN_SOCKETS; ai = ai->ai_next)
		{
			int			fd;
			int			one = 1;
			char		addr[BW_ADDRSTRLEN];
			struct epoll_event ev;

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
					ereport(elevel,
							(errcode_for_socket_access(),
							 errmsg("biteship_webhook listener: could not listen on %s port %d: %s",
									addr, bw_port, strerror(save_errno))));
				continue;
			}
			ev.events = EPOLLIN;
			ev.data.ptr = &listen_socks[nlisten];
			if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0)
			{
				close(fd);
				continue;
			}
			ReserveExternalFD();
			if (!is_loopback(ai->ai_addr))
				exposed = true;
			listen_socks[nlisten++].fd = fd;
			if (listener_id == 0)
				ereport(LOG,
						(errmsg("biteship_webhook listener: listening on %s port %d%s",
								addr, bw_port, bw_ssl ? " (HTTPS)" : "")));
		}
		freeaddrinfo(res);
	}
	list_free(elemlist);
	pfree(rawstring);

	if (nlisten == 0)
	{
		if (!listen_failed_logged && listener_id == 0)
			ereport(WARNING,
					(errcode(ERRCODE_CONFIG_FILE_ERROR),
					 errmsg("biteship_webhook listener: could not listen on any address; retrying every %d s",
							LISTEN_RETRY_MS / 1000),
					 errhint("Check biteship_webhook.listen_addresses and biteship_webhook.port, and that nothing else uses the port.")));
		listen_failed_logged = true;
		listen_retry_ms = now_ms() + LISTEN_RETRY_MS;
		return;
	}
	if (listen_failed_logged)
		ereport(LOG,
				(errmsg("biteship_webhook listener: listening again on port %d", bw_port)));
	listen_failed_logged = false;
	accept_paused = false;

	if (exposed && !bw_ssl && trusted_proxies.n == 0 && listener_id == 0)
		ereport(WARNING,
				(errmsg("biteship_webhook listener is reachable from the network without TLS"),
				 errdetail("Signature secrets travel in clear text over plain HTTP."),
				 errhint("Set biteship_webhook.ssl = on with a certificate, or put a TLS-terminating proxy in front and list it in biteship_webhook.trusted_proxies.")));
}

/* Close every listen socket (TLS became unusable). */
static void
close_listen_sockets(void)
{
	for (int i = 0; i < nlisten; i++)
	{
		epoll_ctl(epoll_fd, EPOLL_CTL_DEL, listen_socks[i].fd, NULL);
		close(listen_socks[i].fd);
		ReleaseExternalFD();
	}
	nlisten = 0;
}

/*
 * Stop accepting for a moment: the process is out of file descriptors, so
 * accept() fails and the listen sockets would stay readable, and the loop
 * would spin.  Connections wait in the kernel's backlog meanwhile.
 */
static void
pause_accepting(int err)
{
	if (accept_paused)
		return;
	for (int i = 0; i < nlisten; i++)
		watch_listen_socket(&listen_socks[i], false);
	accept_paused = true;
	accept_resume_ms = now_ms() + ACCEPT_PAUSE_MS;
	ereport(LOG,
			(errmsg("biteship_webhook listener: could not accept a connection: %s; pausing for %d ms",
					strerror(err), ACCEPT_PAUSE_MS),
			 errhint("Raise the open file limit of the server (ulimit -n), or lower biteship_webhook.max_connections.")));
}

static void
resume_accepting(void)
{
	for (int i = 0; i < nlisten; i++)
		watch_listen_socket(&listen_socks[i], true);
	accept_paused = false;
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
	ReleaseExternalFD();
	if (c->prev)
		c->prev->next = c->next;
	else
		clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	if (c->refusing)
		nrefusing--;
	else
		nclients--;
	pfree(c);
}

/*
 * Refuse a connection cheaply.  Plain HTTP: one write of a canned 503, then
 * close.  TLS: a client would read clear text as a broken handshake, so it
 * is only closed (within the MAX_REFUSING allowance it gets a real 503 over
 * TLS instead; see accept_clients).
 */
static void
refuse_connection(int fd, bool plain)
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
	if (plain)
	{
		rc = send(fd, resp, sizeof(resp) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
		(void) rc;
	}
	close(fd);
	local_stats.connections_refused++;
}

/*
 * Accept what is pending on a listen socket.  Each client socket is
 * accounted to fd.c (AcquireExternalFD), so that the backend's own file
 * handling never runs out because of clients.
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
		bool		refusing = false;

		if (fd < 0)
		{
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
				errno == ENOMEM)
				pause_accepting(errno);
			return;				/* EAGAIN, or a transient error */
		}
		if (nclients >= bw_max_connections)
		{
			if (tls_ctx == NULL || nrefusing >= MAX_REFUSING)
			{
				refuse_connection(fd, tls_ctx == NULL);
				continue;
			}
			refusing = true;
		}
		if (!AcquireExternalFD())
		{
			refuse_connection(fd, tls_ctx == NULL);
			continue;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

		t = tls_ctx ? bw_transport_tls_new(fd, tls_ctx) : bw_transport_plain_new(fd);
		if (t == NULL)
		{
			close(fd);
			ReleaseExternalFD();
			continue;
		}
		c = MemoryContextAllocZero(TopMemoryContext, sizeof(Client));
		c->conn = bw_conn_new(t, refusing ? &refusing_limits : &limits, now_ms());
		if (c->conn == NULL)
		{
			/* bw_conn_new closed the transport */
			ReleaseExternalFD();
			pfree(c);
			continue;
		}
		c->fd = fd;
		c->refusing = refusing;
		bw_sockaddr_text((struct sockaddr *) &addr, c->peer, sizeof(c->peer));
		c->epoll_mask = EPOLLIN;
		ev.events = EPOLLIN;
		ev.data.ptr = c;
		if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0)
		{
			bw_conn_free(c->conn);
			ReleaseExternalFD();
			pfree(c);
			continue;
		}
		c->next = clients;
		if (clients)
			clients->prev = c;
		clients = c;
		if (refusing)
		{
			nrefusing++;
			local_stats.connections_refused++;
		}
		else
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
 * The client's address: the TCP peer, or behind a trusted proxy the first
 * untrusted hop of X-Forwarded-For, every such header counted (RFC 9110
 * lets a list header arrive split over several fields).
 */
static void
client_address(const Job *job, char *out, size_t outsize)
{
	const BwHttpRequest *req = job->req;
	StringInfoData xff;
	int			n = 0;

	if (trusted_proxies.n == 0 || !bw_cidr_match(&trusted_proxies, job->client->peer))
	{
		strlcpy(out, job->client->peer, outsize);
		return;
	}
	initStringInfo(&xff);
	for (int i = 0; i < req->nheaders; i++)
	{
		if (pg_strcasecmp(req->headers[i].name, "x-forwarded-for") != 0)
			continue;
		if (n++ > 0)
			appendStringInfoString(&xff, ", ");
		appendStringInfoString(&xff, req->headers[i].value);
	}
	bw_forwarded_client(&trusted_proxies, job->client->peer,
						n > 0 ? xff.data : NULL, out, outsize);
	pfree(xff.data);
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

	/* the text outlives SPI_finish(): build it in the caller's context */
	{
		MemoryContext spicxt = MemoryContextSwitchTo(cxt);

		initStringInfo(&out);
		MemoryContextSwitchTo(spicxt);
	}
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
	return out.data;
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
	BwRouteKind kind;

	if (req->error_status != 0)
	{
		set_answer(job, req->error_status,
				   req->error_message ? req->error_message : "bad request");
		job->close_after = true;
		return false;
	}
	if (job->client->refusing)
	{
		set_answer(job, 503, "too many open connections");
		job->close_after = true;
		return false;
	}
	kind = bw_route_classify(&webhook_paths, req->path);
	if (kind == BW_ROUTE_METRICS)
	{
		char		addr[BW_ADDRSTRLEN];

		if (req->method != HTTP_GET && req->method != HTTP_HEAD)
		{
			set_answer(job, 405, "method not allowed");
			job->extra_headers = "Allow: GET, HEAD\r\n";
			return false;
		}
		/* behind a trusted proxy, the proxy's client is who asks */
		client_address(job, addr, sizeof(addr));
		if (!bw_cidr_match(&metrics_allow, addr))
		{
			set_answer(job, 403, "metrics are not served to this address");
			return false;
		}
		return true;
	}
	if (kind == BW_ROUTE_HEALTHZ)
	{
		if (req->method != HTTP_GET && req->method != HTTP_HEAD)
		{
			set_answer(job, 405, "method not allowed");
			job->extra_headers = "Allow: GET, HEAD\r\n";
			return false;
		}
		return true;
	}
	/* a webhook path, or nothing: the database knows (the cache may lag) */
	return true;
}

/* A webhook looked up once per batch. */
typedef struct WebhookCacheEntry
{
	const char *path;
	BwWebhook  *webhook;
} WebhookCacheEntry;

/*
 * The database part of one job that needs no ingest (health, metrics, 404,
 * 405), or the delivery it carries, ready for the log phase.
 */
static void
route_job(Job *job, WebhookCacheEntry *cache, int *ncache, TimestampTz batch_now,
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
	if (req->body_discarded)
	{
		/* the path cache did not know this webhook yet: never guess */
		paths_reload = true;
		set_answer(job, 503, "webhook configuration is being reloaded, retry");
		return;
	}

	headers = palloc(sizeof(BwHeader) * Max(req->nheaders, 1));
	for (i = 0; i < req->nheaders; i++)
	{
		headers[i].name = req->headers[i].name;
		headers[i].value = req->headers[i].value;
	}
	client_address(job, remote, sizeof(remote));

	d = palloc0(sizeof(BwDelivery));
	d->webhook = wh;
	d->body = req->body;
	d->body_len = req->body_len;
	d->headers = headers;
	d->nheaders = req->nheaders;
	d->remote_addr = remote[0] ? pstrdup(remote) : NULL;
	d->received_at = batch_now - (mono_now - req->received_at_ms) * 1000;
	d->deferred = (bw_apply_mode == BW_APPLY_DEFERRED);
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
	if (d->http_status == 200 && d->event_id > 0)
		appendStringInfo(&body, "{\"ok\":true,\"event_id\":" INT64_FORMAT ",\"state\":\"%s\"}",
						 d->event_id, d->state);
	else if (d->http_status == 200)
		appendStringInfo(&body, "{\"ok\":true,\"event_id\":null,\"state\":\"%s\"}",
						 d->state);
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

/* qsort comparator of the log phase; ties keep batch order */
static int
log_order_cmp(const void *a, const void *b)
{
	const Job  *ja = *(Job *const *) a;
	const Job  *jb = *(Job *const *) b;
	int			c = bw_delivery_log_cmp(ja->delivery, jb->delivery);

	if (c != 0)
		return c;
	return (ja > jb) - (ja < jb);
}

/* qsort comparator of the apply phase; ties keep batch order */
static int
apply_order_cmp(const void *a, const void *b)
{
	const Job  *ja = *(Job *const *) a;
	const Job  *jb = *(Job *const *) b;
	int			c = bw_delivery_apply_cmp(ja->delivery, jb->delivery);

	if (c != 0)
		return c;
	return (ja > jb) - (ja < jb);
}

/*
 * Log and apply the deliveries of a batch, inside its transaction.
 *
 * The log phase goes in order of (webhook, body digest), the key of the
 * dedup index; the apply phase in order of (environment, order id), keeping
 * request order within an order.  Two listener workers (or a listener and
 * the dispatcher) then take the same locks in the same order and cannot
 * deadlock, whatever their batches hold.  An apply that runs out of time
 * fails alone; what the batch had no time or room left for goes to the
 * dispatcher, logged and answered as pending.
 */
static void
ingest_batch(Job *jobs, int njobs)
{
	Job		  **todo = palloc(sizeof(Job *) * njobs);
	BwDelivery **batch = palloc(sizeof(BwDelivery *) * njobs);
	int			n = 0;

	for (int i = 0; i < njobs; i++)
	{
		if (jobs[i].delivery != NULL)
		{
			bw_delivery_digest(jobs[i].delivery);
			bw_delivery_reserve_id(jobs[i].delivery);
			todo[n++] = &jobs[i];
		}
	}
	if (n == 0)
		return;
	if (n > 1)
		qsort(todo, n, sizeof(Job *), log_order_cmp);
	for (int i = 0; i < n; i++)
		batch[i] = todo[i]->delivery;
	bw_ingest_log_batch(batch, n);

	/* the apply phase: only what was logged to be applied now */
	{
		int			m = 0;

		for (int i = 0; i < n; i++)
		{
			if (todo[i]->delivery->apply_payload != NULL)
				todo[m++] = todo[i];
		}
		if (m > 1)
			qsort(todo, m, sizeof(Job *), apply_order_cmp);
		for (int i = 0; i < m; i++)
			batch[i] = todo[i]->delivery;
		bw_apply_deadline_arm();
		bw_ingest_apply_batch(batch, m);
		bw_apply_deadline_disarm();
	}

	for (int i = 0; i < njobs; i++)
	{
		if (jobs[i].delivery != NULL)
			answer_delivery(&jobs[i]);
	}
}

/*
 * Run the database part of a batch in one transaction.  On any error the
 * transaction is rolled back and every job that needed it is answered 503:
 * nothing is acknowledged that was not committed.  A SIGTERM while the
 * batch runs cancels it (fast shutdown never waits for a slow trigger).
 */
static void
run_batch_transaction(Job *jobs, int njobs)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	TimestampTz batch_now = GetCurrentTimestamp();
	int64		mono_now = now_ms();
	volatile bool committed = false;

	bw_worker_set_cancel_on_term(true);
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "biteship_webhook: ingest batch");
	bw_notify_defer_begin();

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
			/* when it is, its webhooks must be read */
			paths_reload = true;
		}
		else
		{
			for (int i = 0; i < njobs; i++)
				if (jobs[i].needs_db)
					route_job(&jobs[i], cache, &ncache, batch_now, mono_now);
			ingest_batch(jobs, njobs);
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
		bw_apply_deadline_disarm();
		AbortCurrentTransaction();
	}
	PG_END_TRY();

	/* a cancel that arrived too late to matter was meant for this batch */
	bw_worker_set_cancel_on_term(false);
	QueryCancelPending = false;

	/*
	 * The batch's NOTIFYs go out after its commit (see bw_notify_defer_send),
	 * and after its answers: finish_batch().
	 */
	if (committed)
		notify_pending = true;
	else
		bw_notify_defer_discard();
	stats_pending = true;

	MemoryContextSwitchTo(oldcxt);
	pgstat_report_activity(STATE_IDLE, NULL);

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
 * What a batch leaves for after its answers are sent: nothing in it can
 * change an answer, and the clients need not wait for it.  The NOTIFYs of
 * a committed batch, in a short transaction of their own; then table and
 * WAL statistics (rate-limited inside), which autovacuum relies on to
 * vacuum orders and the events log.
 */
static void
finish_batch(void)
{
	if (notify_pending)
	{
		notify_pending = false;
		bw_notify_defer_send();
	}
	if (stats_pending)
	{
		stats_pending = false;
		pgstat_report_stat(false);
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
 * Parse what a client has buffered and read more; mark it ready when
 * requests are complete.  Returns false when the client was dropped.
 */
static bool
read_client(Client *c, int64 now)
{
	int			rc = bw_conn_on_readable(c->conn, now);

	if (rc < 0 && !bw_conn_want_write(c->conn))
	{
		drop_client(c);
		return false;
	}
	if (rc > 0)
		c->ready = true;
	return true;
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
		bool		paused;

		next = c->next;
		paused = !bw_conn_want_read(c->conn);
		if (bw_conn_want_write(c->conn) && bw_conn_flush(c->conn, now) < 0)
		{
			drop_client(c);
			continue;
		}

		/*
		 * Answering, or output draining, frees the connection to parse
		 * more.  Requests already in the input buffer raise no new socket
		 * event, so parse them now.
		 */
		if ((c->answered || paused) && bw_conn_want_read(c->conn))
		{
			c->answered = false;
			if (!read_client(c, now))
				continue;
		}
		c->answered = false;
		update_interest(c);
	}
}

/*
 * Handle the events of the private epoll fd: new connections on the listen
 * sockets, and client sockets that became readable or writable.
 */
static void
service_epoll(void)
{
	struct epoll_event evs[MAX_EPOLL_EVENTS];
	int			n = epoll_wait(epoll_fd, evs, MAX_EPOLL_EVENTS, 0);
	int64		now = now_ms();

	/* accept first: a client in the same batch of events cannot be a new one */
	for (int i = 0; i < n; i++)
	{
		if (is_listen_sock(evs[i].data.ptr))
		{
			if (!accept_paused)
				accept_clients(((ListenSock *) evs[i].data.ptr)->fd);
			evs[i].data.ptr = NULL;
		}
	}

	for (int i = 0; i < n; i++)
	{
		Client	   *c = (Client *) evs[i].data.ptr;
		bool		force_read = false;
		int			rc;

		if (c == NULL)
			continue;
		if (evs[i].events & EPOLLOUT)
		{
			bool		paused = !bw_conn_want_read(c->conn);

			if (bw_conn_flush(c->conn, now) < 0)
			{
				drop_client(c);
				continue;
			}
			/* output drained below the bound: parse what waits */
			force_read = paused && bw_conn_want_read(c->conn);
		}
		if ((evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) || force_read)
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
 * Enforce timeouts, resume accepting and retry binding when due; returns
 * the wait until the next deadline in ms, or -1.
 */
static long
check_timeouts(void)
{
	int64		now = now_ms();
	int64		next = PG_INT64_MAX;
	Client	   *nextc;

	if (accept_paused)
	{
		if (now >= accept_resume_ms)
			resume_accepting();
		else
			next = accept_resume_ms;
	}
	if (listen_retry_ms > 0)
	{
		if (now >= listen_retry_ms)
			open_listen_sockets();
		if (listen_retry_ms > 0 && listen_retry_ms < next)
			next = listen_retry_ms;
	}

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
	 * SIGTERM asks for a shutdown at the end of the current turn, and
	 * cancels the batch in flight, if any (its requests are answered 503).
	 * Interrupts are never held, so a query cancel, the apply timeout or
	 * lock_timeout end a batch that waits on a lock.
	 */
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, bw_worker_sigterm);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(bw_database,
										 bw_role[0] != '\0' ? bw_role : NULL, 0);
	pgstat_report_appname("biteship_webhook listener");
	bw_worker_session_settings();

	batch_cxt = AllocSetContextCreate(TopMemoryContext,
									  "biteship_webhook listener batch",
									  ALLOCSET_DEFAULT_SIZES);
	load_settings();

	epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (epoll_fd < 0)
		ereport(FATAL,
				(errcode_for_socket_access(),
				 errmsg("biteship_webhook listener: could not create epoll instance: %m")));
	ReserveExternalFD();

	load_tls(true);
	open_listen_sockets();
	refresh_webhook_paths();

	wes = BW_CREATE_WAIT_EVENT_SET(3);
	AddWaitEventToSet(wes, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wes, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(wes, WL_SOCKET_READABLE, epoll_fd, NULL, TAG_EPOLL);

	for (;;)
	{
		WaitEvent	events[3];
		long		timeout;
		int			n;

		timeout = check_timeouts();
		if (nclients + nrefusing != last_nclients)
		{
			/* timeouts closed connections: publish before sleeping */
			bw_stats_flush(&local_stats);
			bw_stats_set_connections(listener_id, nclients + nrefusing);
			last_nclients = nclients + nrefusing;
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
		}

		/*
		 * A query cancel between batches has nothing to cancel: ignore it,
		 * as postgres.c does while it waits for a command, rather than let
		 * it become an ERROR outside any handler (a FATAL).
		 */
		QueryCancelPending = false;
		CHECK_FOR_INTERRUPTS();
		if (ShutdownRequestPending)
			break;

		if (ConfigReloadPending)
		{
			bool		was_broken = tls_broken;

			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			bw_worker_session_settings();
			load_settings();
			load_tls(false);
			if (extension_seen)
				check_apply_role();
			if (tls_broken && !was_broken)
				close_listen_sockets();
			else if (!tls_broken && nlisten == 0)
				open_listen_sockets();
		}

		refresh_webhook_paths();
		service_epoll();
		leftover = process_batch();
		flush_clients();
		finish_batch();

		bw_stats_flush(&local_stats);
		bw_stats_set_connections(listener_id, nclients + nrefusing);
		last_nclients = nclients + nrefusing;
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
