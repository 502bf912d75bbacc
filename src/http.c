/*-------------------------------------------------------------------------
 *
 * http.c
 *	  HTTP/1.x server connection state machine on top of http_parser.
 *
 * This file owns the per-connection HTTP logic of the webhook receiver:
 * input and output buffering, request framing (all of it done by
 * http_parser; nothing here scans request lines or headers by hand),
 * limits, pipelining, Expect: 100-continue, response serialization,
 * timeouts and graceful close.  See http.h for the API and for how to drive
 * it from an event loop.
 *
 * How parsing is organised: the parser is paused from on_headers_complete
 * and from on_message_complete, so every http_parser_execute() call stays
 * within one phase of one message (idle/header phase or body phase).  That
 * lets us count header bytes exactly on the wire (the header phase is fed
 * at most one byte more than the remaining allowance), keep per-message
 * bookkeeping simple, and stop between messages when the pipeline is full,
 * leaving the unparsed bytes in the input buffer for later.
 *
 * The global http_parser header limit (http_parser_set_max_header_size) is
 * raised out of the way; our own limit is per connection and can change on
 * reload.
 *
 * src/http.c
 *
 *-------------------------------------------------------------------------
 */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <http_parser.h>

#include "http.h"
#include "transport.h"

/* Size of the (fixed) input buffer. */
#define BW_READ_BUFSIZE			16384
/* Reads per bw_conn_on_readable call, so one busy client cannot starve. */
#define BW_MAX_READS_PER_CALL	16
/* Output buffers bigger than this are released once drained. */
#define BW_OUT_KEEP_CAP			65536
/* After a close response: how long and how much we drain before close. */
#define BW_LINGER_MS			2000
#define BW_LINGER_MAX_BYTES		(1024 * 1024)
/* http_parser_url stores 16-bit offsets. */
#define BW_MAX_URL_LEN			65535
/* Chunked framing allowance per chunk (size line, CRLFs), beyond headers. */
#define BW_CHUNK_OVERHEAD		24
/* Hard caps on configurable limits. */
#define BW_MAX_HEADER_LIMIT		((size_t) 64 * 1024 * 1024)
/* Value given to http_parser's own (process-wide) header limit. */
#define BW_PARSER_HEADER_LIMIT	0x7fffffffU

static const char continue_response[] = "HTTP/1.1 100 Continue\r\n\r\n";

/* Where we are within the header lines of the message being parsed. */
typedef enum HeaderState
{
	HS_NONE,					/* no header line started yet */
	HS_FIELD,					/* inside a header name */
	HS_VALUE					/* inside a header value */
} HeaderState;

/*
 * A request plus private bookkeeping.  The public struct is first so that
 * a BwHttpRequest pointer can be converted back.
 */
typedef struct BwReq
{
	BwHttpRequest pub;
	char	   *strings;		/* owns path, query, header names/values */
	size_t		body_cap;
	size_t		body_limit;		/* most body bytes this request may carry */
	size_t		body_seen;		/* body bytes received (kept or not) */
	bool		discard_body;	/* read the body, do not keep it */
	bool		continue_pending;	/* 100 Continue owed once earlier
									 * requests are answered */
	BwHttpBudget *budget;		/* charged with 'charged' bytes */
	size_t		charged;
} BwReq;

struct BwConn
{
	BwTransport *t;
	BwHttpLimits limits;
	http_parser parser;

	/* input: in[in_off .. in_len) is received but not yet parsed */
	char	   *in;
	size_t		in_off;
	size_t		in_len;
	size_t		in_cap;
	int64_t		in_arrival_ms;	/* arrival of the oldest unparsed byte */

	/* output: out[out_off .. out_len) is waiting to be written */
	char	   *out;
	size_t		out_off;
	size_t		out_len;
	size_t		out_cap;
	int64_t		write_since_ms; /* last write progress; -1 = none pending */

	/* message being parsed */
	BwReq	   *cur;
	bool		in_body;		/* header phase done for cur */
	size_t		hdr_bytes;		/* wire bytes in the header phase */
	size_t		body_wire;		/* wire bytes in the body phase */
	size_t		nchunks;
	int64_t		req_start_ms;	/* -1 = no partial request */
	bool		hdr_prev_lf;	/* the last header-phase byte was LF */
	bool		seen_request;	/* a request has started on this
								 * connection */

	/* scratch: URL then header names/values (NUL-separated) of cur */
	char	   *sb;
	size_t		sb_len;
	size_t		sb_cap;
	size_t		url_len;
	HeaderState hstate;
	size_t	   *hoffs;			/* name/value offset pairs into sb */
	int			nhdr;
	int			hoffs_cap;		/* in pairs */

	/* set by parser callbacks, examined after http_parser_execute */
	bool		ev_headers_done;
	bool		ev_message_done;
	int			cb_status;
	const char *cb_message;
	bool		oom;

	/* complete requests not yet popped */
	BwReq	   *q_head;
	BwReq	   *q_tail;
	int			nqueued;
	int			npopped;		/* popped, not yet answered */

	bool		stop_parse;		/* no further request will be parsed */
	bool		closing;		/* a Connection: close response is queued */
	bool		read_closed;	/* peer sent EOF */
	bool		lingering;		/* half-closed, draining input */
	bool		dead;			/* finished: the owner must free us */
	bool		hs_want_write;
	bool		read_want_write;
	bool		write_want_read;

	int64_t		created_ms;
	int64_t		idle_since_ms;
	int64_t		linger_deadline_ms;
	size_t		linger_bytes;
};

static int	cb_message_begin(http_parser *p);
static int	cb_url(http_parser *p, const char *at, size_t len);
static int	cb_header_field(http_parser *p, const char *at, size_t len);
static int	cb_header_value(http_parser *p, const char *at, size_t len);
static int	cb_headers_complete(http_parser *p);
static int	cb_body(http_parser *p, const char *at, size_t len);
static int	cb_chunk_header(http_parser *p);
static int	cb_message_complete(http_parser *p);

static const http_parser_settings parser_settings = {
	.on_message_begin = cb_message_begin,
	.on_url = cb_url,
	.on_status = NULL,
	.on_header_field = cb_header_field,
	.on_header_value = cb_header_value,
	.on_headers_complete = cb_headers_complete,
	.on_body = cb_body,
	.on_message_complete = cb_message_complete,
	.on_chunk_header = cb_chunk_header,
	.on_chunk_complete = NULL,
};


/* ----------------------------------------------------------------
 *		small helpers
 * ----------------------------------------------------------------
 */

/*
 * Make *buf able to hold need bytes, growing geometrically but never past
 * limit.  Returns false on OOM or when need exceeds limit.
 */
static bool
buf_reserve(char **buf, size_t *cap, size_t need, size_t limit)
{
	size_t		newcap;
	char	   *nb;

	if (need <= *cap)
		return true;
	if (need > limit)
		return false;
	newcap = *cap < 256 ? 256 : *cap;
	while (newcap < need)
	{
		if (newcap > limit / 2)
		{
			newcap = limit;
			break;
		}
		newcap *= 2;
	}
	if (newcap > limit)
		newcap = limit;
	nb = realloc(*buf, newcap);
	if (nb == NULL)
		return false;
	*buf = nb;
	*cap = newcap;
	return true;
}

