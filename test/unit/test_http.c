/*-------------------------------------------------------------------------
 *
 * test_http.c
 *	  Unit tests for the HTTP connection layer (src/http.c) and the plain
 *	  transport (src/transport.c).
 *
 * Each test drives a BwConn over one end of a non-blocking socketpair(2)
 * and plays the client on the other end.  Time is simulated: every call
 * gets an explicit now_ms.  The program prints "N passed, N failed" and
 * exits non-zero if anything failed.  It is meant to be valgrind-clean:
 *
 *	make test/unit/test_http && test/unit/test_http
 *	valgrind --leak-check=full --error-exitcode=1 test/unit/test_http
 *
 * test/unit/test_http.c
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <http_parser.h>

#include "http.h"
#include "transport.h"

static int	npassed = 0;
static int	nfailed = 0;
static const char *current_test = "";

#define CHECK(cond) \
	do { \
		if (cond) \
			npassed++; \
		else \
		{ \
			nfailed++; \
			fprintf(stderr, "FAIL %s (%s:%d): %s\n", current_test, \
					__FILE__, __LINE__, #cond); \
		} \
	} while (0)

#define CHECK_STR(a, b) \
	do { \
		const char *a_ = (a); \
		const char *b_ = (b); \
		if (a_ != NULL && b_ != NULL && strcmp(a_, b_) == 0) \
			npassed++; \
		else \
		{ \
			nfailed++; \
			fprintf(stderr, "FAIL %s (%s:%d): %s == \"%s\", expected \"%s\"\n", \
					current_test, __FILE__, __LINE__, #a, \
					a_ ? a_ : "(null)", b_ ? b_ : "(null)"); \
		} \
	} while (0)

#define CHECK_INT(a, b) \
	do { \
		long long a_ = (long long) (a); \
		long long b_ = (long long) (b); \
		if (a_ == b_) \
			npassed++; \
		else \
		{ \
			nfailed++; \
			fprintf(stderr, "FAIL %s (%s:%d): %s == %lld, expected %lld\n", \
					current_test, __FILE__, __LINE__, #a, a_, b_); \
		} \
	} while (0)

/* A client end plus the server connection on the other end. */
typedef struct Pair
{
	BwConn	   *conn;
	int			client;
	int			server_fd;
} Pair;

static char rbuf[4 * 1024 * 1024];

/*
 * Limits used unless a test says otherwise.
 */
static BwHttpLimits
default_limits(void)
{
	BwHttpLimits l;

	memset(&l, 0, sizeof(l));
	l.max_header_size = 16384;
	l.max_body_size = 65536;
	l.max_pipelined = 16;
	l.request_timeout_ms = 10000;
	l.keepalive_timeout_ms = 5000;
	l.write_timeout_ms = 0;
	return l;
}

/*
 * Create a socketpair, wrap one end in a connection.
 */
static Pair
pair_new(const BwHttpLimits *limits, int64_t now_ms)
{
	Pair		p;
	int			sv[2];
	BwTransport *t;

	memset(&p, 0, sizeof(p));
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
	{
		perror("socketpair");
		exit(2);
	}
	if (!bw_fd_set_nonblocking(sv[0]) || !bw_fd_set_nonblocking(sv[1]))
	{
		perror("fcntl");
		exit(2);
	}
	t = bw_transport_plain_new(sv[0]);
	if (t == NULL)
	{
		fprintf(stderr, "out of memory\n");
		exit(2);
	}
	p.conn = bw_conn_new(t, limits, now_ms);
	if (p.conn == NULL)
	{
		fprintf(stderr, "out of memory\n");
		exit(2);
	}
	p.client = sv[1];
	p.server_fd = sv[0];
	return p;
}

/*
 * Free the connection (if still there) and close the client end.
 */
static void
pair_free(Pair *p)
{
	if (p->conn != NULL)
		bw_conn_free(p->conn);
	p->conn = NULL;
	if (p->client >= 0)
		close(p->client);
	p->client = -1;
}

/*
 * Client writes len bytes (all of them; the tests keep writes small enough
 * for the socket buffer).
 */
