/*-------------------------------------------------------------------------
 *
 * fuzz_http.c
 *	  libFuzzer target for the HTTP connection layer (src/http.c).
 *
 * Build and run from the repository root:
 *
 *	clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
 *		test/fuzz/fuzz_http.c src/http.c src/transport.c \
 *		-lhttp_parser -lssl -lcrypto -o test/fuzz/fuzz_http
 *	test/fuzz/fuzz_http -max_total_time=60
 *
 * (clang: apt-get install -y clang libclang-rt-14-dev)
 *
 * Input layout: byte 0 picks the limits and how responses are sent, bytes
 * 1-2 pick the split point, the rest is what the client sends, in two
 * writes (split at that point), over a non-blocking socketpair.  Every
 * request is popped and answered; timeouts are forced at the end; all
 * memory is freed, so leaks show up under ASan.
 *
 * test/fuzz/fuzz_http.c
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http.h"
#include "transport.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Read and discard whatever the server has sent. */
static void
drain_client(int fd)
{
	char		buf[65536];

	while (read(fd, buf, sizeof(buf)) > 0)
		;
}

/*
 * Write as much of data as the socket takes; returns the bytes written.
 */
static size_t
client_write(int fd, const uint8_t *data, size_t len)
{
	size_t		off = 0;

	while (off < len)
	{
		ssize_t		n = write(fd, data + off, len - off);

		if (n <= 0)
			break;
		off += (size_t) n;
	}
	return off;
}

/*
 * One round of what an event loop does: read, answer every request, flush.
 * Returns -1 once the connection is finished, else the number of requests
 * answered.
 */
static int
service(BwConn *c, int client, uint8_t mode, int64_t now, int *seq)
{
	BwHttpRequest *req;
	int			answered = 0;

	if (bw_conn_want_read(c) && bw_conn_on_readable(c, now) < 0)
		return -1;
	while ((req = bw_conn_pop_request(c)) != NULL)
	{
		(*seq)++;
		if (req->error_status != 0)
			bw_conn_respond_error(c, req);
		else
		{
			char		body[128];
			size_t		len;
			const char *h = bw_http_header(req, "content-type");

			/* touch everything the caller may look at */
			len = (size_t) snprintf(body, sizeof(body),
									"{\"n\":%d,\"m\":%d,\"p\":%zu,\"b\":%zu,\"h\":%d}",
									*seq, req->method, strlen(req->path),
									req->body_len, req->nheaders + (h ? 1 : 0));
			if (req->query != NULL)
				len += strlen(req->query) * 0;
			bw_conn_respond(c, req, (mode & 0x40) ? 404 : 200,
							(mode & 0x20) ? "X-Extra: 1\r\n" : NULL,
							body, len, (mode & 0x10) && (*seq % 2 == 0));
		}
		answered++;
	}
	if (bw_conn_flush(c, now) < 0)
		return -1;
	drain_client(client);
	return answered;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	BwHttpLimits limits;
	BwTransport *t;
	BwConn	   *c;
	int			sv[2];
	uint8_t		mode;
	size_t		split;
	size_t		off1;
	size_t		off2;
	int64_t		now = 1000;
	int			seq = 0;
	int			i;
	bool		finished = false;
	static bool sigpipe_ignored = false;

	if (size < 3)
		return 0;
	if (!sigpipe_ignored)
	{
		signal(SIGPIPE, SIG_IGN);
		sigpipe_ignored = true;
	}
	mode = data[0];
	split = ((size_t) data[1] | ((size_t) data[2] << 8));
	data += 3;
	size -= 3;
	split = size > 0 ? split % (size + 1) : 0;

	memset(&limits, 0, sizeof(limits));
	limits.max_header_size = (mode & 0x01) ? 200 : 8192;
	limits.max_body_size = (mode & 0x02) ? 16 : 65536;
	limits.max_pipelined = 1 + ((mode >> 2) & 0x03);
	limits.request_timeout_ms = 5000;
	limits.keepalive_timeout_ms = 3000;
	limits.write_timeout_ms = (mode & 0x80) ? 1000 : 0;

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
		return 0;
	if (!bw_fd_set_nonblocking(sv[0]) || !bw_fd_set_nonblocking(sv[1]))
	{
		close(sv[0]);
		close(sv[1]);
		return 0;
	}
	t = bw_transport_plain_new(sv[0]);
	if (t == NULL)
	{
		close(sv[0]);
		close(sv[1]);
		return 0;
	}
	c = bw_conn_new(t, &limits, now);
	if (c == NULL)
	{
		close(sv[1]);
		return 0;
	}

	/* first read, then second read, interleaved with service rounds */
	off1 = 0;
	off2 = split;
	for (i = 0; i < 64 && !finished; i++)
	{
		if (off1 < split)
			off1 += client_write(sv[1], data + off1, split - off1);
		else if (off2 < size)
			off2 += client_write(sv[1], data + off2, size - off2);
		now += 10;
		if (service(c, sv[1], mode, now, &seq) < 0)
			finished = true;
		if (off1 >= split && off2 >= size && i > 4)
			break;
	}

	/* let the client half-close, then run the clock out */
	if (!finished && (mode & 0x08))
		shutdown(sv[1], SHUT_WR);
	for (i = 0; i < 16 && !finished; i++)
	{
		int64_t		d = bw_conn_next_deadline(c);

		if (service(c, sv[1], mode, now, &seq) < 0)
			break;
		if (d == INT64_MAX)
			continue;
		if (d > now)
			now = d;
		if (bw_conn_check_timeout(c, now) < 0)
			break;
	}

	bw_conn_free(c);
	close(sv[1]);
	return 0;
}