/*
 * Charge n body bytes of r to its budget; false (nothing charged) when they
 * do not fit.
 */
static bool
budget_take(BwReq *r, size_t n)
{
	BwHttpBudget *b = r->budget;

	if (b == NULL)
		return true;
	if (b->used > b->limit || n > b->limit - b->used)
		return false;
	b->used += n;
	r->charged += n;
	return true;
}

static inline bool
out_pending(const BwConn *c)
{
	return c->out_off < c->out_len;
}

static inline size_t
out_bytes(const BwConn *c)
{
	return c->out_len - c->out_off;
}

/*
 * Whether parsing must pause between messages: too many requests are
 * unanswered, or too much of their output is unsent (a client that
 * pipelines and never reads must not make us buffer without bound).
 */
static inline bool
input_paused(const BwConn *c)
{
	int			max = c->limits.max_pipelined < 1 ? 1 : c->limits.max_pipelined;

	return c->nqueued + c->npopped >= max ||
		out_bytes(c) > c->limits.max_pending_output;
}

static inline int64_t
write_timeout(const BwConn *c)
{
	return c->limits.write_timeout_ms > 0 ? c->limits.write_timeout_ms :
		c->limits.request_timeout_ms;
}

/*
 * Whether a state change is due that bw_conn_flush (or check_timeout)
 * performs without any I/O readiness: starting the graceful close once the
 * close response is out, or finishing after the peer's EOF.
 */
static bool
transition_due(const BwConn *c)
{
	if (c->dead || c->lingering || out_pending(c) || c->npopped > 0)
		return false;
	return c->closing || (c->read_closed && c->nqueued == 0);
}

/*
 * Whether the connection may read more request bytes from the transport.
 */
static bool
reading_allowed(const BwConn *c)
{
	return !c->dead && !c->stop_parse && !c->closing && !c->read_closed &&
		!c->lingering && !input_paused(c);
}

/*
 * Append bytes to the output buffer.  On OOM the connection fails.
 */