static void
cwrite_n(Pair *p, const char *data, size_t len)
{
	size_t		off = 0;

	while (off < len)
	{
		ssize_t		n = write(p->client, data + off, len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
		{
			fprintf(stderr, "client write failed: %s\n", strerror(errno));
			exit(2);
		}
		off += (size_t) n;
	}
}

static void
cwrite(Pair *p, const char *s)
{
	cwrite_n(p, s, strlen(s));
}

/*
 * Client reads everything currently available into rbuf (NUL-terminated).
 * *eof is set when the server side has half-closed or closed.
 */
static size_t
cread(Pair *p, bool *eof)
{
	size_t		len = 0;

	if (eof)
		*eof = false;
	for (;;)
	{
		ssize_t		n = read(p->client, rbuf + len, sizeof(rbuf) - 1 - len);

		if (n > 0)
		{
			len += (size_t) n;
			if (len >= sizeof(rbuf) - 1)
				break;
			continue;
		}
		if (n == 0)
		{
			if (eof)
				*eof = true;
			break;
		}
		if (errno == EINTR)
			continue;
		break;
	}
	rbuf[len] = '\0';
	return len;
}

/* Count occurrences of needle in haystack. */
static int
count_str(const char *haystack, const char *needle)
{
	int			n = 0;
	const char *s = haystack;

	while ((s = strstr(s, needle)) != NULL)
	{
		n++;
		s += strlen(needle);
	}
	return n;
}

/*
 * Answer req with 200 and a small JSON body echoing the path.
 */
static void
respond_ok(BwConn *c, BwHttpRequest *req)
{
	char		body[256];
	int			n = snprintf(body, sizeof(body), "{\"path\":\"%s\"}", req->path);

	bw_conn_respond(c, req, 200, NULL, body, (size_t) n, false);
}

/* ---------------------------------------------------------------- */

static void
test_simple_post(void)
{
	BwHttpLimits l = default_limits();
	Pair		p = pair_new(&l, 1000);
	BwHttpRequest *req;
	bool		eof;

	current_test = "simple_post";
	cwrite(&p, "POST /webhook/biteship?src=test HTTP/1.1\r\n"
		   "Host: example.com\r\n"
		   "Content-Type: application/json\r\n"
		   "X-Empty:\r\n"
		   "Content-Length: 13\r\n"
		   "\r\n"
		   "{\"event\":\"x\"}");
	CHECK(bw_conn_want_read(p.conn));
	CHECK_INT(bw_conn_on_readable(p.conn, 1010), 1);
	req = bw_conn_pop_request(p.conn);
	CHECK(req != NULL);
	if (req == NULL)
	{
		pair_free(&p);
		return;
	}
	CHECK(bw_conn_pop_request(p.conn) == NULL);
	CHECK(bw_conn_is_busy(p.conn));
	CHECK_INT(req->method, HTTP_POST);
	CHECK_STR(req->path, "/webhook/biteship");
	CHECK_STR(req->query, "src=test");
	CHECK_INT(req->nheaders, 4);
	CHECK_STR(bw_http_header(req, "content-type"), "application/json");
	CHECK_STR(bw_http_header(req, "HOST"), "example.com");
	CHECK_STR(bw_http_header(req, "x-empty"), "");
	CHECK(bw_http_header(req, "X-Missing") == NULL);
	CHECK_STR(req->headers[0].name, "Host");
	CHECK_INT(req->body_len, 13);
	CHECK_STR(req->body, "{\"event\":\"x\"}");
	CHECK_INT(req->http_major, 1);
	CHECK_INT(req->http_minor, 1);
	CHECK(req->keep_alive);
	CHECK_INT(req->error_status, 0);
	CHECK_INT(req->received_at_ms, 1010);
	CHECK_INT(bw_conn_next_deadline(p.conn), INT64_MAX);

	bw_conn_respond(p.conn, req, 200, "X-Request-Id: 7\r\n", "{\"ok\":true}", 11,
					false);
	CHECK(!bw_conn_is_busy(p.conn));
	CHECK(bw_conn_want_write(p.conn));
	CHECK_INT(bw_conn_flush(p.conn, 1020), 0);
	CHECK(!bw_conn_want_write(p.conn));
	cread(&p, &eof);
	CHECK_STR(rbuf, "HTTP/1.1 200 OK\r\n"
			  "Content-Type: application/json\r\n"
			  "Content-Length: 11\r\n"
			  "Connection: keep-alive\r\n"
			  "X-Request-Id: 7\r\n"
			  "\r\n"
			  "{\"ok\":true}");
	CHECK(!eof);
	CHECK(bw_conn_want_read(p.conn));
	CHECK_INT(bw_conn_next_deadline(p.conn), 1020 + 5000);
	pair_free(&p);
}

static void
test_get_and_head(void)
{
	BwHttpLimits l = default_limits();
	Pair		p = pair_new(&l, 0);
	BwHttpRequest *req;

	current_test = "get_and_head";
	cwrite(&p, "GET /status HTTP/1.1\r\nHost: x\r\n\r\n");
	CHECK_INT(bw_conn_on_readable(p.conn, 1), 1);
	req = bw_conn_pop_request(p.conn);
	CHECK(req != NULL && req->method == HTTP_GET);
	CHECK_STR(req->path, "/status");
	CHECK(req->query == NULL);
	CHECK(req->body != NULL && req->body[0] == '\0' && req->body_len == 0);
	respond_ok(p.conn, req);
	CHECK_INT(bw_conn_flush(p.conn, 2), 0);
	cread(&p, NULL);
	CHECK(strstr(rbuf, "{\"path\":\"/status\"}") != NULL);

	cwrite(&p, "HEAD /status HTTP/1.1\r\nHost: x\r\n\r\n");
	CHECK_INT(bw_conn_on_readable(p.conn, 3), 1);
	req = bw_conn_pop_request(p.conn);
	CHECK(req != NULL && req->method == HTTP_HEAD);
	bw_conn_respond(p.conn, req, 200, NULL, "{\"a\":1}", 7, false);
	CHECK_INT(bw_conn_flush(p.conn, 4), 0);
	cread(&p, NULL);
	CHECK(strstr(rbuf, "Content-Length: 7\r\n") != NULL);
	CHECK(strstr(rbuf, "\r\n\r\n") != NULL &&
		  strstr(rbuf, "\r\n\r\n")[4] == '\0');
	pair_free(&p);
}

static void
test_http10(void)
{
	BwHttpLimits l = default_limits();
	Pair		p = pair_new(&l, 0);
	BwHttpRequest *req;
	bool		eof;

	current_test = "http10_close";
	cwrite(&p, "GET /a HTTP/1.0\r\n\r\n");
	CHECK_INT(bw_conn_on_readable(p.conn, 1), 1);
	req = bw_conn_pop_request(p.conn);
	CHECK(req != NULL);
	CHECK_INT(req->http_minor, 0);
	CHECK(!req->keep_alive);
	CHECK(!bw_conn_want_read(p.conn));	/* no further request */
	respond_ok(p.conn, req);
	CHECK_INT(bw_conn_flush(p.conn, 2), 0);
	cread(&p, &eof);
	CHECK(strstr(rbuf, "Connection: close\r\n") != NULL);
	CHECK(eof);					/* server half-closed after the response */
	/* the server drains until the client closes */
	CHECK(bw_conn_want_read(p.conn));
	CHECK_INT(bw_conn_on_readable(p.conn, 3), 0);
	close(p.client);
	p.client = -1;
	CHECK_INT(bw_conn_on_readable(p.conn, 4), -1);
	pair_free(&p);

	current_test = "http10_keepalive";
	p = pair_new(&l, 0);
	cwrite(&p, "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
	CHECK_INT(bw_conn_on_readable(p.conn, 1), 1);
	req = bw_conn_pop_request(p.conn);
	CHECK(req != NULL && req->keep_alive);
	respond_ok(p.conn, req);
	CHECK_INT(bw_conn_flush(p.conn, 2), 0);
	cread(&p, &eof);
	CHECK(strstr(rbuf, "Connection: keep-alive\r\n") != NULL);
	CHECK(!eof);
	cwrite(&p, "GET /b HTTP/1.0\r\n\r\n");
	CHECK_INT(bw_conn_on_readable(p.conn, 3), 1);
	req = bw_conn_pop_request(p.conn);
	CHECK(req != NULL && !req->keep_alive);
	CHECK_STR(req ? req->path : NULL, "/b");
	respond_ok(p.conn, req);
	CHECK_INT(bw_conn_flush(p.conn, 4), 0);
	cread(&p, &eof);
	CHECK(strstr(rbuf, "Connection: close\r\n") != NULL);
	CHECK(eof);
	/* linger ends at its deadline if the client never closes */
	CHECK(bw_conn_next_deadline(p.conn) > 4);
	CHECK(bw_conn_next_deadline(p.conn) < INT64_MAX);
	CHECK_INT(bw_conn_check_timeout(p.conn, 3), 0);
	CHECK_INT(bw_conn_check_timeout(p.conn, bw_conn_next_deadline(p.conn)), -1);
	pair_free(&p);
}

static void
test_keepalive_sequential(void)
{
	BwHttpLimits l = default_limits();
	Pair		p = pair_new(&l, 0);
	int			i;

	current_test = "keepalive_sequential";
	for (i = 0; i < 3; i++)
	{
		BwHttpRequest *req;
		char		path[32];

		snprintf(path, sizeof(path), "/r%d", i);
		cwrite(&p, "POST ");
		cwrite(&p, path);
		cwrite(&p, " HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi");
		CHECK_INT(bw_conn_on_readable(p.conn, 10 * i), 1);
		req = bw_conn_pop_request(p.conn);
		CHECK(req != NULL);
		if (req == NULL)
			break;
		CHECK_STR(req->path, path);
		CHECK_STR(req->body, "hi");
		respond_ok(p.conn, req);
		CHECK_INT(bw_conn_flush(p.conn, 10 * i + 1), 0);
		cread(&p, NULL);
		CHECK_INT(count_str(rbuf, "HTTP/1.1 200 OK"), 1);
		CHECK(strstr(rbuf, path) != NULL);
	}
	pair_free(&p);
}

static void
test_pipelining(void)
{
	BwHttpLimits l = default_limits();
	Pair		p = pair_new(&l, 0);
	BwHttpRequest *reqs[3];
	int			i;
	const char *a, *b, *c;

	current_test = "pipelining";
	cwrite(&p, "GET /1 HTTP/1.1\r\nHost: h\r\n\r\n"
		   "POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
		   "\r\n"				/* stray CRLF between requests is tolerated */
		   "GET /3 HTTP/1.1\r\nHost: h\r\n\r\n");
	CHECK_INT(bw_conn_on_readable(p.conn, 5), 3);
	for (i = 0; i < 3; i++)
		reqs[i] = bw_conn_pop_request(p.conn);
	CHECK(bw_conn_pop_request(p.conn) == NULL);
	CHECK(reqs[0] && reqs[1] && reqs[2]);
	if (!(reqs[0] && reqs[1] && reqs[2]))
	{
		pair_free(&p);
		return;
	}
	CHECK_STR(reqs[0]->path, "/1");
	CHECK_STR(reqs[1]->path, "/2");
	CHECK_STR(reqs[1]->body, "abc");
	CHECK_STR(reqs[2]->path, "/3");
	for (i = 0; i < 3; i++)
		respond_ok(p.conn, reqs[i]);
	CHECK_INT(bw_conn_flush(p.conn, 6), 0);
	cread(&p, NULL);
	a = strstr(rbuf, "{\"path\":\"/1\"}");
	b = strstr(rbuf, "{\"path\":\"/2\"}");
	c = strstr(rbuf, "{\"path\":\"/3\"}");
	CHECK(a != NULL && b != NULL && c != NULL && a < b && b < c);
	CHECK_INT(count_str(rbuf, "HTTP/1.1 200 OK"), 3);
	pair_free(&p);
}

static void
test_pipeline_limit(void)
{
	BwHttpLimits l = default_limits();
	Pair		p;
	char		all[2048];
	size_t		len = 0;
	int			i;
	int			next = 0;
	int			n;

	current_test = "pipeline_limit";
	l.max_pipelined = 2;
	p = pair_new(&l, 0);
	for (i = 0; i < 7; i++)
		len += (size_t) snprintf(all + len, sizeof(all) - len,
								 "POST /p%d HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\n%d",
								 i, i);
	cwrite_n(&p, all, len);

	n = bw_conn_on_readable(p.conn, 1);
	CHECK_INT(n, 2);
	CHECK(!bw_conn_want_read(p.conn));	/* paused */
	while (next < 7)
	{
		BwHttpRequest *req = bw_conn_pop_request(p.conn);
		char		path[16];
		char		body[4];

		CHECK(req != NULL);
		if (req == NULL)
			break;
		snprintf(path, sizeof(path), "/p%d", next);
		snprintf(body, sizeof(body), "%d", next);
		CHECK_STR(req->path, path);
		CHECK_STR(req->body, body);
		/* popped but unanswered still counts against the limit */
		CHECK(next >= 5 || !bw_conn_want_read(p.conn));
		respond_ok(p.conn, req);
		next++;
		CHECK(bw_conn_want_read(p.conn));
		n = bw_conn_on_readable(p.conn, 2);
		CHECK(n >= 0);
	}
	CHECK_INT(next, 7);
	CHECK_INT(bw_conn_flush(p.conn, 3), 0);
	cread(&p, NULL);
	CHECK_INT(count_str(rbuf, "HTTP/1.1 200 OK"), 7);
	CHECK(strstr(rbuf, "/p0") < strstr(rbuf, "/p6"));
	pair_free(&p);
}

static void
test_expect_continue(void)
{
	BwHttpLimits l = default_limits();
	Pair		p = pair_new(&l, 0);
	BwHttpRequest *req;

	current_test = "expect_continue";
	cwrite(&p, "POST /e HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
		   "Expect: 100-continue\r\n\r\n");
	CHECK_INT(bw_conn_on_readable(p.conn, 1), 0);
	CHECK_INT(bw_conn_flush(p.conn, 1), 0);
	cread(&p, NULL);
	CHECK_STR(rbuf, "HTTP/1.1 100 Continue\r\n\r\n");
	cwrite(&p, "hello");
	CHECK_INT(bw_conn_on_readable(p.conn, 2), 1);
	req = bw_conn_pop_request(p.conn);
	CHECK(req != NULL && req->body_len == 5);
	CHECK_STR(req ? req->body : NULL, "hello");
	respond_ok(p.conn, req);
	CHECK_INT(bw_conn_flush(p.conn, 3), 0);
	cread(&p, NULL);
	CHECK(strncmp(rbuf, "HTTP/1.1 200 OK\r\n", 17) == 0);
	CHECK(strstr(rbuf, "100 Continue") == NULL);
	pair_free(&p);

	/* body sent along with the headers: no interim response needed */
	current_test = "expect_continue_eager_body";
	p = pair_new(&l, 0);
	cwrite(&p, "POST /e HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
		   "Expect: 100-continue\r\n\r\nhello");
	CHECK_INT(bw_conn_on_readable(p.conn, 1), 1);
	CHECK_INT(bw_conn_flush(p.conn, 1), 0);
	CHECK_INT(cread(&p, NULL), 0);
	req = bw_conn_pop_request(p.conn);
	respond_ok(p.conn, req);
	pair_free(&p);

	/* over-limit Content-Length: 413, and no 100 Continue */
	current_test = "expect_continue_too_large";
	p = pair_new(&l, 0);
	cwrite(&p, "POST /e HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000\r\n"
		   "Expect: 100-continue\r\n\r\n");
	CHECK_INT(bw_conn_on_readable(p.conn, 1), 1);
	CHECK_INT(cread(&p, NULL), 0);
	req = bw_conn_pop_request(p.conn);
	CHECK(req != NULL && req->error_status == 413);
	CHECK(req != NULL && req->error_message != NULL);
	CHECK_STR(req ? req->path : NULL, "/e");
	bw_conn_respond_error(p.conn, req);
	CHECK_INT(bw_conn_flush(p.conn, 2), 0);
	cread(&p, NULL);
	CHECK(strncmp(rbuf, "HTTP/1.1 413 Payload Too Large\r\n", 32) == 0);
	CHECK(strstr(rbuf, "100 Continue") == NULL);
	CHECK(strstr(rbuf, "Connection: close\r\n") != NULL);
	CHECK(strstr(rbuf, "{\"ok\":false,\"error\":\"request body too large\"}") != NULL);
	pair_free(&p);

	/* behind an unanswered pipelined request the 100 is deferred */
	current_test = "expect_continue_deferred";
	p = pair_new(&l, 0);
	cwrite(&p, "GET /first HTTP/1.1\r\nHost: h\r\n\r\n"
		   "POST /second HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n"
		   "Expect: 100-continue\r\n\r\n");
	CHECK_INT(bw_conn_on_readable(p.conn, 1), 1);
	CHECK_INT(cread(&p, NULL), 0);
	req = bw_conn_pop_request(p.conn);
	CHECK_STR(req ? req->path : NULL, "/first");
	respond_ok(p.conn, req);
	CHECK_INT(bw_conn_flush(p.conn, 2), 0);
	cread(&p, NULL);
	CHECK(strstr(rbuf, "/first") != NULL);
	CHECK(strstr(rbuf, "HTTP/1.1 100 Continue\r\n\r\n") != NULL);
	CHECK(strstr(rbuf, "/first") < strstr(rbuf, "100 Continue"));
	cwrite(&p, "ok");
	CHECK_INT(bw_conn_on_readable(p.conn, 3), 1);
	req = bw_conn_pop_request(p.conn);
	CHECK_STR(req ? req->body : NULL, "ok");
	respond_ok(p.conn, req);
	pair_free(&p);
}

static void
test_chunked(void)
{
	BwHttpLimits l = default_limits();
	Pair		p = pair_new(&l, 0);
	BwHttpRequest *req;

	current_test = "chunked";
	cwrite(&p, "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
		   "5\r\nhello\r\n");
	CHECK_INT(bw_conn_on_readable(p.conn, 1), 0);
	cwrite(&p, "1;ext=1\r\n \r\n6\r\nwor");
	CHECK_INT(bw_conn_on_readable(p.conn, 2), 0);
	cwrite(&p, "ld!\r\n0\r\nX-Trailer: t\r\n\r\n");
	CHECK_INT(bw_conn_on_readable(p.conn, 3), 1);
	req = bw_conn_pop_request(p.conn);
	CHECK(req != NULL);
	CHECK_STR(req ? req->body : NULL, "hello world!");
	CHECK_INT(req ? req->body_len : 0, 12);
	/* trailers are not merged into the headers */
	CHECK(req != NULL && bw_http_header(req, "X-Trailer") == NULL);
	respond_ok(p.conn, req);
	CHECK_INT(bw_conn_flush(p.conn, 4), 0);
	pair_free(&p);

	current_test = "chunked_too_large";
	l.max_body_size = 100;
	p = pair_new(&l, 0);
	cwrite(&p, "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
		   "32\r\n01234567890123456789012345678901234567890123456789\r\n");
	CHECK_INT(bw_conn_on_readable(p.conn, 1), 0);
	cwrite(&p, "32\r\n01234567890123456789012345678901234567890123456789\r\n");
	CHECK_INT(bw_conn_on_readable(p.conn, 2), 0);
	/* the size line alone already exceeds the limit */
	cwrite(&p, "1\r\n");
	CHECK_INT(bw_conn_on_readable(p.conn, 3), 1);
	req = bw_conn_pop_request(p.conn);
	CHECK(req != NULL && req->error_status == 413);
	CHECK(req != NULL && req->body != NULL && req->body_len == 0);
	CHECK(!bw_conn_want_read(p.conn));
	bw_conn_respond_error(p.conn, req);
	CHECK_INT(bw_conn_flush(p.conn, 4), 0);
	cread(&p, NULL);
	CHECK(strncmp(rbuf, "HTTP/1.1 413 ", 13) == 0);
	pair_free(&p);

	/* endless chunk extensions are cut off */
	current_test = "chunked_framing_bound";
	l = default_limits();
	l.max_header_size = 1024;
	p = pair_new(&l, 0);
	cwrite(&p, "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;");
	{
		char		ext[512];
		int			i;
		int			n = 0;

		memset(ext, 'a', sizeof(ext));
		for (i = 0; i < 8 && n == 0; i++)
		{
			cwrite_n(&p, ext, sizeof(ext));
			n = bw_conn_on_readable(p.conn, 1);
		}
		CHECK_INT(n, 1);
	}
	req = bw_conn_pop_request(p.conn);
	CHECK(req != NULL && req->error_status == 413);
	bw_http_request_free(req);
	pair_free(&p);

	current_test = "chunked_bad";
	l = default_limits();
	p = pair_new(&l, 0);
	cwrite(&p, "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
	CHECK_INT(bw_conn_on_readable(p.conn, 1), 1);
	req = bw_conn_pop_request(p.conn);
	CHECK(req != NULL && req->error_status == 400);
	bw_conn_respond_error(p.conn, req);
	pair_free(&p);
}

static void
test_content_length_limit(void)
{
	BwHttpLimits l = default_limits();
	Pair		p;
	BwHttpRequest *req;
	bool		eof;

	current_test = "content_length_limit";
	l.max_body_size = 10;
	p = pair_new(&l, 0);
	cwrite(&p, "POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n");
	CHECK_INT(bw_conn_on_readable(p.conn, 1), 1);
	req = bw_conn_pop_request(p.conn);
	CHECK(req != NULL && req->error_status == 413);
	CHECK(!bw_conn_want_read(p.conn));
	bw_conn_respond_error(p.conn, req);
	CHECK_INT(bw_conn_flush(p.conn, 2), 0);
	cread(&p, &eof);
	CHECK(strncmp(rbuf, "HTTP/1.1 413 Payload Too Large\r\n", 32) == 0);
	CHECK(strstr(rbuf, "Connection: close\r\n") != NULL);
	CHECK(eof);
	/* the client keeps sending its body: drained, then finished */
	cwrite(&p, "0123456789A");
	CHECK_INT(bw_conn_on_readable(p.conn, 3), 0);
	close(p.client);
	p.client = -1;
	CHECK_INT(bw_conn_on_readable(p.conn, 4), -1);
	pair_free(&p);

	/* exactly at the limit is fine */
	current_test = "content_length_at_limit";
	p = pair_new(&l, 0);
	cwrite(&p, "POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789");
	CHECK_INT(bw_conn_on_readable(p.conn, 1), 1);
	req = bw_conn_pop_request(p.conn);
	CHECK(req != NULL && req->error_status == 0 && req->body_len == 10);
	respond_ok(p.conn, req);
	pair_free(&p);

	current_test = "content_length_invalid";
	p = pair_new(&l, 0);
	cwrite(&p, "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 1x\r\n\r\n");
	CHECK_INT(bw_conn_on_readable(p.conn, 1), 1);
	req = bw_conn_pop_request(p.conn);
	CHECK(req != NULL && req->error_status == 400);
	bw_http_request_free(req);
	pair_free(&p);

	current_test = "content_length_and_chunked";
	p = pair_new(&l, 0);
	cwrite(&p, "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
		   "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
	CHECK_INT(bw_conn_on_readable(p.conn, 1), 1);
	req = bw_conn_pop_request(p.conn);
	CHECK(req != NULL && req->error_status == 400);
	bw_http_request_free(req);
	pair_free(&p);
}

static void
test_header_limits(void)
{
	BwHttpLimits l = default_limits();
	Pair		p;
	BwHttpRequest *req;
	char	   *big;
	char		head[4096];
	int			n;

	l.max_header_size = 1024;

	current_test = "header_too_large";
	p = pair_new(&l, 0);
	big = malloc(3000);
	memset(big, 'v', 2999);
	big[2999] = '\0';
	cwrite(&p, "GET / HTTP/1.1\r\nHost: h\r\nX-Big: ");
	cwrite(&p, big);
	CHECK_INT(bw_conn_on_readable(p.conn, 1), 1);
	req = bw_conn_pop_request(p.conn);
	CHECK(req != NULL && req->error_status == 431);
	CHECK(!bw_conn_want_read(p.conn));
	bw_conn_respond_error(p.conn, req);
	CHECK_INT(bw_conn_flush(p.conn, 2), 0);
	cread(&p, NULL);
	CHECK(strncmp(rbuf, "HTTP/1.1 431 Request Header Fields Too Large\r\n", 46) == 0);
	pair_free(&p);

	current_test = "request_line_too_long";
	p = pair_new(&l, 0);
	cwrite(&p, "GET /");
	big[1500] = '\0';
	cwrite(&p, big);
	CHECK_INT(bw_conn_on_readable(p.conn, 1), 1);
	req = bw_conn_pop_request(p.conn);
	CHECK(req != NULL && req->error_status == 414);
	bw_conn_respond_error(p.conn, req);
	pair_free(&p);

	/* many small headers past the limit, arriving in small pieces */
	current_test = "many_headers_too_large";
	p = pair_new(&l, 0);
	cwrite(&p, "GET / HTTP/1.1\r\nHost: h\r\n");
	n = 0;
	{
		int			i;

		for (i = 0; i < 200 && n == 0; i++)
		{
			cwrite(&p, "A: b\r\n");
			n = bw_conn_on_readable(p.conn, 1);
		}
	}
	CHECK_INT(n, 1);
	req = bw_conn_pop_request(p.conn);
	CHECK(req != NULL && req->error_status == 431);
	bw_http_request_free(req);
	pair_free(&p);

	/* exactly max_header_size bytes of head is accepted, one more is not */
	current_test = "header_exact_limit";
	{
		size_t		fixed = strlen("GET / HTTP/1.1\r\nHost: h\r\nX: \r\n\r\n");
		size_t		vlen = l.max_header_size - fixed;

		p = pair_new(&l, 0);
		memcpy(head, "GET / HTTP/1.1\r\nHost: h\r\nX: ", 28);
		memset(head + 28, 'y', vlen);
		memcpy(head + 28 + vlen, "\r\n\r\n", 5);
		CHECK_INT(strlen(head), l.max_header_size);
		cwrite(&p, head);
		CHECK_INT(bw_conn_on_readable(p.conn, 1), 1);
		req = bw_conn_pop_request(p.conn);
		CHECK(req != NULL && req->error_status == 0);
		CHECK(req != NULL && strlen(bw_http_header(req, "x")) == vlen);
		bw_http_request_free(req);
		pair_free(&p);

		p = pair_new(&l, 0);
		memcpy(head, "GET / HTTP/1.1\r\nHost: h\r\nX: ", 28);
		memset(head + 28, 'y', vlen + 1);
		memcpy(head + 28 + vlen + 1, "\r\n\r\n", 5);
		cwrite(&p, head);
		CHECK_INT(bw_conn_on_readable(p.conn, 1), 1);
		req = bw_conn_pop_request(p.conn);
		CHECK(req != NULL && req->error_status == 431);
		bw_http_request_free(req);
		pair_free(&p);
	}
	free(big);
}

static void
test_many_headers(void)
{
	BwHttpLimits l = default_limits();
	Pair		p;
	BwHttpRequest *req;
	char	   *msg;
	size_t		len = 0;
	size_t		cap = 200000;
	int			i;
	int			n = 0;
	int			tries;

	current_test = "many_headers";
	l.max_header_size = 128 * 1024;
	p = pair_new(&l, 0);
	msg = malloc(cap);
	len += (size_t) snprintf(msg + len, cap - len, "POST /h HTTP/1.1\r\nHost: h\r\n");
	for (i = 0; i < 200; i++)
		len += (size_t) snprintf(msg + len, cap - len, "X-H%d: value-%d\r\n", i, i);
	len += (size_t) snprintf(msg + len, cap - len, "X-Huge: ");
	memset(msg + len, 'z', 60000);
	len += 60000;
	len += (size_t) snprintf(msg + len, cap - len,
							 "\r\nContent-Length: 4\r\n\r\nbody");
	/* more than the socket buffer takes at once: write in slices */
	{
		size_t		off = 0;

		for (tries = 0; tries < 1000 && n == 0; tries++)
		{
			if (off < len)
			{
				ssize_t		w = write(p.client, msg + off, len - off);

				if (w > 0)
					off += (size_t) w;
			}
			n = bw_conn_on_readable(p.conn, 1);
		}
	}
	CHECK_INT(n, 1);
	req = bw_conn_pop_request(p.conn);
	CHECK(req != NULL && req->error_status == 0);
	if (req != NULL)
	{
		CHECK_INT(req->nheaders, 203);
		CHECK_STR(req->headers[1].name, "X-H0");
		CHECK_STR(req->headers[1].value, "value-0");
		CHECK_STR(req->headers[200].name, "X-H199");
		CHECK_STR(bw_http_header(req, "x-h150"), "value-150");
		CHECK_INT(strlen(bw_http_header(req, "X-Huge")), 60000);
		CHECK_STR(req->body, "body");
		bw_http_request_free(req);
	}
	free(msg);
	pair_free(&p);
}

static void
test_bad_requests(void)
{
	BwHttpLimits l = default_limits();
	Pair		p;
	BwHttpRequest *req;
	static const struct
	{
		const char *input;
		int			status;
	}			cases[] = {
		{"\x01\x02garbage\r\n\r\n", 400},
		{"GET / HTTP/2.0\r\n\r\n", 505},
		{"GET / HTTP/0.9\r\n\r\n", 505},
		{"GET /\r\n\r\n", 505},
		{"GET / XTTP/1.1\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nHost: h\r\nBad Header\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nHost: h\r\nBad\x01: x\r\n\r\n", 400},
		{"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", 400},
		{"GET http:// HTTP/1.1\r\nHost: h\r\n\r\n", 400},
		{"CONNECT example.com:443 HTTP/1.1\r\nHost: h\r\n\r\n", 405},
		{"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
		{"FOO / HTTP/1.1\r\nHost: h\r\n\r\n", 400},
	};
	size_t		i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
	{
		char		name[64];
		bool		eof;

		snprintf(name, sizeof(name), "bad_request_%zu", i);
		current_test = name;
		p = pair_new(&l, 0);
		cwrite(&p, cases[i].input);
		CHECK_INT(bw_conn_on_readable(p.conn, 1), 1);
		req = bw_conn_pop_request(p.conn);
		CHECK(req != NULL);
		if (req == NULL)
		{
			pair_free(&p);
			continue;
		}
		CHECK_INT(req->error_status, cases[i].status);
		CHECK(req->error_message != NULL && req->error_message[0] != '\0');
		CHECK(req->path != NULL && req->body != NULL);
		CHECK(!req->keep_alive);
		CHECK(bw_conn_pop_request(p.conn) == NULL);
		bw_conn_respond_error(p.conn, req);
		CHECK_INT(bw_conn_flush(p.conn, 2), 0);
		cread(&p, &eof);
		{
			char		expect[16];

			snprintf(expect, sizeof(expect), "HTTP/1.1 %d ", cases[i].status);
			CHECK(strncmp(rbuf, expect, strlen(expect)) == 0);
		}
		CHECK(strstr(rbuf, "Connection: close\r\n") != NULL);
		CHECK(strstr(rbuf, "{\"ok\":false,\"error\":\"") != NULL);
		CHECK(eof);
		pair_free(&p);
	}

	/* good requests before a bad one are delivered first */
	current_test = "error_after_good";
	p = pair_new(&l, 0);
	cwrite(&p, "GET /good HTTP/1.1\r\nHost: h\r\n\r\n\x01garbage\r\n\r\nGET /never HTTP/1.1\r\nHost: h\r\n\r\n");
	CHECK_INT(bw_conn_on_readable(p.conn, 1), 2);
	req = bw_conn_pop_request(p.conn);
	CHECK(req != NULL && req->error_status == 0);
	CHECK_STR(req ? req->path : NULL, "/good");
	respond_ok(p.conn, req);
	req = bw_conn_pop_request(p.conn);
	CHECK(req != NULL && req->error_status == 400);
	bw_conn_respond_error(p.conn, req);
	CHECK(bw_conn_pop_request(p.conn) == NULL);
	CHECK_INT(bw_conn_flush(p.conn, 2), 0);
	cread(&p, NULL);
	CHECK(strstr(rbuf, "HTTP/1.1 200 OK") < strstr(rbuf, "HTTP/1.1 400 Bad Request"));
	CHECK(strstr(rbuf, "never") == NULL);
	pair_free(&p);
}

static void
test_url_forms(void)
{
	BwHttpLimits l = default_limits();
	static const struct
	{
		const char *target;
		const char *path;
		const char *query;
	}			cases[] = {
		{"/plain", "/plain", NULL},
		{"/q?a=1&b=2", "/q", "a=1&b=2"},
		{"/frag?x=y#top", "/frag", "x=y"},
		{"http://example.com/abs/path?k=v", "/abs/path", "k=v"},
		{"http://example.com:8080/p", "/p", NULL},
		{"http://example.com", "/", NULL},
		{"/%20enc", "/%20enc", NULL},
	};
	size_t		i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
	{
		char		name[64];
		Pair		p = pair_new(&l, 0);
		BwHttpRequest *req;

		snprintf(name, sizeof(name), "url_%zu", i);
		current_test = name;
		cwrite(&p, "GET ");
		cwrite(&p, cases[i].target);
		cwrite(&p, " HTTP/1.1\r\nHost: h\r\n\r\n");
		CHECK_INT(bw_conn_on_readable(p.conn, 1), 1);
		req = bw_conn_pop_request(p.conn);
		CHECK(req != NULL && req->error_status == 0);
		if (req != NULL)
		{
			CHECK_STR(req->path, cases[i].path);
			if (cases[i].query == NULL)
				CHECK(req->query == NULL);
			else
				CHECK_STR(req->query, cases[i].query);
			bw_http_request_free(req);
		}
		pair_free(&p);
	}
}

static void
test_request_timeout(void)
{
	BwHttpLimits l = default_limits();
	Pair		p = pair_new(&l, 0);
	BwHttpRequest *req;
	bool		eof;

	current_test = "request_timeout";
	cwrite(&p, "POST /slow HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nhalf");
	CHECK_INT(bw_conn_on_readable(p.conn, 100), 0);
	CHECK_INT(bw_conn_next_deadline(p.conn), 100 + l.request_timeout_ms);
	CHECK_INT(bw_conn_check_timeout(p.conn, 100 + l.request_timeout_ms - 1), 0);
	CHECK(!bw_conn_want_write(p.conn));
	CHECK_INT(bw_conn_check_timeout(p.conn, 100 + l.request_timeout_ms), 0);
	CHECK(bw_conn_want_write(p.conn));
	CHECK(!bw_conn_want_read(p.conn));
	CHECK_INT(bw_conn_flush(p.conn, 100 + l.request_timeout_ms), 0);
	cread(&p, &eof);
	CHECK(strncmp(rbuf, "HTTP/1.1 408 Request Timeout\r\n", 30) == 0);
	CHECK(strstr(rbuf, "Connection: close\r\n") != NULL);
	CHECK(strstr(rbuf, "{\"ok\":false,\"error\":\"request timeout\"}") != NULL);
	CHECK(eof);
	pair_free(&p);

	/* the clock starts at the first byte, even of a request line */
	current_test = "request_timeout_headers";
	p = pair_new(&l, 0);
	cwrite(&p, "GE");
	CHECK_INT(bw_conn_on_readable(p.conn, 50), 0);
	CHECK_INT(bw_conn_next_deadline(p.conn), 50 + l.request_timeout_ms);
	cwrite(&p, "T / HTTP/1.1\r\nHost: h\r\n\r\n");
	CHECK_INT(bw_conn_on_readable(p.conn, 60), 1);
	req = bw_conn_pop_request(p.conn);
	CHECK_INT(req ? req->received_at_ms : -1, 50);
	bw_http_request_free(req);
	pair_free(&p);

	/* popped and unanswered: never times out */
	current_test = "busy_no_timeout";
	p = pair_new(&l, 0);
	cwrite(&p, "GET /db HTTP/1.1\r\nHost: h\r\n\r\nGET /next HTTP/1.1\r\nHost: h\r\n");
	CHECK_INT(bw_conn_on_readable(p.conn, 0), 1);
	req = bw_conn_pop_request(p.conn);
	CHECK(req != NULL);
	CHECK(bw_conn_is_busy(p.conn));
	CHECK_INT(bw_conn_next_deadline(p.conn), INT64_MAX);
	CHECK_INT(bw_conn_check_timeout(p.conn, 1000000), 0);
	CHECK(!bw_conn_want_write(p.conn));
	respond_ok(p.conn, req);
	CHECK_INT(bw_conn_flush(p.conn, 1000001), 0);
	cread(&p, NULL);
	CHECK_INT(count_str(rbuf, "HTTP/1.1 200 OK"), 1);
	CHECK(strstr(rbuf, "408") == NULL);
	cwrite(&p, "\r\n");
	CHECK_INT(bw_conn_on_readable(p.conn, 1000002), 1);
	req = bw_conn_pop_request(p.conn);
	CHECK_STR(req ? req->path : NULL, "/next");
	respond_ok(p.conn, req);
	pair_free(&p);
}

static void
test_keepalive_timeout(void)
{
	BwHttpLimits l = default_limits();
	Pair		p = pair_new(&l, 0);
	BwHttpRequest *req;
	bool		eof;

	current_test = "keepalive_timeout";
	/* a fresh connection that says nothing has request_timeout to start */
	CHECK_INT(bw_conn_next_deadline(p.conn), l.request_timeout_ms);
	cwrite(&p, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
	CHECK_INT(bw_conn_on_readable(p.conn, 10), 1);
	req = bw_conn_pop_request(p.conn);
	respond_ok(p.conn, req);
	CHECK_INT(bw_conn_flush(p.conn, 20), 0);
	cread(&p, NULL);
	CHECK_INT(bw_conn_next_deadline(p.conn), 20 + l.keepalive_timeout_ms);
	CHECK_INT(bw_conn_check_timeout(p.conn, 20 + l.keepalive_timeout_ms - 1), 0);
	CHECK_INT(bw_conn_check_timeout(p.conn, 20 + l.keepalive_timeout_ms), -1);
	CHECK(!bw_conn_want_write(p.conn));
	CHECK_INT(cread(&p, &eof), 0);	/* silent */
	pair_free(&p);
}

static void
test_peer_close(void)
{
	BwHttpLimits l = default_limits();
	Pair		p = pair_new(&l, 0);
	BwHttpRequest *req;
	bool		eof;

	current_test = "peer_close_mid_request";
	cwrite(&p, "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc");
	CHECK_INT(bw_conn_on_readable(p.conn, 1), 0);
	close(p.client);
	p.client = -1;
	CHECK_INT(bw_conn_on_readable(p.conn, 2), -1);
	CHECK(bw_conn_pop_request(p.conn) == NULL);
	pair_free(&p);

	current_test = "peer_close_idle";
	p = pair_new(&l, 0);
	close(p.client);
	p.client = -1;
	CHECK_INT(bw_conn_on_readable(p.conn, 2), -1);
	pair_free(&p);

	/* half-close after a full request: still answered */
	current_test = "peer_halfclose_after_request";
	p = pair_new(&l, 0);
	cwrite(&p, "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET /partial");
	shutdown(p.client, SHUT_WR);
	CHECK_INT(bw_conn_on_readable(p.conn, 1), 1);
	CHECK(!bw_conn_want_read(p.conn));
	CHECK_INT(bw_conn_on_readable(p.conn, 1), 1);
	req = bw_conn_pop_request(p.conn);
	CHECK(req != NULL && req->error_status == 0);
	CHECK_STR(req ? req->body : NULL, "abc");
	CHECK(bw_conn_pop_request(p.conn) == NULL);
	respond_ok(p.conn, req);
	CHECK_INT(bw_conn_flush(p.conn, 2), -1);
	cread(&p, &eof);
	CHECK(strncmp(rbuf, "HTTP/1.1 200 OK\r\n", 17) == 0);
	CHECK(strstr(rbuf, "Connection: close\r\n") != NULL);
	pair_free(&p);

	/* full close after a full request: delivered, writing then fails */
	current_test = "peer_close_after_request";
	p = pair_new(&l, 0);
	cwrite(&p, "GET /x HTTP/1.1\r\nHost: h\r\n\r\n");
	close(p.client);
	p.client = -1;
	CHECK_INT(bw_conn_on_readable(p.conn, 1), 1);
	req = bw_conn_pop_request(p.conn);
	CHECK(req != NULL);
	respond_ok(p.conn, req);
	CHECK_INT(bw_conn_flush(p.conn, 2), -1);
	pair_free(&p);

	/* the worker still holds a request when the connection goes away */
	current_test = "free_while_busy";
	p = pair_new(&l, 0);
	cwrite(&p, "GET /x HTTP/1.1\r\nHost: h\r\n\r\n");
	CHECK_INT(bw_conn_on_readable(p.conn, 1), 1);
	req = bw_conn_pop_request(p.conn);
	close(p.client);
	p.client = -1;
	CHECK_INT(bw_conn_on_readable(p.conn, 2), 0);	/* busy: kept */
	respond_ok(p.conn, req);
	CHECK_INT(bw_conn_flush(p.conn, 3), -1);
	pair_free(&p);

	current_test = "free_with_popped_request";
	p = pair_new(&l, 0);
	cwrite(&p, "GET /x HTTP/1.1\r\nHost: h\r\n\r\nGET /y HTTP/1.1\r\nHost: h\r\n\r\nGET /z");
	CHECK_INT(bw_conn_on_readable(p.conn, 1), 2);
	req = bw_conn_pop_request(p.conn);
	bw_conn_free(p.conn);
	p.conn = NULL;
	CHECK_STR(req ? req->path : NULL, "/x");
	bw_http_request_free(req);
	pair_free(&p);
}

static void
test_close_after(void)
{
	BwHttpLimits l = default_limits();
	Pair		p = pair_new(&l, 0);
	BwHttpRequest *r1;
	BwHttpRequest *r2;
	bool		eof;

	current_test = "close_after";
	cwrite(&p, "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\nGET /3 HTTP/1.1\r\nHost: h\r\n\r\n");
	CHECK_INT(bw_conn_on_readable(p.conn, 1), 3);
	r1 = bw_conn_pop_request(p.conn);
	r2 = bw_conn_pop_request(p.conn);
	bw_conn_respond(p.conn, r1, 503, NULL, "{}", 2, true);
	CHECK(bw_conn_pop_request(p.conn) == NULL);	/* /3 dropped */
	CHECK(!bw_conn_want_read(p.conn));
	CHECK_INT(bw_conn_flush(p.conn, 2), 0);
	cread(&p, &eof);
	CHECK(!eof);				/* /2 is still with the worker */
	CHECK(strncmp(rbuf, "HTTP/1.1 503 Service Unavailable\r\n", 34) == 0);
	CHECK(strstr(rbuf, "Connection: close\r\n") != NULL);
	respond_ok(p.conn, r2);		/* discarded */
	/* nothing to write, but flush has the graceful close to start */
	CHECK(bw_conn_want_write(p.conn));
	CHECK_INT(bw_conn_next_deadline(p.conn), 0);
	CHECK_INT(bw_conn_flush(p.conn, 3), 0);
	CHECK(!bw_conn_want_write(p.conn));
	cread(&p, &eof);
	CHECK_INT(strlen(rbuf), 0);
	CHECK(eof);
	pair_free(&p);

	/* same, with the timer path doing it */
	current_test = "close_after_timer";
	p = pair_new(&l, 0);
	cwrite(&p, "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n");
	CHECK_INT(bw_conn_on_readable(p.conn, 1), 2);
	r1 = bw_conn_pop_request(p.conn);
	r2 = bw_conn_pop_request(p.conn);
	bw_conn_respond(p.conn, r1, 200, NULL, "{}", 2, true);
	CHECK_INT(bw_conn_flush(p.conn, 2), 0);
	respond_ok(p.conn, r2);
	CHECK_INT(bw_conn_next_deadline(p.conn), 0);
	CHECK_INT(bw_conn_check_timeout(p.conn, 3), 0);
	CHECK(bw_conn_next_deadline(p.conn) > 3);
	cread(&p, &eof);
	CHECK(eof);
	pair_free(&p);
}

static void
test_large_response(void)
{
	BwHttpLimits l = default_limits();
	Pair		p = pair_new(&l, 0);
	BwHttpRequest *req;
	char	   *body;
	size_t		body_len = 1024 * 1024;
	size_t		got = 0;
	int			sndbuf = 4096;
	int			rounds = 0;
	int			rc;
	int			blocked = 0;
	const char *hdr_end;
	char	   *resp;
	size_t		i;

	current_test = "large_response";
	setsockopt(p.server_fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	setsockopt(p.client, SOL_SOCKET, SO_RCVBUF, &sndbuf, sizeof(sndbuf));
	body = malloc(body_len);
	for (i = 0; i < body_len; i++)
		body[i] = (char) ('a' + i % 26);

	cwrite(&p, "GET /big HTTP/1.1\r\nHost: h\r\n\r\n");
	CHECK_INT(bw_conn_on_readable(p.conn, 1), 1);
	req = bw_conn_pop_request(p.conn);
	bw_conn_respond(p.conn, req, 200, NULL, body, body_len, false);
	resp = malloc(body_len + 1024);
	rc = 1;
	while (rc == 1 && rounds < 100000)
	{
		ssize_t		n;

		rc = bw_conn_flush(p.conn, 2);
		if (rc == 1)
		{
			blocked++;
			CHECK(rounds > 0 || bw_conn_want_write(p.conn));
		}
		while ((n = read(p.client, resp + got, body_len + 1024 - got)) > 0)
			got += (size_t) n;
		rounds++;
	}
	CHECK_INT(rc, 0);
	CHECK(blocked > 1);
	{
		ssize_t		n;

		while ((n = read(p.client, resp + got, body_len + 1024 - got)) > 0)
			got += (size_t) n;
	}
	resp[got] = '\0';
	hdr_end = strstr(resp, "\r\n\r\n");
	CHECK(hdr_end != NULL);
	if (hdr_end != NULL)
	{
		CHECK_INT(got - (size_t) (hdr_end + 4 - resp), body_len);
		CHECK(memcmp(hdr_end + 4, body, body_len) == 0);
	}
	CHECK(strstr(resp, "Content-Length: 1048576\r\n") != NULL);
	free(resp);
	free(body);
	pair_free(&p);
}

static void
test_write_timeout(void)
{
	BwHttpLimits l = default_limits();
	Pair		p;
	BwHttpRequest *req;
	char	   *body;
	size_t		body_len = 2 * 1024 * 1024;
	int			sndbuf = 4096;

	current_test = "write_timeout";
	l.write_timeout_ms = 3000;
	p = pair_new(&l, 0);
	setsockopt(p.server_fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	body = calloc(1, body_len);
	cwrite(&p, "GET /big HTTP/1.1\r\nHost: h\r\n\r\n");
	CHECK_INT(bw_conn_on_readable(p.conn, 1), 1);
	req = bw_conn_pop_request(p.conn);
	bw_conn_respond(p.conn, req, 200, NULL, body, body_len, false);
	CHECK_INT(bw_conn_flush(p.conn, 100), 1);
	CHECK_INT(bw_conn_next_deadline(p.conn), 100 + 3000);
	CHECK_INT(bw_conn_check_timeout(p.conn, 3099), 0);
	CHECK_INT(bw_conn_check_timeout(p.conn, 3100), -1);
	free(body);
	pair_free(&p);
}

static void
test_byte_at_a_time(void)
{
	BwHttpLimits l = default_limits();
	Pair		p = pair_new(&l, 0);
	const char *stream =
		"POST /one?a=b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
		"POST /two HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
		"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
		"GET /three HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nX-B:  two  \r\n\r\n";
	size_t		i;
	int			total = 0;
	BwHttpRequest *req;

	current_test = "byte_at_a_time";
	for (i = 0; stream[i] != '\0'; i++)
	{
		int			n;

		cwrite_n(&p, stream + i, 1);
		n = bw_conn_on_readable(p.conn, (int64_t) i);
		CHECK(n >= 0);
	}
	req = bw_conn_pop_request(p.conn);
	CHECK_STR(req ? req->path : NULL, "/one");
	CHECK_STR(req ? req->query : NULL, "a=b");
	CHECK_STR(req ? req->body : NULL, "hello");
	CHECK_STR(req ? bw_http_header(req, "host") : NULL, "h");
	if (req)
		total++;
	bw_http_request_free(req);
	req = bw_conn_pop_request(p.conn);
	CHECK_STR(req ? req->path : NULL, "/two");
	CHECK_STR(req ? req->body : NULL, "abcde");
	if (req)
		total++;
	bw_http_request_free(req);
	req = bw_conn_pop_request(p.conn);
	CHECK_STR(req ? req->path : NULL, "/three");
	CHECK_STR(req ? bw_http_header(req, "x-b") : NULL, "two");
	CHECK_INT(req ? req->nheaders : 0, 3);
	if (req)
		total++;
	bw_http_request_free(req);
	CHECK_INT(total, 3);
	pair_free(&p);
}

static void
test_body_with_nul(void)
{
	BwHttpLimits l = default_limits();
	Pair		p = pair_new(&l, 0);
	BwHttpRequest *req;

	current_test = "body_with_nul";
	cwrite(&p, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n");
	cwrite_n(&p, "a\0b", 3);
	CHECK_INT(bw_conn_on_readable(p.conn, 1), 1);
	req = bw_conn_pop_request(p.conn);
	CHECK(req != NULL && req->body_len == 3 && memcmp(req->body, "a\0b", 4) == 0);
	bw_http_request_free(req);
	pair_free(&p);
}

/*
 * A transport that behaves like TLS would: a handshake that needs a few
 * rounds in both directions, and a write that first wants to read.
 */
typedef struct MockState
{
	int			hs_steps;
	int			write_wants_read;
} MockState;

static BwIoResult
mock_handshake(BwTransport *t)
{
	MockState  *m = t->priv;

	if (m->hs_steps > 0)
	{
		m->hs_steps--;
		return (m->hs_steps % 2) ? BW_IO_WANT_WRITE : BW_IO_WANT_READ;
	}
	return BW_IO_OK;
}

static BwIoResult
mock_read(BwTransport *t, void *buf, size_t len, size_t *nread)
{
	ssize_t		n = read(t->fd, buf, len);

	*nread = 0;
	if (n > 0)
	{
		*nread = (size_t) n;
		return BW_IO_OK;
	}
	if (n == 0)
		return BW_IO_EOF;
	return (errno == EAGAIN) ? BW_IO_WANT_READ : BW_IO_ERROR;
}

static BwIoResult
mock_write(BwTransport *t, const void *buf, size_t len, size_t *nwritten)
{
	MockState  *m = t->priv;
	ssize_t		n;

	*nwritten = 0;
	if (m->write_wants_read > 0)
	{
		m->write_wants_read--;
		return BW_IO_WANT_READ;
	}
	n = write(t->fd, buf, len);
	if (n > 0)
	{
		*nwritten = (size_t) n;
		return BW_IO_OK;
	}
	return (n < 0 && errno == EAGAIN) ? BW_IO_WANT_WRITE : BW_IO_ERROR;
}

static void
mock_close(BwTransport *t)
{
	close(t->fd);
	free(t->priv);
	free(t);
}

static const BwTransportOps mock_ops = {
	.handshake = mock_handshake,
	.read = mock_read,
	.write = mock_write,
	.close = mock_close,
	.shutdown = NULL,
	.pending = NULL,
};

static Pair
mock_pair_new(const BwHttpLimits *limits, int hs_steps, int write_wants_read)
{
	Pair		p;
	int			sv[2];
	BwTransport *t;
	MockState  *m;

	memset(&p, 0, sizeof(p));
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0 ||
		!bw_fd_set_nonblocking(sv[0]) || !bw_fd_set_nonblocking(sv[1]))
	{
		perror("socketpair");
		exit(2);
	}
	t = calloc(1, sizeof(BwTransport));
	m = calloc(1, sizeof(MockState));
	m->hs_steps = hs_steps;
	m->write_wants_read = write_wants_read;
	t->ops = &mock_ops;
	t->fd = sv[0];
	t->priv = m;
	p.conn = bw_conn_new(t, limits, 0);
	p.client = sv[1];
	p.server_fd = sv[0];
	return p;
}

static void
test_transport_states(void)
{
	BwHttpLimits l = default_limits();
	Pair		p;
	BwHttpRequest *req;
	bool		eof;

	current_test = "handshake_rounds";
	p = mock_pair_new(&l, 2, 1);
	CHECK(bw_conn_want_read(p.conn));
	CHECK(!bw_conn_want_write(p.conn));
	cwrite(&p, "GET /tls HTTP/1.1\r\nHost: h\r\n\r\n");
	CHECK_INT(bw_conn_on_readable(p.conn, 1), 0);	/* handshake wants write */
	CHECK(bw_conn_want_write(p.conn));
	CHECK(!bw_conn_want_read(p.conn));
	CHECK_INT(bw_conn_flush(p.conn, 2), 0);	/* now it wants read */
	CHECK(!bw_conn_want_write(p.conn));
	CHECK(bw_conn_want_read(p.conn));
	CHECK_INT(bw_conn_on_readable(p.conn, 3), 1);	/* done, request read */
	req = bw_conn_pop_request(p.conn);
	CHECK_STR(req ? req->path : NULL, "/tls");
	respond_ok(p.conn, req);

	current_test = "write_wants_read";
	CHECK_INT(bw_conn_flush(p.conn, 4), 1);
	CHECK(!bw_conn_want_write(p.conn));
	CHECK(bw_conn_want_read(p.conn));
	CHECK_INT(cread(&p, NULL), 0);
	CHECK_INT(bw_conn_on_readable(p.conn, 5), 0);	/* retries the write */
	CHECK_INT(bw_conn_flush(p.conn, 6), 0);
	cread(&p, &eof);
	CHECK(strncmp(rbuf, "HTTP/1.1 200 OK\r\n", 17) == 0);
	pair_free(&p);

	/* a handshake that never finishes is dropped at request_timeout */
	current_test = "handshake_timeout";
	p = mock_pair_new(&l, 1000, 0);
	CHECK_INT(bw_conn_on_readable(p.conn, 1), 0);
	CHECK_INT(bw_conn_next_deadline(p.conn), l.request_timeout_ms);
	CHECK_INT(bw_conn_check_timeout(p.conn, l.request_timeout_ms - 1), 0);
	CHECK_INT(bw_conn_check_timeout(p.conn, l.request_timeout_ms), -1);
	pair_free(&p);

	/* without a shutdown op a close response finishes right away */
	current_test = "close_without_shutdown_op";
	p = mock_pair_new(&l, 0, 0);
	cwrite(&p, "GET / HTTP/1.0\r\n\r\n");
	CHECK_INT(bw_conn_on_readable(p.conn, 1), 1);
	req = bw_conn_pop_request(p.conn);
	respond_ok(p.conn, req);
	CHECK_INT(bw_conn_flush(p.conn, 2), -1);
	cread(&p, NULL);
	CHECK(strstr(rbuf, "Connection: close\r\n") != NULL);
	pair_free(&p);
}

static void
test_upgrade_ignored(void)
{
	BwHttpLimits l = default_limits();
	Pair		p = pair_new(&l, 0);
	BwHttpRequest *req;

	current_test = "upgrade_ignored";
	cwrite(&p, "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
		   "POST /after HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n"
		   "Content-Length: 2\r\n\r\nok"
		   "GET /last HTTP/1.1\r\nHost: h\r\n\r\n");
	CHECK_INT(bw_conn_on_readable(p.conn, 1), 3);
	req = bw_conn_pop_request(p.conn);
	CHECK_STR(req ? req->path : NULL, "/ws");
	CHECK(req != NULL && req->error_status == 0);
	bw_http_request_free(req);
	req = bw_conn_pop_request(p.conn);
	CHECK_STR(req ? req->path : NULL, "/after");
	CHECK_STR(req ? req->body : NULL, "ok");
	bw_http_request_free(req);
	req = bw_conn_pop_request(p.conn);
	CHECK_STR(req ? req->path : NULL, "/last");
	bw_http_request_free(req);
	pair_free(&p);
}

static void
test_helpers(void)
{
	char		buf[64];
	size_t		n;
	static const int statuses[] = {100, 200, 400, 401, 404, 405, 408, 413,
	414, 415, 431, 500, 503, 505};
	size_t		i;

	current_test = "json_error";
	n = bw_http_json_error(buf, sizeof(buf), "bad \"thing\" \\ \n\x01");
	CHECK_STR(buf, "{\"ok\":false,\"error\":\"bad \\\"thing\\\" \\\\ \\n\\u0001\"}");
	CHECK_INT(n, strlen(buf));
	n = bw_http_json_error(buf, 30, "0123456789abcdef");
	CHECK_STR(buf, "{\"ok\":false,\"error\":\"012345\"}");
	CHECK_INT(n, 29);
	n = bw_http_json_error(buf, 30, "\"\"\"\"\"\"");
	CHECK_STR(buf, "{\"ok\":false,\"error\":\"\\\"\\\"\\\"\"}");
	CHECK(n < 30);
	n = bw_http_json_error(buf, 10, "x");
	CHECK_INT(n, 0);
	CHECK_STR(buf, "");
	n = bw_http_json_error(buf, sizeof(buf), NULL);
	CHECK_STR(buf, "{\"ok\":false,\"error\":\"\"}");

	current_test = "reason";
	for (i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++)
		CHECK(strcmp(bw_http_reason(statuses[i]), "Unknown") != 0);
	CHECK_STR(bw_http_reason(415), "Unsupported Media Type");
	CHECK_STR(bw_http_reason(299), "Unknown");
}

/*
 * RFC 9112 strictness: each request is refused (4xx, close) and the good
 * request pipelined after it is never parsed, so it cannot be smuggled.
 */
static void
test_strict_framing(void)
{
	BwHttpLimits l = default_limits();
	static const struct
	{
		const char *input;
		int			status;
	}			cases[] = {
		/* field names must be tokens */
		{"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400},
		{"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length : 3\r\n\r\nabc", 400},
		{"POST /a HTTP/1.1\r\nHost: h\r\nX Y: 1\r\nContent-Length: 3\r\n\r\nabc", 400},
		{"POST /a HTTP/1.1\r\nHost: h\r\nX(Y): 1\r\nContent-Length: 3\r\n\r\nabc", 400},
		/* whitespace at the start of the first header line */
		{"POST /a HTTP/1.1\r\n Host: h\r\nContent-Length: 3\r\n\r\nabc", 400},
		{"POST /a HTTP/1.1\r\n\tHost: h\r\nContent-Length: 3\r\n\r\nabc", 400},
		/* obsolete line folding */
		{"POST /a HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n  continued\r\nContent-Length: 3\r\n\r\nabc", 400},
		{"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n 3\r\n\r\nabc", 400},
		{"POST /a HTTP/1.1\nHost: h\nX-A: 1\n\tmore\nContent-Length: 3\n\nabc", 400},
		/* Host */
		{"GET /a HTTP/1.1\r\n\r\n", 400},
		{"GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"GET /a HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
		{"GET /a HTTP/1.1\r\nHost: evil/x\r\n\r\n", 400},
		{"GET /a HTTP/1.1\r\nHost: user@evil\r\n\r\n", 400},
		/* Transfer-Encoding */
		{"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400},
		{"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 501},
		{"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 501},
		{"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n", 501},
		{"POST /a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400},
		{"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400},
		/* Content-Length */
		{"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400},
		{"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\nabc", 400},
		{"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\nabc", 400},
	};
	static const char smuggled[] = "GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n";

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
	{
		char		name[64];
		char		input[1024];
		Pair		p;
		BwHttpRequest *req;
		bool		eof;
		char		expect[16];

		snprintf(name, sizeof(name), "strict_%zu", i);
		current_test = name;
		p = pair_new(&l, 0);
		snprintf(input, sizeof(input), "%s%s", cases[i].input, smuggled);
		cwrite(&p, input);
		CHECK_INT(bw_conn_on_readable(p.conn, 1), 1);
		req = bw_conn_pop_request(p.conn);
		CHECK(req != NULL);
		if (req == NULL)
		{
			pair_free(&p);
			continue;
		}
		CHECK_INT(req->error_status, cases[i].status);
		CHECK(strcmp(req->path, "/smuggled") != 0);
		CHECK(bw_conn_pop_request(p.conn) == NULL);
		bw_conn_respond_error(p.conn, req);
		CHECK_INT(bw_conn_flush(p.conn, 2), 0);
		CHECK_INT(bw_conn_on_readable(p.conn, 3), 0);
		CHECK(bw_conn_pop_request(p.conn) == NULL);
		cread(&p, &eof);
		snprintf(expect, sizeof(expect), "HTTP/1.1 %d ", cases[i].status);
		CHECK(strncmp(rbuf, expect, strlen(expect)) == 0);
		CHECK_INT(count_str(rbuf, "HTTP/1.1 "), 1);
		CHECK(strstr(rbuf, "Connection: close\r\n") != NULL);
		CHECK(eof);
		pair_free(&p);
	}

	/* what stays allowed: HTTP/1.0 without Host, an empty Host, IP literals */
	{
		static const char *const ok[] = {
			"GET /a HTTP/1.0\r\n\r\n",
			"GET /a HTTP/1.1\r\nHost:\r\n\r\n",
			"GET /a HTTP/1.1\r\nHost: [::1]:8432\r\n\r\n",
			"GET /a HTTP/1.1\r\nHost: 127.0.0.1:8432\r\n\r\n",
			"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
			"GET http://example.com/a HTTP/1.1\r\nHost: example.com\r\n\r\n",
		};

		for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		{
			char		name[64];
			Pair		p;
			BwHttpRequest *req;

			snprintf(name, sizeof(name), "strict_ok_%zu", i);
			current_test = name;
			p = pair_new(&l, 0);
			cwrite(&p, ok[i]);
			CHECK_INT(bw_conn_on_readable(p.conn, 1), 1);
			req = bw_conn_pop_request(p.conn);
			CHECK(req != NULL && req->error_status == 0);
			CHECK_STR(req ? req->path : NULL, "/a");
			bw_http_request_free(req);
			pair_free(&p);
		}
	}
}

/*
 * A client that pipelines and never reads: once the unsent output passes
 * max_pending_output the connection stops reading, and the write timeout
 * is armed although requests are still queued.
 */
static void
test_unread_output_bounded(void)
{
	BwHttpLimits l = default_limits();
	Pair		p;
	int			sndbuf = 4096;
	int			answered = 0;
	char		req[] = "GET /m HTTP/1.1\r\nHost: h\r\n\r\n";
	char	   *body = calloc(1, 2000);
	bool		paused = false;

	current_test = "unread_output_bounded";
	l.max_pending_output = 8192;
	l.write_timeout_ms = 3000;
	p = pair_new(&l, 0);
	setsockopt(p.server_fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	setsockopt(p.client, SOL_SOCKET, SO_RCVBUF, &sndbuf, sizeof(sndbuf));
	memset(body, 'x', 1999);

	/* keep feeding requests and answering them; the client never reads */
	for (int round = 0; round < 2000 && !paused; round++)
	{
		BwHttpRequest *r;

		if (write(p.client, req, sizeof(req) - 1) < 0)
			break;				/* the server stopped reading: buffer full */
		if (bw_conn_want_read(p.conn) && bw_conn_on_readable(p.conn, 10) < 0)
			break;
		while ((r = bw_conn_pop_request(p.conn)) != NULL)
		{
			bw_conn_respond(p.conn, r, 200, NULL, body, 1999, false);
			answered++;
		}
		CHECK(bw_conn_flush(p.conn, 10) >= 0);
		paused = !bw_conn_want_read(p.conn);
	}
	CHECK(paused);
	CHECK(answered < 200);
	/* more requests arrive, but are not parsed while the output is stuck */
	for (int i = 0; i < 20; i++)
		(void) write(p.client, req, sizeof(req) - 1);
	CHECK_INT(bw_conn_on_readable(p.conn, 20), 0);
	CHECK(bw_conn_pop_request(p.conn) == NULL);
	/* the stalled write is timed out */
	CHECK(bw_conn_next_deadline(p.conn) <= 10 + 3000);
	CHECK_INT(bw_conn_check_timeout(p.conn, 10 + 3000), -1);
	free(body);
	pair_free(&p);

	/* queued requests do not disarm the write timeout */
	current_test = "write_timeout_with_queue";
	l = default_limits();
	l.write_timeout_ms = 3000;
	p = pair_new(&l, 0);
	setsockopt(p.server_fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	{
		char	   *big = calloc(1, 1024 * 1024);
		BwHttpRequest *r;

		cwrite(&p, "GET /big HTTP/1.1\r\nHost: h\r\n\r\n");
		CHECK_INT(bw_conn_on_readable(p.conn, 1), 1);
		r = bw_conn_pop_request(p.conn);
		bw_conn_respond(p.conn, r, 200, NULL, big, 1024 * 1024, false);
		CHECK_INT(bw_conn_flush(p.conn, 100), 1);
		free(big);
	}
	CHECK_INT(bw_conn_next_deadline(p.conn), 100 + 3000);
	CHECK_INT(bw_conn_check_timeout(p.conn, 3100), -1);
	pair_free(&p);
}

/* wants_body callback for the tests: keep bodies of POST /keep only */
static bool
keep_only(void *arg, int method, const char *path)
{
	int		   *calls = arg;

	(*calls)++;
	return method == HTTP_POST && strcmp(path, "/keep") == 0;
}

/*
 * Bodies nobody wants are read and dropped; every body that is kept is
 * charged to the worker's budget, and refused with 503 beyond it.
 */
static void
test_body_budget(void)
{
	BwHttpLimits l = default_limits();
	BwHttpBudget budget = {.limit = 1000,.used = 0};
	int			calls = 0;
	Pair		p;
	Pair		q;
	BwHttpRequest *r1;
	BwHttpRequest *r2;
	BwHttpRequest *r3;
	char		msg[4096];
	char		big[801];

	current_test = "discard_body";
	l.wants_body = keep_only;
	l.wants_body_arg = &calls;
	l.budget = &budget;
	p = pair_new(&l, 0);
	memset(big, 'b', 800);
	big[800] = '\0';
	snprintf(msg, sizeof(msg),
			 "POST /unknown HTTP/1.1\r\nHost: h\r\nContent-Length: 800\r\n\r\n%s"
			 "PUT /keep HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
			 "320\r\n%s\r\n0\r\n\r\n"
			 "POST /keep HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
			 big, big);
	cwrite(&p, msg);
	CHECK_INT(bw_conn_on_readable(p.conn, 1), 3);
	CHECK_INT(calls, 3);
	r1 = bw_conn_pop_request(p.conn);
	r2 = bw_conn_pop_request(p.conn);
	r3 = bw_conn_pop_request(p.conn);
	CHECK(r1 && r1->body_discarded && r1->body_len == 0 && r1->error_status == 0);
	CHECK(r2 && r2->body_discarded && r2->body_len == 0 && r2->error_status == 0);
	CHECK(r3 && !r3->body_discarded && r3->body_len == 5);
	CHECK_STR(r3 ? r3->body : NULL, "hello");
	CHECK_INT(budget.used, 5);
	respond_ok(p.conn, r1);
	respond_ok(p.conn, r2);
	respond_ok(p.conn, r3);
	CHECK_INT(budget.used, 0);
	CHECK_INT(bw_conn_flush(p.conn, 2), 0);
	cread(&p, NULL);
	CHECK_INT(count_str(rbuf, "HTTP/1.1 200 OK"), 3);
	CHECK_INT(count_str(rbuf, "Connection: keep-alive"), 3);

	/* declared bodies are charged in full as soon as the headers are in */
	current_test = "budget_declared";
	cwrite(&p, "POST /keep HTTP/1.1\r\nHost: h\r\nContent-Length: 900\r\n\r\nabc");
	CHECK_INT(bw_conn_on_readable(p.conn, 3), 0);
	CHECK_INT(budget.used, 900);

	/* another connection cannot have what the first one holds */
	q = pair_new(&l, 0);
	cwrite(&q, "POST /keep HTTP/1.1\r\nHost: h\r\nContent-Length: 200\r\n\r\n");
	CHECK_INT(bw_conn_on_readable(q.conn, 4), 1);
	r1 = bw_conn_pop_request(q.conn);
	CHECK_INT(r1 ? r1->error_status : 0, 503);
	bw_conn_respond_error(q.conn, r1);
	CHECK_INT(bw_conn_flush(q.conn, 5), 0);
	cread(&q, NULL);
	CHECK(strncmp(rbuf, "HTTP/1.1 503 ", 13) == 0);
	/* unwanted bodies are not charged, so they still get through */
	pair_free(&q);
	q = pair_new(&l, 0);
	cwrite(&q, "POST /other HTTP/1.1\r\nHost: h\r\nContent-Length: 200\r\n\r\n");
	memset(msg, 'q', 200);
	cwrite_n(&q, msg, 200);
	CHECK_INT(bw_conn_on_readable(q.conn, 4), 1);
	r1 = bw_conn_pop_request(q.conn);
	CHECK(r1 && r1->error_status == 0 && r1->body_discarded);
	bw_http_request_free(r1);
	CHECK_INT(budget.used, 900);
	pair_free(&q);

	/* chunked bodies are charged as they arrive, and refused past the budget */
	current_test = "budget_chunked";
	q = pair_new(&l, 0);
	cwrite(&q, "POST /keep HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
		   "32\r\n01234567890123456789012345678901234567890123456789\r\n");
	CHECK_INT(bw_conn_on_readable(q.conn, 5), 0);
	CHECK_INT(budget.used, 950);
	cwrite(&q, "64\r\n");
	memset(msg, 'c', 100);
	cwrite_n(&q, msg, 100);
	cwrite(&q, "\r\n0\r\n\r\n");
	CHECK_INT(bw_conn_on_readable(q.conn, 6), 1);
	r1 = bw_conn_pop_request(q.conn);
	CHECK_INT(r1 ? r1->error_status : 0, 503);
	bw_http_request_free(r1);
	pair_free(&q);
	CHECK_INT(budget.used, 900);

	/* freeing the connection returns what its partial request held */
	pair_free(&p);
	CHECK_INT(budget.used, 0);

	/* a dropped chunked body is not mistaken for oversized framing */
	current_test = "discard_chunked_large";
	l.max_header_size = 1024;
	q = pair_new(&l, 0);
	cwrite(&q, "POST /other HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
	for (int i = 0; i < 5; i++)
	{
		cwrite(&q, "3e8\r\n");
		memset(msg, 'd', 1000);
		cwrite_n(&q, msg, 1000);
		cwrite(&q, "\r\n");
	}
	cwrite(&q, "0\r\n\r\n");
	CHECK_INT(bw_conn_on_readable(q.conn, 7), 1);
	r1 = bw_conn_pop_request(q.conn);
	CHECK(r1 && r1->error_status == 0 && r1->body_discarded && r1->body_len == 0);
	bw_http_request_free(r1);
	pair_free(&q);
}

/* A new connection that never sends a byte is closed at request_timeout. */
static void
test_silent_connection(void)
{
	BwHttpLimits l = default_limits();
	Pair		p;
	bool		eof;

	current_test = "silent_connection";
	l.request_timeout_ms = 2000;
	l.keepalive_timeout_ms = 60000;
	p = pair_new(&l, 100);
	CHECK_INT(bw_conn_next_deadline(p.conn), 2100);
	CHECK_INT(bw_conn_check_timeout(p.conn, 2099), 0);
	CHECK_INT(bw_conn_check_timeout(p.conn, 2100), -1);
	CHECK_INT(cread(&p, &eof), 0);
	pair_free(&p);

	/* once a request was served, the keep-alive timeout applies */
	current_test = "keepalive_after_request";
	p = pair_new(&l, 100);
	cwrite(&p, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
	CHECK_INT(bw_conn_on_readable(p.conn, 200), 1);
	respond_ok(p.conn, bw_conn_pop_request(p.conn));
	CHECK_INT(bw_conn_flush(p.conn, 300), 0);
	CHECK_INT(bw_conn_next_deadline(p.conn), 300 + 60000);
	CHECK_INT(bw_conn_check_timeout(p.conn, 2100), 0);
	pair_free(&p);
}

int
main(void)
{
	signal(SIGPIPE, SIG_IGN);

	test_simple_post();
	test_get_and_head();
	test_http10();
	test_keepalive_sequential();
	test_pipelining();
	test_pipeline_limit();
	test_expect_continue();
	test_chunked();
	test_content_length_limit();
	test_header_limits();
	test_many_headers();
	test_bad_requests();
	test_url_forms();
	test_request_timeout();
	test_keepalive_timeout();
	test_peer_close();
	test_close_after();
	test_large_response();
	test_write_timeout();
	test_byte_at_a_time();
	test_body_with_nul();
	test_transport_states();
	test_upgrade_ignored();
	test_helpers();
	test_strict_framing();
	test_unread_output_bounded();
	test_body_budget();
	test_silent_connection();

	printf("%d passed, %d failed\n", npassed, nfailed);
	return nfailed == 0 ? 0 : 1;
}
