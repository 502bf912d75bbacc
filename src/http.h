/*-------------------------------------------------------------------------
 *
 * http.h
 *	  HTTP/1.x server connection state machine.
 *
 * This module owns everything between a transport (transport.h) and the
 * webhook logic: reading bytes, framing requests with http_parser,
 * enforcing the size and time limits, pipelining, "Expect: 100-continue",
 * buffering and writing responses, and closing connections gracefully.  It
 * is pure C (no PostgreSQL headers, no threads, no blocking calls); every
 * allocation comes from malloc and is bounded by BwHttpLimits, and bad
 * input never aborts: it yields either a parsed request or an error request.
 *
 * Driving a connection from a level-triggered epoll loop
 * ------------------------------------------------------
 * Call one "service" routine for a connection on every epoll event for its
 * fd (EPOLLIN, EPOLLOUT, EPOLLHUP, EPOLLERR alike), after every
 * bw_conn_respond() on it, and when bw_conn_next_deadline() has passed:
 *
 *		if (now >= bw_conn_next_deadline(c) && bw_conn_check_timeout(c, now) < 0)
 *			-> free
 *		if (bw_conn_want_read(c) && bw_conn_on_readable(c, now) < 0)
 *			-> free
 *		while (!busy enough && (req = bw_conn_pop_request(c)) != NULL)
 *			-> hand req to the worker; answer later, in pop order
 *		if (bw_conn_flush(c, now) < 0)
 *			-> free
 *		epoll interest: EPOLLIN iff bw_conn_want_read(c),
 *						EPOLLOUT iff bw_conn_want_write(c)
 *		timer: bw_conn_next_deadline(c)
 *
 * Calling on_readable after answering matters: while the pipeline is
 * full, already-received bytes wait in the connection's input buffer and no
 * socket event will announce them.  Reads are bounded per call, so the
 * loop must be level-triggered (or re-run the service routine itself).
 * EPOLLHUP/EPOLLERR are reported whatever the interest set; on_readable
 * notices a reset peer only when it reads, so a caller that cannot make
 * progress on such a connection should simply free it.
 *
 * Requests are always answered in pop order.  A request with error_status
 * != 0 is answered with that status (bw_conn_respond_error is the short
 * way) and the connection closes after it.  Once a close response has been
 * written the connection half-closes and drains the client's remaining
 * input for a short while (so that the client sees the response instead of
 * a TCP reset) before on_readable or check_timeout report it finished.
 *
 * Strictness (RFC 9112).  Besides what http_parser refuses, a request is
 * answered 400 and the connection closed when a header field name is not a
 * token (whitespace before the colon, a space inside the name), when a line
 * of the header block starts with whitespace (obsolete line folding, or a
 * first header line indented), when an HTTP/1.1 request has no Host or two,
 * or a Host with characters a host cannot have, when Transfer-Encoding is
 * sent twice or on an HTTP/1.0 request, and 501 when it names anything but
 * a lone "chunked".  Nothing after such a request is parsed, so it can
 * never desynchronise the next pipelined one.
 *
 * Memory.  Per connection: a fixed input buffer, the header scratch (at
 * most max_header_size), at most max_pipelined complete requests, and
 * unsent output that stops further parsing once it passes
 * max_pending_output.  Across connections: request bodies are charged to
 * the optional BwHttpBudget.
 *
 * A timeout of 0 (or less) disables it.
 *
 * src/http.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BW_HTTP_H
#define BW_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "transport.h"

/*
 * A budget of request-body bytes shared by every connection of one worker.
 * A request whose body would take the total past the limit is answered 503
 * (with the connection closed) instead of being buffered.  Bodies declared
 * with Content-Length are charged in full when their headers are complete;
 * chunked bodies as their bytes arrive.  The charge is returned when the
 * request is freed.  limit 0 means no limit.
 */
typedef struct BwHttpBudget
{
	size_t		limit;
	size_t		used;
} BwHttpBudget;

/*
 * Asked once per request, when its headers are complete: does this request
 * need its body?  Returning false makes the connection read the body off
 * the wire (keeping the framing and keep-alive intact) without storing it;
 * the request then arrives with body_discarded set and an empty body.
 */
typedef bool (*BwHttpWantsBody) (void *arg, int method, const char *path);

typedef struct BwHttpLimits
{
	/*
	 * Bytes of request line + headers, counted on the wire from the first
	 * byte after the previous request (stray CRLFs included) through the
	 * blank line.  Over it: 414 if no header line has started yet (the
	 * request line is too long), else 431.  Capped at 64 MB.
	 */
	size_t		max_header_size;
	/*
	 * Body bytes.  Content-Length is checked as soon as the headers are
	 * complete (413 before any body byte is read, and instead of 100
	 * Continue); chunked bodies are checked on each chunk size line.
	 */
	size_t		max_body_size;
	/*
	 * Requests that are complete but unanswered (queued + popped) before
	 * parsing pauses.  Values below 1 mean 1.
	 */
	int			max_pipelined;
	/*
	 * Unsent response bytes above which the connection stops reading and
	 * parsing more requests, so that a client that pipelines requests and
	 * never reads the answers cannot make us buffer without bound.  0
	 * means BW_HTTP_DEFAULT_MAX_OUTPUT.
	 */
	size_t		max_pending_output;
	int64_t		request_timeout_ms; /* first byte -> complete (408 + close);
									 * also how long a new connection may
									 * stay silent (silent close) */
	int64_t		keepalive_timeout_ms;	/* idle between requests; silent
										 * close */
	int64_t		write_timeout_ms;	/* no write progress for this long while
									 * output is pending: drop; 0 = use
									 * request_timeout_ms */
	BwHttpBudget *budget;		/* may be NULL: bodies are not budgeted */
	BwHttpWantsBody wants_body; /* may be NULL: every body is kept */
	void	   *wants_body_arg;
} BwHttpLimits;