static bool
out_append(BwConn *c, const char *data, size_t len)
{
	if (c->dead)
		return false;
	if (len == 0)
		return true;
	/* reclaim written space before growing */
	if (c->out_off > 0 && c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
	else if (c->out_off > 0 && c->out_len + len > c->out_cap)
	{
		memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
		c->out_len -= c->out_off;
		c->out_off = 0;
	}
	if (c->out_len + len < c->out_len ||
		!buf_reserve(&c->out, &c->out_cap, c->out_len + len, SIZE_MAX))
	{
		c->dead = true;
		return false;
	}
	memcpy(c->out + c->out_len, data, len);
	c->out_len += len;
	return true;
}

/*
 * Does a block of extra header lines set its own Content-Type?
 */
static bool
has_content_type(const char *headers)
{
	const char *line = headers;

	while (line != NULL && *line != '\0')
	{
		if (strncasecmp(line, "Content-Type:", 13) == 0)
			return true;
		line = strstr(line, "\r\n");
		if (line != NULL)
			line += 2;
	}
	return false;
}

/*
 * Serialize one response into the output buffer.  The body is JSON unless
 * extra_headers names another Content-Type.
 */
static bool
append_response(BwConn *c, int status, const char *extra_headers,
				const char *body, size_t body_len, bool close, bool head)
{
	char		hdr[256];
	int			n;

	if (status < 100 || status > 999)
		status = 500;
	if (body == NULL)
		body_len = 0;
	n = snprintf(hdr, sizeof(hdr),
				 "HTTP/1.1 %d %s\r\n"
				 "%s"
				 "Content-Length: %zu\r\n"
				 "Connection: %s\r\n",
				 status, bw_http_reason(status),
				 has_content_type(extra_headers) ? "" :
				 "Content-Type: application/json\r\n",
				 body_len, close ? "close" : "keep-alive");
	if (n < 0 || (size_t) n >= sizeof(hdr))
	{
		c->dead = true;
		return false;
	}
	if (!out_append(c, hdr, (size_t) n))
		return false;
	if (extra_headers != NULL &&
		!out_append(c, extra_headers, strlen(extra_headers)))
		return false;
	if (!out_append(c, "\r\n", 2))
		return false;
	if (!head && !out_append(c, body, body_len))
		return false;
	return true;
}

/*
 * Reset everything that describes the message currently being parsed.
 * Does not touch c->cur (the caller decides what to do with it).
 */
static void
reset_message_state(BwConn *c)
{
	c->in_body = false;
	c->hdr_bytes = 0;
	c->body_wire = 0;
	c->nchunks = 0;
	c->req_start_ms = -1;
	c->hdr_prev_lf = false;
	c->sb_len = 0;
	c->url_len = 0;
	c->hstate = HS_NONE;
	c->nhdr = 0;
}

/*
 * Drop the partially parsed message, if any.
 */
static void
drop_partial(BwConn *c)
{
	if (c->cur != NULL)
	{
		bw_http_request_free(&c->cur->pub);
		c->cur = NULL;
	}
	reset_message_state(c);
}

/*
 * Append a complete request to the queue.
 */
static void
queue_push(BwConn *c, BwReq *r)
{
	r->pub.next = NULL;
	if (c->q_tail != NULL)
		c->q_tail->pub.next = &r->pub;
	else
		c->q_head = r;
	c->q_tail = r;
	c->nqueued++;
}

/*
 * Free all requests that were queued and not popped.
 */
static void
queue_clear(BwConn *c)
{
	while (c->q_head != NULL)
	{
		BwReq	   *r = c->q_head;

		c->q_head = (BwReq *) r->pub.next;
		bw_http_request_free(&r->pub);
	}
	c->q_tail = NULL;
	c->nqueued = 0;
}

/*
 * Make sure a request has a non-NULL path and body, as the API promises.
 */
static bool
req_fill_defaults(BwReq *r)
{
	if (r->pub.path == NULL)
	{
		if (r->strings == NULL)
		{
			r->strings = malloc(1);
			if (r->strings == NULL)
				return false;
			r->strings[0] = '\0';
		}
		/* strings always ends with a NUL byte */
		r->pub.path = r->strings;
		while (*r->pub.path != '\0')
			r->pub.path++;
	}
	if (r->pub.body == NULL)
	{
		r->pub.body = malloc(1);
		if (r->pub.body == NULL)
			return false;
		r->body_cap = 1;
		r->pub.body_len = 0;
	}
	r->pub.body[r->pub.body_len] = '\0';
	return true;
}

/*
 * A request is complete (or failed): fill in its defaults, queue it, and get
 * ready for the next message.  Returns false, with the connection dead,
 * when out of memory.
 */
static bool
finish_request(BwConn *c, BwReq *r)
{
	r->continue_pending = false;
	if (!req_fill_defaults(r))
	{
		bw_http_request_free(&r->pub);
		c->dead = true;
		return false;
	}
	queue_push(c, r);
	reset_message_state(c);
	return true;
}

/*
 * Queue an error request for the current message and stop parsing.  The
 * partially parsed request (with whatever it has: method, path, headers)
 * becomes the error request; the rest of the input is discarded.
 */
static void
queue_error(BwConn *c, int status, const char *message)
{
	BwReq	   *r = c->cur;

	c->cur = NULL;
	if (r == NULL)
	{
		r = calloc(1, sizeof(BwReq));
		if (r == NULL)
		{
			c->dead = true;
			return;
		}
		r->pub.method = HTTP_GET;
		r->pub.http_major = 1;
		r->pub.http_minor = 1;
		r->pub.received_at_ms = c->req_start_ms >= 0 ? c->req_start_ms :
			c->in_arrival_ms;
	}
	if (r->pub.http_major == 0 && r->pub.http_minor == 0)
	{
		r->pub.http_major = 1;
		r->pub.http_minor = 1;
	}
	r->pub.body_len = 0;
	r->pub.keep_alive = false;
	r->pub.error_status = status;
	r->pub.error_message = message;
	if (!finish_request(c, r))
		return;
	c->stop_parse = true;
	c->in_off = c->in_len = 0;
}

/*
 * Record an error detected inside a parser callback; the callback then
 * returns nonzero so that http_parser stops.
 */
static int
cb_fail(BwConn *c, int status, const char *message)
{
	if (c->cb_status == 0)
	{
		c->cb_status = status;
		c->cb_message = message;
	}
	return -1;
}

/*
 * Status for an oversized request head: 414 while still in the request
 * line, 431 once header lines have started.
 */
static int
header_overflow_status(const BwConn *c)
{
	return c->hstate == HS_NONE ? 414 : 431;
}

static const char *
header_overflow_message(const BwConn *c)
{
	return c->hstate == HS_NONE ? "request line too long" :
		"request header fields too large";
}

/*
 * Append to the scratch buffer, keeping room for one more (NUL) byte.  The
 * scratch holds no more than the header bytes on the wire, so the cap is
 * only a safety net.
 */
static int
sb_append(BwConn *c, const char *data, size_t len)
{
	size_t		limit = c->limits.max_header_size + 16;

	if (len > limit || c->sb_len + len + 1 > limit ||
		!buf_reserve(&c->sb, &c->sb_cap, c->sb_len + len + 1, limit))
	{
		if (c->sb_len + len + 1 <= limit)
		{
			c->oom = true;
			return -1;
		}
		return cb_fail(c, header_overflow_status(c),
					   header_overflow_message(c));
	}
	if (len > 0)
		memcpy(c->sb + c->sb_len, data, len);
	c->sb_len += len;
	return 0;
}


/* ----------------------------------------------------------------
 *		http_parser callbacks
 * ----------------------------------------------------------------
 */

/*
 * A new request starts: allocate it.
 */
static int
cb_message_begin(http_parser *p)
{
	BwConn	   *c = p->data;

	if (c->cur != NULL)
		bw_http_request_free(&c->cur->pub);
	c->cur = calloc(1, sizeof(BwReq));
	if (c->cur == NULL)
	{
		c->oom = true;
		return -1;
	}
	c->cur->pub.received_at_ms = c->req_start_ms;
	c->sb_len = 0;
	c->url_len = 0;
	c->hstate = HS_NONE;
	c->nhdr = 0;
	return 0;
}

/*
 * Request-target bytes (possibly in several pieces).
 */
static int
cb_url(http_parser *p, const char *at, size_t len)
{
	BwConn	   *c = p->data;

	if (c->hstate != HS_NONE)
		return cb_fail(c, 400, "malformed request line");
	if (sb_append(c, at, len) != 0)
		return -1;
	c->url_len += len;
	return 0;
}

/*
 * Header name bytes.  A name piece after a value starts a new header.
 * Trailer fields of chunked bodies are ignored (they arrive in the body
 * phase and count as framing).
 */
static int
cb_header_field(http_parser *p, const char *at, size_t len)
{
	BwConn	   *c = p->data;

	if (c->in_body || c->cur == NULL)
		return 0;
	if (c->hstate != HS_FIELD)
	{
		if (c->hstate == HS_VALUE && sb_append(c, "", 1) != 0)
			return -1;
		if (c->nhdr >= c->hoffs_cap)
		{
			int			newcap = c->hoffs_cap < 16 ? 16 : c->hoffs_cap * 2;
			size_t	   *n;

			/* every header takes at least 4 bytes ("a:\r\n") on the wire */
			if ((size_t) c->nhdr >= c->limits.max_header_size / 4 + 1)
				return cb_fail(c, 431, "too many header fields");
			n = realloc(c->hoffs, sizeof(size_t) * 2 * (size_t) newcap);
			if (n == NULL)
			{
				c->oom = true;
				return -1;
			}
			c->hoffs = n;
			c->hoffs_cap = newcap;
		}
		c->hoffs[2 * c->nhdr] = c->sb_len;
		c->hoffs[2 * c->nhdr + 1] = 0;
		c->nhdr++;
		c->hstate = HS_FIELD;
	}
	return sb_append(c, at, len);
}

/*
 * Header value bytes.  The first piece terminates the name.
 */
static int
cb_header_value(http_parser *p, const char *at, size_t len)
{
	BwConn	   *c = p->data;

	if (c->in_body || c->cur == NULL)
		return 0;
	if (c->hstate == HS_NONE)
		return cb_fail(c, 400, "malformed header");
	if (c->hstate == HS_FIELD)
	{
		if (sb_append(c, "", 1) != 0)
			return -1;
		c->hoffs[2 * (c->nhdr - 1) + 1] = c->sb_len;
		c->hstate = HS_VALUE;
	}
	return sb_append(c, at, len);
}

/*
 * End of the header block.  Everything is examined after
 * http_parser_execute returns (see headers_done); here we only terminate
 * the last value and pause, so that execute stops right at this point.
 */
static int
cb_headers_complete(http_parser *p)
{
	BwConn	   *c = p->data;

	if (c->cur == NULL)
		return cb_fail(c, 400, "malformed request");
	if (c->hstate == HS_FIELD)
		return cb_fail(c, 400, "malformed header");
	if (c->hstate == HS_VALUE && sb_append(c, "", 1) != 0)
		return -1;
	c->ev_headers_done = true;
	http_parser_pause(p, 1);
	return 0;
}

/*
 * Body bytes (de-chunked by http_parser).
 */
static int
cb_body(http_parser *p, const char *at, size_t len)
{
	BwConn	   *c = p->data;
	BwReq	   *r = c->cur;
	size_t		need;

	if (r == NULL || len == 0)
		return 0;
	if (len > r->body_limit - r->body_seen ||
		r->body_seen + len > c->limits.max_body_size)
		return cb_fail(c, 413, "request body too large");
	r->body_seen += len;
	r->continue_pending = false;
	if (r->discard_body)
		return 0;
	/* chunked bodies are charged as they arrive */
	if (r->charged < r->body_seen && !budget_take(r, r->body_seen - r->charged))
		return cb_fail(c, 503, "too much request data buffered, retry later");
	/* grows geometrically; never beyond what this request may carry */
	need = r->pub.body_len + len + 1;
	if (!buf_reserve(&r->pub.body, &r->body_cap, need, r->body_limit + 1))
	{
		c->oom = true;
		return -1;
	}
	memcpy(r->pub.body + r->pub.body_len, at, len);
	r->pub.body_len += len;
	return 0;
}

/*
 * A chunk size line was parsed; refuse chunks that cannot fit.
 */
static int
cb_chunk_header(http_parser *p)
{
	BwConn	   *c = p->data;
	BwReq	   *r = c->cur;

	if (r == NULL)
		return 0;
	if (p->content_length > 0)
		c->nchunks++;
	if (p->content_length > (uint64_t) (c->limits.max_body_size -
										r->body_seen))
		return cb_fail(c, 413, "request body too large");
	return 0;
}

/*
 * End of a request.  Finalised after execute returns (message_done).
 */
static int
cb_message_complete(http_parser *p)
{
	BwConn	   *c = p->data;

	if (c->cur == NULL)
		return cb_fail(c, 400, "malformed request");
	c->cur->pub.keep_alive = http_should_keep_alive(p) != 0;
	c->ev_message_done = true;
	http_parser_pause(p, 1);
	return 0;
}


/* ----------------------------------------------------------------
 *		message assembly
 * ----------------------------------------------------------------
 */

/*
 * Split the request-target into path and query and copy the scratch into
 * the request.  Returns 0, or the error status to answer with (with
 * *message set).  The request gets its strings even on error, so an error
 * request still shows its headers.
 */
static int
build_request(BwConn *c, BwReq *r, const char **message)
{
	struct http_parser_url u;
	const char *path = NULL;
	size_t		path_len = 0;
	const char *query = NULL;
	size_t		query_len = 0;
	int			status = 0;
	size_t		total;
	char	   *s;
	int			i;

	if (c->url_len == 0)
	{
		status = 400;
		*message = "missing request target";
	}
	else if (c->url_len > BW_MAX_URL_LEN)
	{
		status = 414;
		*message = "request target too long";
	}
	else
	{
		http_parser_url_init(&u);
		if (http_parser_parse_url(c->sb, c->url_len, 0, &u) != 0)
		{
			status = 400;
			*message = "invalid request target";
		}
		else
		{
			if (u.field_set & (1 << UF_PATH))
			{
				path = c->sb + u.field_data[UF_PATH].off;
				path_len = u.field_data[UF_PATH].len;
			}
			else
			{
				path = "/";
				path_len = 1;
			}
			if (u.field_set & (1 << UF_QUERY))
			{
				query = c->sb + u.field_data[UF_QUERY].off;
				query_len = u.field_data[UF_QUERY].len;
			}
			if (path_len == 0 || path[0] != '/')
			{
				status = 400;
				*message = "invalid request target";
				path = NULL;
				path_len = 0;
				query = NULL;
				query_len = 0;
			}
		}
	}

	/* layout: [scratch][path NUL][query NUL]; the last byte is a NUL */
	total = c->sb_len + path_len + 1 + query_len + 1;
	r->strings = malloc(total);
	if (r->strings == NULL)
		return -1;
	s = r->strings;
	memcpy(s, c->sb, c->sb_len);
	s += c->sb_len;
	memcpy(s, path != NULL ? path : "", path_len);
	s[path_len] = '\0';
	r->pub.path = s;
	s += path_len + 1;
	if (query != NULL)
	{
		memcpy(s, query, query_len);
		r->pub.query = s;
	}
	s[query_len] = '\0';

	if (c->nhdr > 0)
	{
		r->pub.headers = malloc(sizeof(BwHttpHeader) * (size_t) c->nhdr);
		if (r->pub.headers == NULL)
			return -1;
		for (i = 0; i < c->nhdr; i++)
		{
			char	   *v = r->strings + c->hoffs[2 * i + 1];
			size_t		vlen = strlen(v);

			/* http_parser skips leading blanks; drop trailing ones too */
			while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
				v[--vlen] = '\0';
			r->pub.headers[i].name = r->strings + c->hoffs[2 * i];
			r->pub.headers[i].value = v;
		}
		r->pub.nheaders = c->nhdr;
	}
	return status;
}

/* RFC 9110 tchar: the characters a header field name (a token) may have. */
static bool
is_tchar(unsigned char ch)
{
	if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		(ch >= '0' && ch <= '9'))
		return true;
	return ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

/*
 * Could this be the value of a Host header: a reg-name, an IPv4 address or
 * an IP literal in brackets, with an optional port?  Empty is allowed (RFC
 * 9112 section 3.2).  This refuses what a host cannot have (blanks, '/',
 * '@', '?', '#', '\\', control characters), not every odd spelling.
 */
static bool
valid_host(const char *v)
{
	for (const unsigned char *p = (const unsigned char *) v; *p != '\0'; p++)
	{
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			(*p >= '0' && *p <= '9'))
			continue;
		if (strchr("-._~!$&'()*+,;=:%[]", *p) == NULL)
			return false;
	}
	return true;
}

