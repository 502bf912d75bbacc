/*-------------------------------------------------------------------------
 *
 * test_curl_engine.c
 *	  Unit tests of the libcurl engine (src/curl_engine.c) against a small
 *	  HTTP server that the test forks on 127.0.0.1: completions as they
 *	  come, a slow request that does not hold back the others, bounded
 *	  response headers and bodies, Retry-After (as printable text only),
 *	  redirects not followed, connections reused, timeouts, refused
 *	  connections, bad URLs, abort.
 *
 *	make test/unit/test_curl_engine && test/unit/test_curl_engine
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "curl_engine.h"

static int	npassed = 0;
static int	nfailed = 0;

#define CHECK(cond) \
	do { \
		if (cond) \
			npassed++; \
		else \
		{ \
			nfailed++; \
			fprintf(stderr, "FAIL (%s:%d): %s\n", __FILE__, __LINE__, #cond); \
		} \
	} while (0)

static int	port;
static pid_t server_pid;

/* ---------------------------------------------------------------- server */

static int	accepted = 0;

/* Answer one request on a connection; false when the connection ended. */
static bool
serve_one(int fd)
{
	char		buf[65536];
	size_t		len = 0;
	char	   *end;
	char		path[256];
	long		clen = 0;
	char	   *cl;
	char		resp[200000];
	int			n;

	for (;;)
	{
		ssize_t		r = read(fd, buf + len, sizeof(buf) - 1 - len);

		if (r <= 0)
			return false;
		len += (size_t) r;
		buf[len] = '\0';
		if ((end = strstr(buf, "\r\n\r\n")) != NULL)
			break;
	}
	if (sscanf(buf, "%*s %255s", path) != 1)
		return false;
	cl = strcasestr(buf, "Content-Length:");
	if (cl != NULL)
		clen = strtol(cl + 15, NULL, 10);
	while ((long) (len - (size_t) (end + 4 - buf)) < clen)
	{
		ssize_t		r = read(fd, buf + len, sizeof(buf) - 1 - len);

		if (r <= 0)
			return false;
		len += (size_t) r;
	}

	if (strcmp(path, "/slow") == 0)
		usleep(400 * 1000);
	if (strcmp(path, "/hang") == 0)
		sleep(5);
	if (strcmp(path, "/retry") == 0)
		n = snprintf(resp, sizeof(resp),
					 "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n");
	else if (strcmp(path, "/retry-bytes") == 0)
		n = snprintf(resp, sizeof(resp),
					 "HTTP/1.1 503 Busy\r\nRetry-After: 7\xff\xfe\x01x\r\nContent-Length: 0\r\n\r\n");
	else if (strcmp(path, "/redirect") == 0)
		n = snprintf(resp, sizeof(resp),
					 "HTTP/1.1 301 Moved\r\nLocation: /ok\r\nContent-Length: 0\r\n\r\n");
	else if (strcmp(path, "/big") == 0)
	{
		n = snprintf(resp, sizeof(resp),
					 "HTTP/1.1 200 OK\r\nX-Big: %0900d\r\nContent-Length: 100000\r\n\r\n", 1);
		memset(resp + n, 'b', 100000);
		n += 100000;
	}
	else if (strcmp(path, "/stats") == 0)
	{
		char		body[32];
		int			bl = snprintf(body, sizeof(body), "%d", accepted);

		n = snprintf(resp, sizeof(resp),
					 "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", bl, body);
	}
	else
	{
		/* echo the method and the body length */
		char		body[64];
		int			bl = snprintf(body, sizeof(body), "%.*s %ld",
								  (int) strcspn(buf, " "), buf, clen);

		n = snprintf(resp, sizeof(resp),
					 "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", bl, body);
	}
	if (write(fd, resp, (size_t) n) != n)
		return false;
	return true;
}

/* A forked server: one process per connection, keep-alive. */
static void
run_server(int lfd)
{
	signal(SIGCHLD, SIG_IGN);
	for (;;)
	{
		int			fd = accept(lfd, NULL, NULL);

		if (fd < 0)
			continue;
		accepted++;
		if (fork() == 0)
		{
			while (serve_one(fd))
				;
			_exit(0);
		}
		close(fd);
	}
}

static void
start_server(void)
{
	struct sockaddr_in a;
	socklen_t	alen = sizeof(a);
	int			lfd = socket(AF_INET, SOCK_STREAM, 0);
	int			one = 1;

	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(lfd, (struct sockaddr *) &a, sizeof(a)) != 0 || listen(lfd, 64) != 0)
	{
		perror("bind");
		exit(2);
	}
	getsockname(lfd, (struct sockaddr *) &a, &alen);
	port = ntohs(a.sin_port);
	server_pid = fork();
	if (server_pid == 0)
		run_server(lfd);
	close(lfd);
}