#define BW_HTTP_DEFAULT_MAX_OUTPUT	(32 * 1024)

typedef struct BwHttpHeader
{
	char	   *name;			/* NUL-terminated, as received */
	char	   *value;			/* NUL-terminated, without leading or
								 * trailing blanks */
} BwHttpHeader;

typedef struct BwHttpRequest
{
	struct BwHttpRequest *next; /* internal queue link */
	int			method;			/* enum http_method from http_parser.h */
	char	   *path;			/* URL path only (no query), never NULL; ""
								 * for error requests that have no URL */
	char	   *query;			/* without '?', or NULL */
	BwHttpHeader *headers;		/* NULL when nheaders == 0 */
	int			nheaders;
	char	   *body;			/* NUL-terminated; may contain NULs; never
								 * NULL */
	size_t		body_len;
	int			http_major;
	int			http_minor;
	bool		keep_alive;		/* http_should_keep_alive at message end */
	bool		body_discarded; /* wants_body said no: the body was read and
								 * dropped, body_len is 0 */
	int			error_status;	/* 0 = well-formed; else the status to
								 * answer with, and the connection closes */
	const char *error_message;	/* static string, for bw_http_json_error */
	int64_t		received_at_ms; /* when its first byte arrived */
	void	   *user;			/* for the caller */
} BwHttpRequest;

typedef struct BwConn BwConn;	/* opaque */

/* Takes ownership of t (also on failure); NULL on OOM. */
extern BwConn *bw_conn_new(BwTransport *t, const BwHttpLimits *limits,
						   int64_t now_ms);

/*
 * Close the transport and free buffers and queued requests.  Requests that
 * were popped and not yet answered stay valid: free them with
 * bw_http_request_free().
 */
extern void bw_conn_free(BwConn *c);
extern int	bw_conn_fd(const BwConn *c);
/* The connection's transport, e.g. to ask a TLS one why it failed. */
extern const BwTransport *bw_conn_transport(const BwConn *c);

/*
 * Drive the handshake, parse buffered input, read (a bounded number of
 * times) and parse more.  Returns the number of complete requests waiting
 * to be popped (>= 0), or -1 when the connection is finished and must be
 * freed.  A framing error queues one request with error_status set (after
 * any earlier good pipelined requests); nothing after it is parsed.  An
 * interim "100 Continue" is written from here.
 */
extern int	bw_conn_on_readable(BwConn *c, int64_t now_ms);

/* Pop the oldest complete request, or NULL.  Answer in pop order. */
extern BwHttpRequest *bw_conn_pop_request(BwConn *c);

/*
 * Queue the response to req (popped from c) and free req.  Connection:
 * close is sent when close_after, req->error_status, !req->keep_alive (so
 * HTTP/1.0 without keep-alive) or the peer has already half-closed; after
 * it no further request is parsed, queued unpopped requests are dropped and
 * later responses to requests popped earlier are discarded.  extra_headers
 * (each line ending in \r\n) may be NULL; body may be NULL when body_len is
 * 0.  HEAD requests get headers only.  Safe to call on a connection that
 * has failed: req is then just freed.
 */
extern void bw_conn_respond(BwConn *c, BwHttpRequest *req, int status,
							const char *extra_headers, const char *body,
							size_t body_len, bool close_after);

/* Answer an error request with its error_status and a JSON error body. */
extern void bw_conn_respond_error(BwConn *c, BwHttpRequest *req);

/*
 * Write queued output.  0 = everything written (or nothing to write),
 * 1 = more remains (wait for want_write/want_read), -1 = error, or the
 * connection is finished and must be freed.
 */
extern int	bw_conn_flush(BwConn *c, int64_t now_ms);

/*
 * want_write: output is pending, or flush has a state change to make (start
 * the graceful close, or report the end): arm EPOLLOUT, it fires at once.
 * want_read: false while paused (pipeline full) or closing.
 */
extern bool bw_conn_want_write(const BwConn *c);
extern bool bw_conn_want_read(const BwConn *c);
extern bool bw_conn_is_busy(const BwConn *c);	/* popped, unanswered */

/*
 * Earliest instant at which bw_conn_check_timeout must be called, or
 * INT64_MAX.  While requests are queued or popped and unanswered only the
 * write timeout is armed (when output is pending and the peer does not
 * take it).
 */
extern int64_t bw_conn_next_deadline(const BwConn *c);

/*
 * Enforce timeouts: a half-received request past request_timeout gets a
 * 408 and the connection closes after it (0 is returned; flush next); an
 * idle connection past keepalive_timeout, a stalled write past
 * write_timeout, a handshake past request_timeout or an expired drain after
 * a close are finished (-1: free now).
 */
extern int	bw_conn_check_timeout(BwConn *c, int64_t now_ms);

/* Free a request (one popped from a connection that has been freed). */
extern void bw_http_request_free(BwHttpRequest *req);

extern const char *bw_http_reason(int status);

/*
 * Write {"ok":false,"error":"<message>"} (JSON-escaped, truncated to fit)
 * into buf, NUL-terminated; returns its length (0 if bufsize < 24).
 */
extern size_t bw_http_json_error(char *buf, size_t bufsize,
								 const char *message);

/* Case-insensitive lookup of the first header called name; NULL if none. */
extern const char *bw_http_header(const BwHttpRequest *req, const char *name);

#endif							/* BW_HTTP_H */