/*
 * Checks on the header fields of a request that http_parser does not make
 * (see "Strictness" in http.h).  Returns 0, or the status to answer with
 * and *message.
 */
static int
check_fields(const BwReq *r, const char **message)
{
	int			nhost = 0;
	int			nte = 0;
	const char *te = NULL;

	for (int i = 0; i < r->pub.nheaders; i++)
	{
		const char *name = r->pub.headers[i].name;

		if (name[0] == '\0')
		{
			*message = "empty header field name";
			return 400;
		}
		for (const unsigned char *p = (const unsigned char *) name; *p != '\0'; p++)
		{
			if (!is_tchar(*p))
			{
				*message = "invalid character in a header field name";
				return 400;
			}
		}
		if (strcasecmp(name, "host") == 0)
		{
			nhost++;
			if (!valid_host(r->pub.headers[i].value))
			{
				*message = "invalid Host header";
				return 400;
			}
		}
		else if (strcasecmp(name, "transfer-encoding") == 0)
		{
			nte++;
			te = r->pub.headers[i].value;
		}
	}
	if (nhost > 1)
	{
		*message = "more than one Host header";
		return 400;
	}
	if (nhost == 0 && r->pub.http_major == 1 && r->pub.http_minor >= 1)
	{
		*message = "missing Host header";
		return 400;
	}
	if (nte > 0 && r->pub.http_major == 1 && r->pub.http_minor == 0)
	{
		*message = "Transfer-Encoding is not allowed in HTTP/1.0";
		return 400;
	}
	if (nte > 1)
	{
		*message = "more than one Transfer-Encoding header";
		return 400;
	}
	if (nte == 1 && strcasecmp(te, "chunked") != 0)
	{
		*message = "only the chunked transfer coding is supported";
		return 501;
	}
	return 0;
}