/* ---------------------------------------------------------------- client */

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Drive the engine until `want` calls are done or the time is up. */
static int
drive(BwCurlEngine *e, BwHttpCall **done, int want, int ms)
{
	int			got = 0;
	int64_t		deadline = now_ms() + ms;

	while (got < want && now_ms() < deadline)
	{
		struct pollfd p = {.fd = bw_curl_engine_fd(e),.events = POLLIN};
		long		t = bw_curl_engine_timeout(e);
		BwHttpCall *c;

		if (t < 0 || t > 50)
			t = 50;
		poll(&p, 1, (int) t);
		bw_curl_engine_run(e);
		while ((c = bw_curl_engine_next_done(e)) != NULL)
			done[got++] = c;
	}
	return got;
}

static void
init_call(BwHttpCall *c, const char *method, const char *url)
{
	memset(c, 0, sizeof(*c));
	c->method = method;
	c->url = url;
	c->timeout_ms = 3000;
	c->max_response_headers = 256;
	c->max_response_body = 1024;
}

int
main(void)
{
	BwCurlEngineOptions opts = {.max_total_connections = 16,.max_host_connections = 8,
	.ca_file = NULL,.user_agent = "test"};
	char		err[256];
	BwCurlEngine *e;
	char		url[8][128];
	BwHttpCall	calls[8];
	BwHttpCall *done[16];
	static const char *const hdrs[] = {"Content-Type: application/json", "X-Test: 1"};

	start_server();
	e = bw_curl_engine_new(&opts, err, sizeof(err));
	CHECK(e != NULL);
	if (e == NULL)
		return 1;

	/* a POST with a body and headers */
	snprintf(url[0], sizeof(url[0]), "http://127.0.0.1:%d/ok", port);
	init_call(&calls[0], "POST", url[0]);
	calls[0].headers = hdrs;
	calls[0].nheaders = 2;
	calls[0].body = "{\"a\":1}";
	calls[0].body_len = 7;
	CHECK(bw_curl_engine_start(e, &calls[0]));
	CHECK(bw_curl_engine_running(e) == 1);
	CHECK(drive(e, done, 1, 3000) == 1);
	CHECK(done[0] == &calls[0] && calls[0].done);
	CHECK(calls[0].status == 200 && calls[0].terr == BW_TRANSPORT_OK);
	CHECK(calls[0].resp_body != NULL && strcmp(calls[0].resp_body, "POST 7") == 0);
	CHECK(bw_curl_engine_running(e) == 0);
	bw_http_call_release(&calls[0]);

	/* a slow request does not hold back the fast ones started after it */
	snprintf(url[1], sizeof(url[1]), "http://127.0.0.1:%d/slow", port);
	init_call(&calls[1], "POST", url[1]);
	CHECK(bw_curl_engine_start(e, &calls[1]));
	for (int i = 2; i < 5; i++)
	{
		init_call(&calls[i], "POST", url[0]);
		CHECK(bw_curl_engine_start(e, &calls[i]));
	}
	CHECK(drive(e, done, 5 - 1, 3000) == 4);
	CHECK(done[3] == &calls[1]);	/* the slow one last */
	CHECK(calls[1].status == 200);
	for (int i = 1; i < 5; i++)
		bw_http_call_release(&calls[i]);

	/* bounded headers and body */
	snprintf(url[2], sizeof(url[2]), "http://127.0.0.1:%d/big", port);
	init_call(&calls[0], "GET", url[2]);
	CHECK(bw_curl_engine_start(e, &calls[0]));
	CHECK(drive(e, done, 1, 3000) == 1);
	CHECK(calls[0].status == 200);
	CHECK(calls[0].resp_body_len == 1024 && calls[0].resp_body_truncated);
	CHECK(calls[0].resp_headers_len == 256);
	bw_http_call_release(&calls[0]);

	/* Retry-After is picked out; a redirect is not followed */
	snprintf(url[3], sizeof(url[3]), "http://127.0.0.1:%d/retry", port);
	snprintf(url[4], sizeof(url[4]), "http://127.0.0.1:%d/redirect", port);
	init_call(&calls[0], "POST", url[3]);
	init_call(&calls[1], "POST", url[4]);
	CHECK(bw_curl_engine_start(e, &calls[0]));
	CHECK(bw_curl_engine_start(e, &calls[1]));
	CHECK(drive(e, done, 2, 3000) == 2);
	CHECK(calls[0].status == 429 && strcmp(calls[0].retry_after, "7") == 0);
	CHECK(calls[1].status == 301);
	CHECK(bw_outcome_classify(calls[1].status, calls[1].terr) == BW_OUTCOME_RETRY);
	bw_http_call_release(&calls[0]);
	bw_http_call_release(&calls[1]);

	/* a Retry-After that is not text is kept as printable ASCII only */
	snprintf(url[3], sizeof(url[3]), "http://127.0.0.1:%d/retry-bytes", port);
	init_call(&calls[0], "POST", url[3]);
	CHECK(bw_curl_engine_start(e, &calls[0]));
	CHECK(drive(e, done, 1, 3000) == 1);
	CHECK(calls[0].status == 503 && strcmp(calls[0].retry_after, "7???x") == 0);
	bw_http_call_release(&calls[0]);

	/* connections are reused: twenty more requests, few new connections */
	{
		snprintf(url[5], sizeof(url[5]), "http://127.0.0.1:%d/stats", port);
		for (int round = 0; round < 20; round++)
		{
			init_call(&calls[0], "POST", url[0]);
			CHECK(bw_curl_engine_start(e, &calls[0]));
			CHECK(drive(e, done, 1, 3000) == 1);
			bw_http_call_release(&calls[0]);
		}
		init_call(&calls[0], "GET", url[5]);
		CHECK(bw_curl_engine_start(e, &calls[0]));
		CHECK(drive(e, done, 1, 3000) == 1);
		CHECK(calls[0].resp_body != NULL && atoi(calls[0].resp_body) <= 8);
		bw_http_call_release(&calls[0]);
	}

	/* a timeout, a refused connection, a bad URL, a scheme that is not http */
	{
		int			closed_port;
		int			s = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in a;
		socklen_t	alen = sizeof(a);

		memset(&a, 0, sizeof(a));
		a.sin_family = AF_INET;
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		bind(s, (struct sockaddr *) &a, sizeof(a));
		getsockname(s, (struct sockaddr *) &a, &alen);
		closed_port = ntohs(a.sin_port);
		close(s);

		snprintf(url[6], sizeof(url[6]), "http://127.0.0.1:%d/hang", port);
		init_call(&calls[0], "POST", url[6]);
		calls[0].timeout_ms = 300;
		snprintf(url[7], sizeof(url[7]), "http://127.0.0.1:%d/ok", closed_port);
		init_call(&calls[1], "POST", url[7]);
		init_call(&calls[2], "POST", "http://[::1");
		init_call(&calls[3], "POST", "file:///etc/passwd");
		CHECK(bw_curl_engine_start(e, &calls[0]));
		CHECK(bw_curl_engine_start(e, &calls[1]));
		bw_curl_engine_start(e, &calls[2]);
		bw_curl_engine_start(e, &calls[3]);
		drive(e, done, 4, 3000);
		CHECK(calls[0].done && calls[0].status == 0 && calls[0].terr == BW_TRANSPORT_RETRYABLE);
		CHECK(strstr(calls[0].error, "imeout") != NULL || strstr(calls[0].error, "timed out") != NULL);
		CHECK(calls[1].done && calls[1].terr == BW_TRANSPORT_RETRYABLE && calls[1].error[0] != '\0');
		CHECK(calls[2].done && calls[2].terr == BW_TRANSPORT_FATAL);
		CHECK(calls[3].done && calls[3].terr == BW_TRANSPORT_FATAL);
		for (int i = 0; i < 4; i++)
			bw_http_call_release(&calls[i]);
	}

	/* abort, and free with calls in flight */
	init_call(&calls[0], "POST", url[6]);
	init_call(&calls[1], "POST", url[6]);
	CHECK(bw_curl_engine_start(e, &calls[0]));
	CHECK(bw_curl_engine_start(e, &calls[1]));
	drive(e, done, 1, 200);
	bw_curl_engine_abort(e, &calls[0]);
	CHECK(bw_curl_engine_running(e) == 1);
	bw_curl_engine_free(e);
	bw_http_call_release(&calls[0]);
	bw_http_call_release(&calls[1]);

	kill(server_pid, SIGKILL);
	waitpid(server_pid, NULL, 0);
	printf("%d passed, %d failed\n", npassed, nfailed);
	return nfailed == 0 ? 0 : 1;
}
