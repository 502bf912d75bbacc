/*-------------------------------------------------------------------------
 *
 * fuzz_http.c
 *	  libFuzzer target for the HTTP connection layer (src/http.c, over the
 *	  plain transport of src/transport.c) together with the decisions the
 *	  listener makes on every request without a database (src/route.c):
 *	  routing, which bodies are kept, which headers are credentials, and
 *	  the constant-time signature check.
 *
 * Build with "make fuzz" (see test/fuzz/README.md), or by hand from the
 * repository root:
 *
 *	clang-14 -g -O1 -fsanitize=fuzzer,address,undefined \
 *		-fno-sanitize-recover=undefined -Isrc \
 *		test/fuzz/fuzz_http.c src/http.c src/transport.c src/route.c \
 *		src/payload.c -lhttp_parser -lssl -lcrypto -o test/fuzz/fuzz_http
 *	test/fuzz/fuzz_http -dict=test/fuzz/http.dict test/fuzz/corpus/http
 *
 * The connection is driven the way the listener drives it (see the comment
 * at the top of src/http.h): deadlines and timeouts, on_readable, popping,
 * answering in pop order, flushing, over a non-blocking socketpair whose
 * other end plays the client.  Time is simulated.
 *
 * Input layout (the first five bytes steer, the rest is sent):
 *
 *	byte 0	limits
 *			bit 0	max_header_size 256 (else 8192)
 *			bit 1	max_body_size 32 (else 65536)
 *			bits 2-3 max_pipelined 1 to 4
 *			bit 4	body budget of 64 bytes (else 4096)
 *			bit 5	max_pending_output 1 (else 600)
 *			bit 6	write_timeout 700 ms (else 0: request_timeout)
 *			bit 7	half the budget is held by other connections
 *	byte 1	how requests are answered
 *			bits 0-1 response body sizes: none, small, ~1 kB, ~16-32 kB
 *			bit 2	close_after on every third answer
 *			bit 3	extra header lines
 *			bit 4	slow worker: requests are held, one answered per round
 *			bit 5	error requests answered with bw_conn_respond_error
 *			bit 6	requests held when the connection fails are answered
 *					(on the failed connection) before it is freed
 *			bit 7	check_timeout on every round, not only when due
 *	byte 2	client and clock
 *			bit 0	the client half-closes once everything is sent
 *			bit 1	the client reads nothing until late
 *			bit 2	small socket buffers
 *			bits 3-4 clock step: 1, 40, 700 or 2100 ms per round
 *			bit 5	the client also stops after each blank line (the end of
 *					a header block), so that Expect: 100-continue is seen
 *			bit 6	the client goes away (close) once everything is sent,
 *					without reading the answers
 *	bytes 3-4 split point (little-endian) of the rest: the client sends up
 *			to it in one turn, the remainder in the next
 *
 * Checked on every input (abort(), which libFuzzer reports as a crash):
 * popped requests are well-formed (path, body terminator, limits, Host,
 * header names, body_discarded exactly when route.c does not want the
 * body); the budget never exceeds its limit, covers every kept body, and
 * returns to what other connections hold once every request and the
 * connection are freed; queued plus popped requests never exceed
 * max_pipelined; check_timeout only acts when next_deadline says it is due
 * and leaves no deadline in the past; bw_route_* and bw_verify_secret agree
 * with plain string comparisons.  The client parses what the server wrote
 * with http_parser: it must be well-formed HTTP/1.1, nothing may follow a
 * "Connection: close" response, and the final responses must be, in order,
 * those that were given to bw_conn_respond (same status and
 * Content-Length), possibly cut short, possibly followed by one 408.  So
 * there are never more responses than popped requests.  All memory is freed
 * at the end of each input, so leaks show up under ASan.
 *
 * With FUZZ_HTTP_VERBOSE set in the environment, a line per input tells how
 * many requests were popped and answered and how many responses the client
 * saw.
 *
 * test/fuzz/fuzz_http.c
 *
 *-------------------------------------------------------------------------
 */
#define _GNU_SOURCE				/* memmem */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <http_parser.h>