/*
 * The header block of c->cur is complete (the parser is paused just before
 * its final LF).  Check the limits, build the request, and decide about
 * the body: 413 if Content-Length is too large, 100 Continue if the client
 * asked for it.
 */
static void
headers_done(BwConn *c)
{
	BwReq	   *r = c->cur;
	http_parser *p = &c->parser;
	const char *message = NULL;
	int			status;
	bool		chunked = (p->flags & F_CHUNKED) != 0;
	bool		has_length = !chunked && p->content_length != ULLONG_MAX;
	const char *expect;

	if (r == NULL)
	{
		queue_error(c, 400, "malformed request");
		return;
	}
	if (c->hdr_bytes + 1 > c->limits.max_header_size)
	{
		queue_error(c, header_overflow_status(c), header_overflow_message(c));
		return;
	}

	r->pub.method = p->method;
	r->pub.http_major = p->http_major;
	r->pub.http_minor = p->http_minor;

	status = build_request(c, r, &message);
	if (status < 0)
	{
		c->oom = true;
		return;
	}
	if (p->http_major != 1)
	{
		status = 505;
		message = "HTTP version not supported";
	}
	else if (p->method == HTTP_CONNECT)
	{
		status = 405;
		message = "CONNECT is not supported";
	}
	else if (status == 0)
		status = check_fields(r, &message);
	if (status == 0 && has_length &&
		p->content_length > (uint64_t) c->limits.max_body_size)
	{
		status = 413;
		message = "request body too large";
	}
	if (status != 0)
	{
		queue_error(c, status, message);
		return;
	}

	c->in_body = true;
	r->body_limit = chunked ? c->limits.max_body_size :
		has_length ? (size_t) p->content_length : 0;

	/* a request nobody will read the body of: drop it as it arrives */
	if (r->body_limit > 0 && c->limits.wants_body != NULL &&
		!c->limits.wants_body(c->limits.wants_body_arg, r->pub.method,
							  r->pub.path))
	{
		r->discard_body = true;
		r->pub.body_discarded = true;
	}

	/* bodies are charged to the worker's budget, declared ones in full */
	if (!r->discard_body && c->limits.budget != NULL &&
		c->limits.budget->limit > 0)
	{
		r->budget = c->limits.budget;
		if (has_length && !budget_take(r, r->body_limit))
		{
			queue_error(c, 503, "too much request data buffered, retry later");
			return;
		}
	}

	/*
	 * Expect: 100-continue (HTTP/1.1 only; ignored for 1.0 as RFC 7231
	 * says).  Skip it if body bytes are already here.  If earlier pipelined
	 * requests are still unanswered the interim response would overtake
	 * their responses, so it is deferred until they are answered.
	 */
	expect = bw_http_header(&r->pub, "Expect");
	if (expect != NULL && strcasecmp(expect, "100-continue") == 0 &&
		p->http_minor >= 1 && r->body_limit > 0 &&
		c->in_len - c->in_off <= 1)
	{
		if (c->nqueued == 0 && c->npopped == 0 && !c->closing)
			out_append(c, continue_response, sizeof(continue_response) - 1);
		else
			r->continue_pending = true;
	}
}

/*
 * c->cur is complete: queue it.
 */
static void
message_done(BwConn *c)
{
	BwReq	   *r = c->cur;

	c->cur = NULL;
	if (r == NULL)
	{
		queue_error(c, 400, "malformed request");
		return;
	}
	if (!finish_request(c, r))
		return;
	if (!r->pub.keep_alive)
		c->stop_parse = true;
}

/*
 * Map an http_parser error to a status and message.
 */
static void
parser_error(BwConn *c, enum http_errno err)
{
	switch (err)
	{
		case HPE_INVALID_VERSION:
			queue_error(c, 505, "HTTP version not supported");
			break;
		case HPE_HEADER_OVERFLOW:
			queue_error(c, 431, "request header fields too large");
			break;
		default:
			queue_error(c, 400, http_errno_description(err));
			break;
	}
}

/*
 * Does a line of the header block start with a blank?  That is obsolete
 * line folding (RFC 9112 section 5.2), or whitespace before the first
 * header field (section 2.2); http_parser accepts both, so we look at the
 * header-phase bytes it consumed, carrying the last byte across calls.
 */
static bool
folded_line(BwConn *c, const char *data, size_t len)
{
	const char *p = data;
	const char *end = data + len;

	if (c->hdr_prev_lf && (*p == ' ' || *p == '\t'))
		return true;
	while ((p = memchr(p, '\n', (size_t) (end - p))) != NULL)
	{
		p++;
		if (p == end)
			break;
		if (*p == ' ' || *p == '\t')
			return true;
	}
	c->hdr_prev_lf = (end[-1] == '\n');
	return false;
}

/*
 * Feed buffered input to the parser, one phase at a time, until the input
 * is used up, the pipeline is full, or parsing has stopped.
 */
static void
conn_parse(BwConn *c)
{
	while (!c->dead && !c->stop_parse && !c->closing &&
		   c->in_off < c->in_len)
	{
		bool		was_body = c->in_body;
		size_t		chunk = c->in_len - c->in_off;
		size_t		n;
		enum http_errno err;

		/* pause between messages while too many are unanswered */
		if (c->cur == NULL && !c->in_body && input_paused(c))
			break;

		if (c->req_start_ms < 0)
		{
			c->req_start_ms = c->in_arrival_ms;
			c->seen_request = true;
		}

		/* header phase: never feed more than one byte over the limit */
		if (!was_body)
		{
			size_t		room = c->limits.max_header_size - c->hdr_bytes;

			if (chunk > room + 1)
				chunk = room + 1;
		}

		c->ev_headers_done = false;
		c->ev_message_done = false;
		c->cb_status = 0;
		c->cb_message = NULL;
		n = http_parser_execute(&c->parser, &parser_settings,
								c->in + c->in_off, chunk);
		if (n > chunk)
			n = chunk;
		if (!was_body && n > 0 && folded_line(c, c->in + c->in_off, n))
		{
			queue_error(c, 400, "obsolete line folding or whitespace before a header field");
			return;
		}
		c->in_off += n;
		if (was_body)
			c->body_wire += n;
		else
			c->hdr_bytes += n;

		if (c->oom)
		{
			c->dead = true;
			return;
		}
		if (c->cb_status != 0)
		{
			queue_error(c, c->cb_status, c->cb_message);
			return;
		}

		err = HTTP_PARSER_ERRNO(&c->parser);
		if (err != HPE_OK && err != HPE_PAUSED)
		{
			parser_error(c, err);
			return;
		}

		/* chunked framing (size lines, extensions, trailers) is bounded */
		if (was_body && c->cur != NULL &&
			c->body_wire > c->cur->body_seen &&
			c->body_wire - c->cur->body_seen >
			c->limits.max_header_size + BW_CHUNK_OVERHEAD * (c->nchunks + 1))
		{
			queue_error(c, 413, "chunked framing too large");
			return;
		}

		if (err == HPE_PAUSED)
		{
			http_parser_pause(&c->parser, 0);
			if (c->ev_headers_done)
				headers_done(c);
			else if (c->ev_message_done)
				message_done(c);
			if (c->oom)
				c->dead = true;
			continue;
		}

		if (!was_body && c->hdr_bytes > c->limits.max_header_size)
		{
			queue_error(c, header_overflow_status(c),
						header_overflow_message(c));
			return;
		}
		if (n == 0)
		{
			/* no progress without pause or error: never spin */
			queue_error(c, 400, "unparsable request");
			return;
		}
	}
}


