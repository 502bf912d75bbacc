/*-------------------------------------------------------------------------
 *
 * curl_engine.h
 *	  The libcurl engine of the outbound half: one curl multi handle whose
 *	  sockets live in a private epoll fd and whose timer the caller waits
 *	  on.  It knows requests and their completions, not tables.
 *
 * Driving it from a latch-aware loop:
 *
 *		add bw_curl_engine_fd(e) to the WaitEventSet (readable)
 *		loop:
 *			timeout = min(bw_curl_engine_timeout(e), other deadlines)
 *			WaitEventSetWait(...)
 *			bw_curl_engine_run(e);
 *			while ((call = bw_curl_engine_next_done(e)) != NULL)
 *				-> record call's outcome, then bw_http_call_release(call)
 *			bw_curl_engine_start(e, new_call) for every free slot
 *
 * A call that finishes frees its slot at once: nothing waits for the
 * slowest request of a batch.  Connections are kept alive and reused by the
 * multi handle's connection cache.  Redirects are never followed; only
 * http and https are allowed; TLS peers are verified (the system CA bundle,
 * or ca_file).  Response headers and bodies are kept up to a bound each.
 *
 * Pure C: no backend calls, no palloc, no ereport.  The engine belongs to
 * one process and is never placed in shared memory.  libcurl may resolve
 * names in a helper thread; every call into libcurl blocks all signals
 * first, so that such a thread never runs a signal handler of the server.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BW_CURL_ENGINE_H
#define BW_CURL_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "outbound_policy.h"

typedef struct BwCurlEngine BwCurlEngine;

typedef struct BwCurlEngineOptions
{
	long		max_total_connections;	/* connections kept open, in total */
	long		max_host_connections;	/* at once to one host */
	const char *ca_file;		/* NULL or "": the system bundle */
	const char *user_agent;
} BwCurlEngineOptions;

/* One request and, once done, its result. */
typedef struct BwHttpCall
{
	/* request: filled by the caller; the strings must outlive the call */
	const char *method;			/* "POST", "GET", ... */
	const char *url;
	const char *const *headers; /* "Name: value" lines */
	int			nheaders;
	const char *body;
	size_t		body_len;
	long		timeout_ms;		/* whole request; 0: none */
	long		connect_timeout_ms; /* 0: libcurl's default */
	size_t		max_response_headers;
	size_t		max_response_body;
	void	   *user;

	/* result: filled by the engine */
	bool		done;
	long		status;			/* HTTP status; 0 when none was received */
	BwTransportError terr;
	char		error[256];		/* "" when an HTTP status was received */
	char	   *resp_headers;	/* NUL-terminated, bounded; may be NULL */
	size_t		resp_headers_len;
	char	   *resp_body;		/* NUL-terminated, bounded; may be NULL */
	size_t		resp_body_len;
	bool		resp_body_truncated;
	char		retry_after[64];	/* the Retry-After value, or "" */
	double		total_seconds;

	/* private */
	void	   *easy;
	void	   *slist;
	struct BwHttpCall *next_done;
	struct BwHttpCall *active_prev;
	struct BwHttpCall *active_next;
} BwHttpCall;

/* A new engine; NULL with a message in err on failure. */
extern BwCurlEngine *bw_curl_engine_new(const BwCurlEngineOptions *opts,
										char *err, size_t errsize);

/* Abort every call in flight (they are not reported) and free the engine. */
extern void bw_curl_engine_free(BwCurlEngine *e);

/* The private epoll fd: readable when a socket of the engine is ready. */
extern int	bw_curl_engine_fd(const BwCurlEngine *e);

/*
 * Milliseconds until the engine needs bw_curl_engine_run() even without
 * socket activity (0: now), or -1 when it has no timer.
 */
extern long bw_curl_engine_timeout(const BwCurlEngine *e);

/*
 * Start a call.  On failure the call is done at once, with terr and error
 * set, and false is returned (it is not queued as done: the caller records
 * it itself).
 */
extern bool bw_curl_engine_start(BwCurlEngine *e, BwHttpCall *call);

/* Abort one call in flight; it is not reported as done. */
extern void bw_curl_engine_abort(BwCurlEngine *e, BwHttpCall *call);

/* Service ready sockets and expired timers; completed calls are queued. */
extern void bw_curl_engine_run(BwCurlEngine *e);

/* The next completed call, or NULL. */
extern BwHttpCall *bw_curl_engine_next_done(BwCurlEngine *e);

/* Calls in flight. */
extern int	bw_curl_engine_running(const BwCurlEngine *e);

/* Free the result buffers of a call (the call itself is the caller's). */
extern void bw_http_call_release(BwHttpCall *call);

/*
 * Is this a URL the engine will request: http or https, a host, no user
 * name or password in it (credentials belong in headers), no fragment?
 * false with a message in err when not.
 */
extern bool bw_url_check(const char *url, char *err, size_t errsize);

#endif							/* BW_CURL_ENGINE_H */