#include "http.h"
#include "route.h"
#include "transport.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond) \
	do { \
		if (!(cond)) \
		{ \
			fprintf(stderr, "fuzz_http: check failed (line %d): %s\n", \
					__LINE__, #cond); \
			abort(); \
		} \
	} while (0)

/* Response statuses and lengths remembered for the client-side check. */
#define MAX_EXPECTED	1024
#define MAX_HELD		8
#define FEED_ROUNDS		64
#define DRAIN_ROUNDS	24
#define LENGTH_UNKNOWN	SIZE_MAX

static const char signature_header[] = "X-Biteship-Signature";
static const char *const secrets[2] = {"s3cret-live", "s3cret-test"};
static char *path_storage[] = {
	"/biteship/test", "/biteship/live", "/w", "/hooks/orders"
};
static BwPathList webhook_paths = {path_storage, 4};
static uint8_t digests[2 * BW_DIGEST_LEN];
static char fill[32768];

typedef struct Expected
{
	int			status;
	size_t		body_len;		/* LENGTH_UNKNOWN: not checked */
	bool		head;
} Expected;

typedef struct Run
{
	BwConn	   *c;
	int			client;
	BwHttpLimits limits;
	BwHttpBudget budget;
	size_t		preload;		/* held by "other connections" */
	uint8_t		answer;			/* byte 1 */
	int64_t		now;
	bool		finished;		/* the connection must be freed */

	/* popped and unanswered, in pop order */
	BwHttpRequest *held[MAX_HELD];
	int			nheld;
	int			npopped;
	int			nresponded;
	Expected	expect[MAX_EXPECTED];

	/* client side */
	bool		client_dead;
	http_parser rp;
	bool		rp_interim;
	int			nfinal;			/* final responses seen on the wire */
	int			n408;
} Run;

static bool
wants_body(void *arg, int method, const char *path)
{
	return bw_route_wants_body((const BwPathList *) arg, method, path);
}

static void
setup(void)
{
	signal(SIGPIPE, SIG_IGN);
	bw_path_list_sort(&webhook_paths);
	for (int i = 0; i < 2; i++)
		CHECK(bw_sha256_raw(secrets[i], strlen(secrets[i]),
							digests + i * BW_DIGEST_LEN));
	memset(fill, 'x', sizeof(fill));
}

/* ----------------------------------------------------------------
 *		the client: what the server wrote must be the expected responses
 * ----------------------------------------------------------------
 */

static int
rp_headers_complete(http_parser *p)
{
	Run		   *r = p->data;
	int			k = r->nfinal;

	r->rp_interim = p->status_code >= 100 && p->status_code < 200;
	if (r->rp_interim)
	{
		CHECK(p->status_code == 100);
		return 0;
	}
	if (k < r->nresponded)
	{
		if (k < MAX_EXPECTED)
		{
			const Expected *e = &r->expect[k];

			CHECK((int) p->status_code == e->status);
			if (e->body_len != LENGTH_UNKNOWN)
				CHECK(p->content_length == e->body_len);
			return e->head ? 1 : 0;
		}
		return 0;
	}
	/* beyond the answers given, only the request timeout may speak */
	CHECK(p->status_code == 408);
	CHECK(r->n408 == 0);
	return 0;
}

static int
rp_message_complete(http_parser *p)
{
	Run		   *r = p->data;

	if (!r->rp_interim)
	{
		if (p->status_code == 408 && r->nfinal >= r->nresponded)
			r->n408++;
		r->nfinal++;
	}
	r->rp_interim = false;
	return 0;
}

static const http_parser_settings rp_settings = {
	.on_headers_complete = rp_headers_complete,
	.on_message_complete = rp_message_complete,
};

/* Read what the server has sent and check it. */
static void
client_read(Run *r)
{
	char		buf[65536];
	ssize_t		n;

	if (r->client < 0)
		return;
	while ((n = read(r->client, buf, sizeof(buf))) > 0)
	{
		size_t		done = http_parser_execute(&r->rp, &rp_settings, buf,
											   (size_t) n);

		if (HTTP_PARSER_ERRNO(&r->rp) != HPE_OK || done != (size_t) n)
		{
			fprintf(stderr, "fuzz_http: bad response stream: %s\n",
					http_errno_description(HTTP_PARSER_ERRNO(&r->rp)));
			abort();
		}
	}
	CHECK(r->nfinal - r->n408 <= r->npopped);
}

/* Write as much of data as the socket takes; returns the bytes written. */
static size_t
client_write(Run *r, const uint8_t *data, size_t len)
{
	size_t		off = 0;

	while (off < len && r->client >= 0 && !r->client_dead)
	{
		ssize_t		n = write(r->client, data + off, len - off);

		if (n < 0 && errno != EAGAIN && errno != EINTR)
			r->client_dead = true;
		if (n <= 0)
			break;
		off += (size_t) n;
	}
	return off;
}

/* ----------------------------------------------------------------
 *		the worker: check, route and answer requests
 * ----------------------------------------------------------------
 */

/* bw_verify_secret must agree with a plain comparison. */
static int
verify(const char *value)
{
	int			m = bw_verify_secret(value, digests, 2);
	int			want = -1;

	if (value != NULL && strcmp(value, secrets[0]) == 0)
		want = 0;
	else if (value != NULL && strcmp(value, secrets[1]) == 0)
		want = 1;
	CHECK(m == want);
	CHECK(bw_verify_secret(value, digests, 0) == -1);
	return m;
}

/* What the API promises about a popped request. */
static void
check_request(Run *r, const BwHttpRequest *req)
{
	const BwHttpLimits *l = &r->limits;
	bool		wanted;

	CHECK(req->path != NULL && req->body != NULL);
	CHECK(req->body[req->body_len] == '\0');
	CHECK(req->nheaders >= 0 && (req->nheaders == 0) == (req->headers == NULL));
	CHECK(req->received_at_ms >= 0 && req->received_at_ms <= r->now);
	for (int i = 0; i < req->nheaders; i++)
		CHECK(req->headers[i].name != NULL && req->headers[i].value != NULL);
	if (req->error_status != 0)
	{
		CHECK(req->error_status >= 400 && req->error_status <= 599);
		CHECK(req->error_message != NULL);
		CHECK(req->body_len == 0);
		return;
	}
	CHECK(req->path[0] == '/');
	CHECK(req->http_major == 1);
	CHECK(req->method != HTTP_CONNECT);
	CHECK(req->body_len <= l->max_body_size);
	if (req->http_minor >= 1)
		CHECK(bw_http_header(req, "Host") != NULL);
	for (int i = 0; i < req->nheaders; i++)
	{
		const char *v = req->headers[i].value;
		size_t		vlen = strlen(v);

		CHECK(req->headers[i].name[0] != '\0');
		CHECK(vlen == 0 || (v[vlen - 1] != ' ' && v[vlen - 1] != '\t'));
	}

	wanted = bw_route_wants_body(&webhook_paths, req->method, req->path);
	CHECK(wanted == (req->method == HTTP_POST &&
					 bw_route_classify(&webhook_paths, req->path) ==
					 BW_ROUTE_WEBHOOK));
	if (req->body_discarded)
		CHECK(!wanted && req->body_len == 0);
	if (wanted)
		CHECK(!req->body_discarded);
}

/* Remember what the client should see for this answer. */
static void
expect(Run *r, int status, size_t body_len, bool head)
{
	if (r->nresponded < MAX_EXPECTED)
	{
		Expected   *e = &r->expect[r->nresponded];

		e->status = status;
		e->body_len = body_len;
		e->head = head;
	}
	r->nresponded++;
}

/* Body length for the n-th answer. */
static size_t
body_size(const Run *r, int n)
{
	switch (r->answer & 0x03)
	{
		case 0:
			return 0;
		case 1:
			return (size_t) (n * 7) % 64;
		case 2:
			return 512 + (size_t) (n * 131) % 1024;
		default:
			return 16384 + (size_t) (n * 4099) % 16384;
	}
}

/*
 * Answer one request the way the listener would, after exercising the
 * routing and credential decisions on it.
 */
static void
answer(Run *r, BwHttpRequest *req)
{
	int			n = r->nresponded;
	bool		head = req->method == HTTP_HEAD;
	bool		close_after = (r->answer & 0x04) && n % 3 == 2;
	char		extra[128];
	const char *extra_headers = NULL;
	int			status;
	size_t		len;
	const char *body = fill;
	BwRouteKind kind;

	/* every header is looked at: is it a credential? */
	for (int i = 0; i < req->nheaders; i++)
	{
		const char *name = req->headers[i].name;
		bool		s1 = bw_header_is_secret(name, NULL);
		bool		s2 = bw_header_is_secret(name, signature_header);

		CHECK(!s1 || s2);
		if (strcasecmp(name, signature_header) == 0)
			CHECK(s2);
		if (strcasecmp(name, "authorization") == 0 ||
			strcasecmp(name, "cookie") == 0 ||
			strcasecmp(name, "x-api-key") == 0)
			CHECK(s1);
	}
	if (req->nheaders > 0)
		(void) verify(req->headers[req->nheaders - 1].value);

	if (req->error_status != 0)
	{
		if (r->answer & 0x20)
		{
			expect(r, req->error_status, LENGTH_UNKNOWN, head);
			bw_conn_respond_error(r->c, req);
		}
		else
		{
			char		json[256];

			len = bw_http_json_error(json, sizeof(json), req->error_message);
			CHECK(len < sizeof(json) && json[len] == '\0');
			expect(r, req->error_status, len, head);
			bw_conn_respond(r->c, req, req->error_status, NULL, json, len,
							true);
		}
		return;
	}

	if (r->answer & 0x08)
	{
		snprintf(extra, sizeof(extra), "X-Request-Id: %d\r\n", n);
		extra_headers = extra;
	}
	len = body_size(r, n);
	kind = bw_route_classify(&webhook_paths, req->path);
	CHECK((kind == BW_ROUTE_HEALTHZ) == (strcmp(req->path, "/healthz") == 0));
	CHECK((kind == BW_ROUTE_METRICS) == (strcmp(req->path, "/metrics") == 0));
	switch (kind)
	{
		case BW_ROUTE_HEALTHZ:
		case BW_ROUTE_METRICS:
			if (req->method != HTTP_GET && req->method != HTTP_HEAD)
			{
				status = 405;
				extra_headers = "Allow: GET, HEAD\r\n";
			}
			else if (kind == BW_ROUTE_METRICS)
			{
				status = 200;
				extra_headers = "Content-Type: text/plain; version=0.0.4\r\n";
			}
			else
				status = 200;
			break;
		case BW_ROUTE_WEBHOOK:
			if (req->method != HTTP_POST)
			{
				status = 405;
				extra_headers = "Allow: POST\r\n";
			}
			else
				status = verify(bw_http_header(req, signature_header)) >= 0 ?
					200 : 401;
			break;
		default:
			status = 404;
			break;
	}
	if (len == 0 && n % 2 == 0)
		body = NULL;
	expect(r, status, len, head);
	bw_conn_respond(r->c, req, status, extra_headers, body, len, close_after);
}

static void
answer_held(Run *r, int count)
{
	int			i;

	if (count > r->nheld)
		count = r->nheld;
	for (i = 0; i < count; i++)
		answer(r, r->held[i]);
	memmove(r->held, r->held + count, sizeof(r->held[0]) * (r->nheld - count));
	r->nheld -= count;
}

/* Bytes of kept bodies that the popped, unanswered requests hold. */
static size_t
held_bodies(const Run *r)
{
	size_t		sum = 0;

	for (int i = 0; i < r->nheld; i++)
		if (r->held[i]->error_status == 0)
			sum += r->held[i]->body_len;
	return sum;
}

static void
check_budget(const Run *r)
{
	CHECK(r->budget.used <= r->budget.limit);
	CHECK(r->budget.used >= r->preload + held_bodies(r));
}

/*
 * One turn of the event loop for this connection.  Sets r->finished when
 * the connection must be freed.
 */
static void
service(Run *r, int64_t step)
{
	BwConn	   *c = r->c;
	BwHttpRequest *req;
	int64_t		d;
	int			queued;

	r->now += step;

	/* the slow worker answers one request per turn */
	if (r->answer & 0x10)
		answer_held(r, 1);
	else
		answer_held(r, r->nheld);

	d = bw_conn_next_deadline(c);
	if (r->now >= d || (r->answer & 0x80))
	{
		if (bw_conn_check_timeout(c, r->now) < 0)
		{
			CHECK(d <= r->now);
			r->finished = true;
			return;
		}
		/* nothing may stay due after the check: the loop would spin */
		CHECK(bw_conn_next_deadline(c) > r->now || bw_conn_want_write(c));
	}

	if (bw_conn_want_read(c))
	{
		queued = bw_conn_on_readable(c, r->now);
		if (queued < 0)
		{
			r->finished = true;
			return;
		}
		CHECK(queued + r->nheld <= r->limits.max_pipelined);
	}

	while ((req = bw_conn_pop_request(c)) != NULL)
	{
		r->npopped++;
		check_request(r, req);
		CHECK(r->nheld < MAX_HELD);
		r->held[r->nheld++] = req;
		check_budget(r);
	}
	CHECK(r->nheld <= r->limits.max_pipelined);
	if (!(r->answer & 0x10))
		answer_held(r, r->nheld);
	CHECK(bw_conn_is_busy(c) == (r->nheld > 0));
	check_budget(r);

	if (bw_conn_flush(c, r->now) < 0)
	{
		r->finished = true;
		return;
	}
	(void) bw_conn_want_write(c);
	(void) bw_conn_fd(c);
}

/*
 * Where the client's next write ends: at the split point, after the next
 * blank line when it pauses there, else at the end of the input.
 */
static size_t
next_stop(const uint8_t *data, size_t size, size_t sent, size_t split,
		  bool at_blank_lines)
{
	size_t		stop = sent < split ? split : size;

	if (at_blank_lines && stop - sent >= 4)
	{
		const uint8_t *b = memmem(data + sent, stop - sent, "\r\n\r\n", 4);

		if (b != NULL)
			stop = (size_t) (b - data) + 4;
	}
	return stop;
}

/* One turn of the client: send the next piece. */
static void
client_send(Run *r, const uint8_t *data, size_t size, size_t split,
			uint8_t cli, size_t *sent)
{
	if (*sent < size)
		*sent += client_write(r, data + *sent,
							  next_stop(data, size, *sent, split,
										(cli & 0x20) != 0) - *sent);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool initialised = false;
	static bool verbose = false;
	static const int64_t steps[4] = {1, 40, 700, 2100};
	Run		   *r;
	BwTransport *t;
	int			sv[2];
	uint8_t		lim;
	uint8_t		cli;
	size_t		split;
	size_t		sent = 0;
	int64_t		step;
	bool		shut = false;
	int			i;

	if (!initialised)
	{
		setup();
		verbose = getenv("FUZZ_HTTP_VERBOSE") != NULL;
		initialised = true;
	}
	if (size < 5)
		return 0;
	lim = data[0];
	cli = data[2];
	split = (size_t) data[3] | ((size_t) data[4] << 8);
	data += 5;
	size -= 5;
	split = split % (size + 1);
	step = steps[(cli >> 3) & 0x03];

	r = calloc(1, sizeof(Run));
	CHECK(r != NULL);
	r->answer = data[-4];
	r->now = 1000;
	r->budget.limit = (lim & 0x10) ? 64 : 4096;
	r->preload = (lim & 0x80) ? r->budget.limit / 2 : 0;
	r->budget.used = r->preload;
	r->limits.max_header_size = (lim & 0x01) ? 256 : 8192;
	r->limits.max_body_size = (lim & 0x02) ? 32 : 65536;
	r->limits.max_pipelined = 1 + ((lim >> 2) & 0x03);
	r->limits.max_pending_output = (lim & 0x20) ? 1 : 600;
	r->limits.request_timeout_ms = 2000;
	r->limits.keepalive_timeout_ms = 1500;
	r->limits.write_timeout_ms = (lim & 0x40) ? 700 : 0;
	r->limits.budget = &r->budget;
	r->limits.wants_body = wants_body;
	r->limits.wants_body_arg = &webhook_paths;
	http_parser_init(&r->rp, HTTP_RESPONSE);
	r->rp.data = r;

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
	{
		free(r);
		return 0;
	}
	CHECK(bw_fd_set_nonblocking(sv[0]) && bw_fd_set_nonblocking(sv[1]));
	if (cli & 0x04)
	{
		int			small = 1;	/* the kernel rounds it up to its minimum */

		(void) setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
		(void) setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	}
	t = bw_transport_plain_new(sv[0]);
	CHECK(t != NULL);
	r->c = bw_conn_new(t, &r->limits, r->now);
	CHECK(r->c != NULL);
	r->client = sv[1];

	/* the client sends while the loop turns */
	for (i = 0; i < FEED_ROUNDS && !r->finished; i++)
	{
		client_send(r, data, size, split, cli, &sent);
		service(r, step * (1 + i % 3));
		if (!(cli & 0x02))
			client_read(r);
		if (sent >= size && i > 4 && r->nheld == 0)
			break;
	}

	/*
	 * Then it finishes sending, maybe half-closes or goes away, and the
	 * clock runs out.
	 */
	for (i = 0; i < DRAIN_ROUNDS && !r->finished; i++)
	{
		int64_t		d = bw_conn_next_deadline(r->c);

		if (sent < size)
			client_send(r, data, size, split, cli, &sent);
		else if ((cli & 0x40) && r->client >= 0)
		{
			close(r->client);
			r->client = -1;
		}
		else if ((cli & 0x01) && !shut && r->client >= 0)
		{
			shutdown(r->client, SHUT_WR);
			shut = true;
		}
		if (d != INT64_MAX && d > r->now && r->nheld == 0)
			service(r, d - r->now);
		else
			service(r, step);
		if (!(cli & 0x02) || i >= 4)
			client_read(r);
	}

	/* requests held when the connection failed */
	if (r->answer & 0x40)
		answer_held(r, r->nheld);
	bw_conn_free(r->c);
	r->c = NULL;
	for (i = 0; i < r->nheld; i++)
		bw_http_request_free(r->held[i]);
	r->nheld = 0;
	CHECK(r->budget.used == r->preload);

	/* what is left on the wire must still parse */
	client_read(r);
	if (verbose)
		fprintf(stderr, "fuzz_http: %d popped, %d answered, %d on the wire "
				"(%d of them 408), clock at %lld ms\n",
				r->npopped, r->nresponded, r->nfinal, r->n408,
				(long long) r->now);
	if (r->client >= 0)
		close(r->client);
	free(r);
	return 0;
}