/* ----------------------------------------------------------------
 *		I/O
 * ----------------------------------------------------------------
 */

/*
 * Drive the transport handshake.  Returns 1 when done, 0 when waiting,
 * -1 when the connection failed.
 */
static int
conn_handshake(BwConn *c)
{
	BwIoResult	r;

	if (c->t->handshake_done)
		return 1;
	if (c->t->ops->handshake == NULL)
	{
		c->t->handshake_done = true;
		return 1;
	}
	c->hs_want_write = false;
	r = c->t->ops->handshake(c->t);
	switch (r)
	{
		case BW_IO_OK:
			c->t->handshake_done = true;
			return 1;
		case BW_IO_WANT_READ:
			return 0;
		case BW_IO_WANT_WRITE:
			c->hs_want_write = true;
			return 0;
		case BW_IO_EOF:
		case BW_IO_ERROR:
			break;
	}
	c->dead = true;
	return -1;
}

/*
 * Write as much pending output as the transport takes.  Returns 0 when the
 * output is drained, 1 when blocked, -1 on error.
 */
static int
conn_write_out(BwConn *c, int64_t now_ms)
{
	c->write_want_read = false;
	while (out_pending(c))
	{
		size_t		n = 0;
		BwIoResult	r;

		r = c->t->ops->write(c->t, c->out + c->out_off,
							 c->out_len - c->out_off, &n);
		switch (r)
		{
			case BW_IO_OK:
				if (n > c->out_len - c->out_off)
					n = c->out_len - c->out_off;
				c->out_off += n;
				c->write_since_ms = now_ms;
				continue;
			case BW_IO_WANT_WRITE:
				if (c->write_since_ms < 0)
					c->write_since_ms = now_ms;
				return 1;
			case BW_IO_WANT_READ:
				if (c->write_since_ms < 0)
					c->write_since_ms = now_ms;
				c->write_want_read = true;
				return 1;
			case BW_IO_EOF:
			case BW_IO_ERROR:
				break;
		}
		c->dead = true;
		return -1;
	}

	/* drained */
	if (c->out_len > 0)
		c->idle_since_ms = now_ms;
	c->out_off = c->out_len = 0;
	if (c->out_cap > BW_OUT_KEEP_CAP)
	{
		free(c->out);
		c->out = NULL;
		c->out_cap = 0;
	}
	c->write_since_ms = -1;
	return 0;
}

/*
 * The peer ended its side of the stream.  A partial request is dropped
 * (nobody is there to send it); complete ones are still answered.
 */
static void
conn_eof(BwConn *c)
{
	c->read_closed = true;
	c->stop_parse = true;
	drop_partial(c);
	c->in_off = c->in_len = 0;
}

/*
 * Drain and discard input after our close response went out.  Returns 0
 * to keep waiting, -1 when the connection is finished.
 */
static int
conn_linger_read(BwConn *c)
{
	int			i;

	for (i = 0; i < BW_MAX_READS_PER_CALL; i++)
	{
		size_t		n = 0;
		BwIoResult	r = c->t->ops->read(c->t, c->in, c->in_cap, &n);

		switch (r)
		{
			case BW_IO_OK:
				c->linger_bytes += n;
				if (c->linger_bytes > BW_LINGER_MAX_BYTES)
				{
					c->dead = true;
					return -1;
				}
				continue;
			case BW_IO_WANT_READ:
				return 0;
			case BW_IO_WANT_WRITE:
				c->read_want_write = true;
				return 0;
			case BW_IO_EOF:
			case BW_IO_ERROR:
				break;
		}
		c->dead = true;
		return -1;
	}
	return 0;
}

/*
 * Whether the transport holds received bytes the fd does not announce.
 */
static bool
transport_pending(BwConn *c)
{
	return c->t->ops->pending != NULL && c->t->ops->pending(c->t) > 0;
}

/*
 * Start the graceful close once the close response is written: half-close
 * and drain.  Returns 0, or -1 when the connection is finished already.
 */
static int
conn_begin_linger(BwConn *c, int64_t now_ms)
{
	if (c->read_closed || c->t->ops->shutdown == NULL)
	{
		c->dead = true;
		return -1;
	}
	if (c->t->ops->shutdown(c->t) != BW_IO_OK)
	{
		c->dead = true;
		return -1;
	}
	c->lingering = true;
	c->linger_deadline_ms = now_ms + BW_LINGER_MS;
	c->linger_bytes = 0;
	c->in_off = c->in_len = 0;
	return 0;
}


/* ----------------------------------------------------------------
 *		public API
 * ----------------------------------------------------------------
 */

/*
 * Create a connection over t (which we own from now on, also on failure).
 */
BwConn *
bw_conn_new(BwTransport *t, const BwHttpLimits *limits, int64_t now_ms)
{
	BwConn	   *c;

	if (t == NULL)
		return NULL;
	c = calloc(1, sizeof(BwConn));
	if (c == NULL)
	{
		t->ops->close(t);
		return NULL;
	}
	c->in = malloc(BW_READ_BUFSIZE);
	if (c->in == NULL)
	{
		free(c);
		t->ops->close(t);
		return NULL;
	}
	c->in_cap = BW_READ_BUFSIZE;
	c->t = t;
	c->limits = *limits;
	if (c->limits.max_header_size > BW_MAX_HEADER_LIMIT)
		c->limits.max_header_size = BW_MAX_HEADER_LIMIT;
	if (c->limits.max_body_size > SIZE_MAX / 2)
		c->limits.max_body_size = SIZE_MAX / 2;
	if (c->limits.max_pipelined < 1)
		c->limits.max_pipelined = 1;
	if (c->limits.max_pending_output == 0)
		c->limits.max_pending_output = BW_HTTP_DEFAULT_MAX_OUTPUT;

	/* process-wide, idempotent: keep http_parser's own limit out of reach */
	http_parser_set_max_header_size(BW_PARSER_HEADER_LIMIT);
	http_parser_init(&c->parser, HTTP_REQUEST);
	c->parser.data = c;

	if (t->ops->handshake == NULL)
		t->handshake_done = true;
	c->write_since_ms = -1;
	c->req_start_ms = -1;
	c->created_ms = now_ms;
	c->idle_since_ms = now_ms;
	c->in_arrival_ms = now_ms;
	return c;
}

/*
 * Close the transport and free everything the connection owns.
 */
void
bw_conn_free(BwConn *c)
{
	if (c == NULL)
		return;
	queue_clear(c);
	if (c->cur != NULL)
		bw_http_request_free(&c->cur->pub);
	if (c->t != NULL)
		c->t->ops->close(c->t);
	free(c->in);
	free(c->out);
	free(c->sb);
	free(c->hoffs);
	free(c);
}

int
bw_conn_fd(const BwConn *c)
{
	return c->t->fd;
}

/* See http.h. */
const BwTransport *
bw_conn_transport(const BwConn *c)
{
	return c->t;
}

/*
 * See http.h.  Order of work: handshake, drain (if lingering), parse what
 * is buffered, then read and parse in a bounded loop, then try to write any
 * interim response right away.
 */
int
bw_conn_on_readable(BwConn *c, int64_t now_ms)
{
	int			reads = 0;

	if (c->dead)
		return -1;
	c->read_want_write = false;
	/* a write that waited for readability can be retried now */
	c->write_want_read = false;

	if (!c->t->handshake_done)
	{
		int			hs = conn_handshake(c);

		if (hs < 0)
			return -1;
		if (hs == 0)
			return c->nqueued;
	}

	if (c->lingering)
		return conn_linger_read(c);

	conn_parse(c);
	while (!c->dead && reading_allowed(c))
	{
		size_t		n = 0;
		BwIoResult	r;

		if (reads >= BW_MAX_READS_PER_CALL && !transport_pending(c))
			break;
		if (c->in_off == c->in_len)
			c->in_off = c->in_len = 0;
		else if (c->in_off > 0)
		{
			memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
			c->in_len -= c->in_off;
			c->in_off = 0;
		}
		if (c->in_len >= c->in_cap)
			break;				/* only while paused, which we checked */

		r = c->t->ops->read(c->t, c->in + c->in_len, c->in_cap - c->in_len,
							&n);
		reads++;
		if (r == BW_IO_OK)
		{
			if (n > c->in_cap - c->in_len)
				n = c->in_cap - c->in_len;
			if (c->in_off == c->in_len)
				c->in_arrival_ms = now_ms;
			c->in_len += n;
			conn_parse(c);
			continue;
		}
		if (r == BW_IO_WANT_WRITE)
			c->read_want_write = true;
		else if (r == BW_IO_EOF)
			conn_eof(c);
		else if (r == BW_IO_ERROR)
			c->dead = true;
		break;
	}
	if (c->dead)
		return -1;

	if (out_pending(c) && conn_write_out(c, now_ms) < 0)
		return -1;

	if (c->read_closed && c->nqueued == 0 && c->npopped == 0 &&
		!out_pending(c))
	{
		c->dead = true;
		return -1;
	}
	return c->nqueued;
}

/*
 * Pop the oldest complete request.
 */
BwHttpRequest *
bw_conn_pop_request(BwConn *c)
{
	BwReq	   *r = c->q_head;

	if (r == NULL)
		return NULL;
	c->q_head = (BwReq *) r->pub.next;
	if (c->q_head == NULL)
		c->q_tail = NULL;
	r->pub.next = NULL;
	c->nqueued--;
	c->npopped++;
	return &r->pub;
}

/*
 * See http.h.
 */
void
bw_conn_respond(BwConn *c, BwHttpRequest *req, int status,
				const char *extra_headers, const char *body,
				size_t body_len, bool close_after)
{
	bool		close;

	if (req == NULL)
		return;
	if (c->npopped > 0)
		c->npopped--;
	if (c->dead || c->closing || c->lingering)
	{
		bw_http_request_free(req);
		return;
	}

	close = close_after || req->error_status != 0 || !req->keep_alive ||
		c->read_closed;
	if (!append_response(c, status, extra_headers, body, body_len, close,
						 req->method == HTTP_HEAD))
	{
		bw_http_request_free(req);
		return;
	}

	if (close)
	{
		c->closing = true;
		c->stop_parse = true;
		queue_clear(c);
		drop_partial(c);
		c->in_off = c->in_len = 0;
	}
	else if (c->cur != NULL && c->cur->continue_pending &&
			 c->nqueued == 0 && c->npopped == 0)
	{
		c->cur->continue_pending = false;
		out_append(c, continue_response, sizeof(continue_response) - 1);
	}
	bw_http_request_free(req);
}

/*
 * Answer an error request with its own status and message.
 */
void
bw_conn_respond_error(BwConn *c, BwHttpRequest *req)
{
	char		body[256];
	size_t		len;
	int			status;

	if (req == NULL)
		return;
	status = req->error_status != 0 ? req->error_status : 400;
	len = bw_http_json_error(body, sizeof(body),
							 req->error_message != NULL ?
							 req->error_message : bw_http_reason(status));
	bw_conn_respond(c, req, status, NULL, body, len, true);
}

/*
 * See http.h.  Also completes a pending handshake and, once a close
 * response is out, starts the graceful close.
 */
int
bw_conn_flush(BwConn *c, int64_t now_ms)
{
	int			rc;

	if (c->dead)
		return -1;
	if (!c->t->handshake_done)
	{
		rc = conn_handshake(c);
		if (rc < 0)
			return -1;
		if (rc == 0)
			return c->hs_want_write ? 1 : 0;
	}
	if (c->lingering)
		return 0;

	if (out_pending(c))
	{
		rc = conn_write_out(c, now_ms);
		if (rc != 0)
			return rc;
	}

	/* all written: after a close response, half-close and drain */
	if (c->closing && c->npopped == 0)
		return conn_begin_linger(c, now_ms);
	if (c->read_closed && c->nqueued == 0 && c->npopped == 0)
	{
		c->dead = true;
		return -1;
	}
	return 0;
}

bool
bw_conn_want_write(const BwConn *c)
{
	if (c->dead)
		return false;
	if (!c->t->handshake_done)
		return c->hs_want_write;
	if (c->read_want_write || transition_due(c))
		return true;
	return out_pending(c) && !c->write_want_read;
}

bool
bw_conn_want_read(const BwConn *c)
{
	if (c->dead)
		return false;
	if (!c->t->handshake_done)
		return !c->hs_want_write;
	if (c->write_want_read || c->lingering)
		return true;
	return reading_allowed(c);
}

bool
bw_conn_is_busy(const BwConn *c)
{
	return c->npopped > 0;
}

/*
 * Compute the earliest deadline among those that apply in the current
 * state (see bw_conn_check_timeout, which must agree with this).
 */
int64_t
bw_conn_next_deadline(const BwConn *c)
{
	int64_t		d = INT64_MAX;
	int64_t		rto = c->limits.request_timeout_ms;
	int64_t		kto = c->limits.keepalive_timeout_ms;
	int64_t		wto = write_timeout(c);

	if (c->dead || transition_due(c))
		return 0;
	if (c->lingering)
		return c->linger_deadline_ms;
	/* output the peer does not take times out whatever else is going on */
	if (out_pending(c) && c->write_since_ms >= 0 && wto > 0)
		d = c->write_since_ms + wto;
	if (c->npopped > 0 || c->nqueued > 0)
		return d;
	if (!c->t->handshake_done)
	{
		if (rto > 0 && c->created_ms + rto < d)
			d = c->created_ms + rto;
		return d;
	}
	if (c->closing || c->stop_parse)
		return d;
	if (c->req_start_ms >= 0)
	{
		if (rto > 0 && c->req_start_ms + rto < d)
			d = c->req_start_ms + rto;
	}
	else if (!out_pending(c) && !c->seen_request)
	{
		/* a new connection that has not said a word */
		if (rto > 0 && c->created_ms + rto < d)
			d = c->created_ms + rto;
	}
	else if (!out_pending(c) && kto > 0 && c->idle_since_ms + kto < d)
		d = c->idle_since_ms + kto;
	return d;
}

/*
 * See http.h.
 */
int
bw_conn_check_timeout(BwConn *c, int64_t now_ms)
{
	int64_t		rto = c->limits.request_timeout_ms;
	int64_t		kto = c->limits.keepalive_timeout_ms;
	int64_t		wto = write_timeout(c);

	if (c->dead)
		return -1;
	if (transition_due(c))
	{
		if (c->closing)
			return conn_begin_linger(c, now_ms);
		c->dead = true;
		return -1;
	}
	if (c->lingering)
	{
		if (now_ms >= c->linger_deadline_ms)
		{
			c->dead = true;
			return -1;
		}
		return 0;
	}
	if (out_pending(c) && c->write_since_ms >= 0 && wto > 0 &&
		now_ms >= c->write_since_ms + wto)
	{
		c->dead = true;
		return -1;
	}
	if (c->npopped > 0 || c->nqueued > 0)
		return 0;
	if (!c->t->handshake_done)
	{
		if (rto > 0 && now_ms >= c->created_ms + rto)
		{
			c->dead = true;
			return -1;
		}
		return 0;
	}
	if (c->closing || c->stop_parse)
		return 0;
	if (c->req_start_ms >= 0)
	{
		if (rto > 0 && now_ms >= c->req_start_ms + rto)
		{
			char		body[128];
			size_t		len;

			/* half-received request: answer 408 and close */
			drop_partial(c);
			c->in_off = c->in_len = 0;
			c->stop_parse = true;
			c->closing = true;
			len = bw_http_json_error(body, sizeof(body), "request timeout");
			if (!append_response(c, 408, NULL, body, len, true, false))
				return -1;
		}
		return 0;
	}
	if (!out_pending(c) && !c->seen_request)
	{
		if (rto > 0 && now_ms >= c->created_ms + rto)
		{
			c->dead = true;
			return -1;
		}
		return 0;
	}
	if (!out_pending(c) && kto > 0 && now_ms >= c->idle_since_ms + kto)
	{
		c->dead = true;
		return -1;
	}
	return 0;
}

/*
 * Free a request and everything it owns.
 */
void
bw_http_request_free(BwHttpRequest *req)
{
	BwReq	   *r = (BwReq *) req;

	if (r == NULL)
		return;
	if (r->budget != NULL)
		r->budget->used -= r->charged < r->budget->used ? r->charged : r->budget->used;
	free(r->strings);
	free(r->pub.headers);
	free(r->pub.body);
	free(r);
}

/*
 * Reason phrase for a status code.
 */
const char *
bw_http_reason(int status)
{
	switch (status)
	{
		case 100:
			return "Continue";
		case 200:
			return "OK";
		case 201:
			return "Created";
		case 202:
			return "Accepted";
		case 204:
			return "No Content";
		case 400:
			return "Bad Request";
		case 401:
			return "Unauthorized";
		case 403:
			return "Forbidden";
		case 404:
			return "Not Found";
		case 405:
			return "Method Not Allowed";
		case 408:
			return "Request Timeout";
		case 409:
			return "Conflict";
		case 411:
			return "Length Required";
		case 413:
			return "Payload Too Large";
		case 414:
			return "URI Too Long";
		case 415:
			return "Unsupported Media Type";
		case 417:
			return "Expectation Failed";
		case 422:
			return "Unprocessable Entity";
		case 429:
			return "Too Many Requests";
		case 431:
			return "Request Header Fields Too Large";
		case 500:
			return "Internal Server Error";
		case 501:
			return "Not Implemented";
		case 502:
			return "Bad Gateway";
		case 503:
			return "Service Unavailable";
		case 504:
			return "Gateway Timeout";
		case 505:
			return "HTTP Version Not Supported";
	}
	return "Unknown";
}

/*
 * Write {"ok":false,"error":"..."} into buf.  The message is JSON-escaped
 * and cut short (at an escape boundary) if buf is too small.
 */
size_t
bw_http_json_error(char *buf, size_t bufsize, const char *message)
{
	static const char prefix[] = "{\"ok\":false,\"error\":\"";
	static const char suffix[] = "\"}";
	static const char hex[] = "0123456789abcdef";
	size_t		len;
	const unsigned char *m;

	if (buf == NULL || bufsize == 0)
		return 0;
	if (bufsize < sizeof(prefix) - 1 + sizeof(suffix) - 1 + 1)
	{
		buf[0] = '\0';
		return 0;
	}
	memcpy(buf, prefix, sizeof(prefix) - 1);
	len = sizeof(prefix) - 1;
	for (m = (const unsigned char *) (message != NULL ? message : "");
		 *m != '\0'; m++)
	{
		char		esc[6];
		size_t		elen;

		if (*m == '"' || *m == '\\')
		{
			esc[0] = '\\';
			esc[1] = (char) *m;
			elen = 2;
		}
		else if (*m == '\n')
		{
			esc[0] = '\\';
			esc[1] = 'n';
			elen = 2;
		}
		else if (*m < 0x20 || *m == 0x7f)
		{
			esc[0] = '\\';
			esc[1] = 'u';
			esc[2] = '0';
			esc[3] = '0';
			esc[4] = hex[*m >> 4];
			esc[5] = hex[*m & 0xf];
			elen = 6;
		}
		else
		{
			esc[0] = (char) *m;
			elen = 1;
		}
		/* keep room for the suffix and the terminating NUL */
		if (len + elen + sizeof(suffix) - 1 + 1 > bufsize)
			break;
		memcpy(buf + len, esc, elen);
		len += elen;
	}
	memcpy(buf + len, suffix, sizeof(suffix) - 1);
	len += sizeof(suffix) - 1;
	buf[len] = '\0';
	return len;
}

/*
 * First header named name (ASCII case-insensitive), or NULL.
 */
const char *
bw_http_header(const BwHttpRequest *req, const char *name)
{
	int			i;

	if (req == NULL || name == NULL)
		return NULL;
	for (i = 0; i < req->nheaders; i++)
	{
		if (strcasecmp(req->headers[i].name, name) == 0)
			return req->headers[i].value;
	}
	return NULL;
}
