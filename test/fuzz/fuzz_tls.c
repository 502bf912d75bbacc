/*-------------------------------------------------------------------------
 *
 * fuzz_tls.c
 *	  libFuzzer target for the TLS transport (src/tls.c), alone and under
 *	  the HTTP connection layer (src/http.c).
 *
 * Build with "make fuzz" (see test/fuzz/README.md), or by hand from the
 * repository root:
 *
 *	clang-14 -g -O1 -fsanitize=fuzzer,address,undefined \
 *		-fno-sanitize-recover=undefined -Isrc \
 *		test/fuzz/fuzz_tls.c src/tls.c src/http.c src/transport.c \
 *		-lhttp_parser -lssl -lcrypto -o test/fuzz/fuzz_tls
 *	test/fuzz/fuzz_tls -dict=test/fuzz/http.dict test/fuzz/corpus/tls
 *
 * (clang: apt-get install -y clang-14 libclang-rt-14-dev)
 *
 * A self-signed certificate is made once, in memory, and written to a
 * temporary directory for bw_tls_context_new().  Input layout: byte 0 picks
 * the mode, bytes 1-2 the split point, the rest is what the client sends:
 *
 *	mode & 3 == 0	raw bytes as the start of the handshake (ClientHello
 *					parsing, plain-HTTP detection, failure classification)
 *	mode & 3 == 1	a real handshake first, then the raw bytes as records
 *	mode & 3 == 2	a real handshake first, then the bytes as application
 *					data through http.c (requests popped and answered, with
 *					a body budget, wants_body and a small output bound)
 *	mode & 3 == 3	like 0, with client certificates required
 *	mode & 4		the server runs with a TLS 1.3 minimum
 *
 * Everything is freed at the end of each input, so leaks show up under
 * ASan.  The in-process client writes with write(2), so SIGPIPE is ignored
 * here; test/unit/test_tls.c checks that the server side never raises it.
 *
 * test/fuzz/fuzz_tls.c
 *
 *-------------------------------------------------------------------------
 */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <http_parser.h>

#include "http.h"
#include "tls.h"
#include "transport.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static BwTlsContext *ctx12;		/* TLS 1.2 minimum */
static BwTlsContext *ctx13;		/* TLS 1.3 minimum */
static BwTlsContext *ctx_mtls;	/* client certificates required */
static SSL_CTX *client;

static void
die(const char *what)
{
	fprintf(stderr, "fuzz_tls: %s\n", what);
	ERR_print_errors_fp(stderr);
	abort();
}

static BwTlsContext *
server_ctx(const char *cert, const char *key, const char *ca, int minv)
{
	BwTlsConfig cfg;
	char		err[256];
	BwTlsContext *c;

	memset(&cfg, 0, sizeof(cfg));
	cfg.cert_file = cert;
	cfg.key_file = key;
	cfg.ca_file = ca;
	cfg.ciphers = "HIGH:!aNULL:!MD5:!3DES:!RC4:!SHA1";
	cfg.min_version = minv;
	c = bw_tls_context_new(&cfg, err, sizeof(err));
	if (c == NULL)
		die(err);
	return c;
}

/* One self-signed certificate, for the server and as the client CA. */
static void
setup(void)
{
	char		dir[] = "/tmp/fuzz_tls.XXXXXX";
	char		cert[64],
				key[64];
	EVP_PKEY   *k = EVP_EC_gen("P-256");
	X509	   *x = X509_new();
	FILE	   *f;

	signal(SIGPIPE, SIG_IGN);
	if (k == NULL || x == NULL || mkdtemp(dir) == NULL)
		die("setup");
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 365);
	X509_set_pubkey(x, k);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
							   (const unsigned char *) "localhost", -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	if (!X509_sign(x, k, EVP_sha256()))
		die("X509_sign");
	snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
	snprintf(key, sizeof(key), "%s/key.pem", dir);
	f = fopen(cert, "w");
	if (f == NULL || !PEM_write_X509(f, x))
		die("cert");
	fclose(f);
	f = fopen(key, "w");
	if (f == NULL || !PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL))
		die("key");
	fclose(f);
	chmod(key, 0600);

	ctx12 = server_ctx(cert, key, NULL, BW_TLS_VERSION_1_2);
	ctx13 = server_ctx(cert, key, NULL, BW_TLS_VERSION_1_3);
	ctx_mtls = server_ctx(cert, key, cert, BW_TLS_VERSION_1_2);

	client = SSL_CTX_new(TLS_client_method());
	if (client == NULL ||
		SSL_CTX_use_certificate(client, x) != 1 ||
		SSL_CTX_use_PrivateKey(client, k) != 1)
		die("client");

	unlink(cert);
	unlink(key);
	rmdir(dir);
	X509_free(x);
	EVP_PKEY_free(k);
}

/* Write as much as the socket takes. */
static void
client_write(int fd, const uint8_t *data, size_t len)
{
	while (len > 0)
	{
		ssize_t		n = write(fd, data, len);

		if (n <= 0)
			return;
		data += n;
		len -= (size_t) n;
	}
}

static void
drain(int fd)
{
	char		buf[16384];

	while (read(fd, buf, sizeof(buf)) > 0)
		;
}

/* Complete a handshake between t and c; returns 1 on success. */
static int
handshake(BwTransport *t, SSL *c)
{
	int			cdone = 0;

	for (int i = 0; i < 200; i++)
	{
		if (!cdone)
		{
			int			rc = SSL_connect(c);

			if (rc == 1)
				cdone = 1;
			else
			{
				int			e = SSL_get_error(c, rc);

				if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
					break;
			}
		}
		if (!t->handshake_done)
		{
			BwIoResult	r = t->ops->handshake(t);

			if (r == BW_IO_OK)
				t->handshake_done = true;
			else if (r == BW_IO_ERROR || r == BW_IO_EOF)
				break;
		}
		if (cdone && t->handshake_done)
			return 1;
	}
	ERR_clear_error();
	return 0;
}

/* Read what the server transport gives, then answer and shut down. */
static void
server_io(BwTransport *t)
{
	char		buf[4096];
	size_t		n;

	for (int i = 0; i < 64; i++)
	{
		BwIoResult	r = t->ops->read(t, buf, sizeof(buf), &n);

		if (r != BW_IO_OK && t->ops->pending(t) == 0)
			break;
	}
	(void) t->ops->write(t, "HTTP/1.1 200 OK\r\n\r\n", 19, &n);
	(void) t->ops->shutdown(t);
	(void) t->ops->read(t, buf, sizeof(buf), &n);
}

/* Bodies are kept for POSTs under /biteship/ only, as webhook paths. */
static bool
wants_body(void *arg, int method, const char *path)
{
	return method == HTTP_POST && strncmp(path, "/biteship/", 10) == 0;
}

static void
run_http(BwTransport *t, SSL *c, const uint8_t *data, size_t len, size_t split)
{
	BwHttpLimits limits;
	BwHttpBudget budget = {.limit = 1024,.used = 0};
	BwConn	   *conn;
	BwHttpRequest *req;

	memset(&limits, 0, sizeof(limits));
	limits.max_header_size = 4096;
	limits.max_body_size = 8192;
	limits.max_pipelined = 4;
	limits.max_pending_output = 256;
	limits.request_timeout_ms = 1000;
	limits.keepalive_timeout_ms = 1000;
	limits.write_timeout_ms = 1000;
	limits.budget = &budget;
	limits.wants_body = wants_body;
	conn = bw_conn_new(t, &limits, 0);
	if (conn == NULL)
		return;
	for (int part = 0; part < 2; part++)
	{
		const uint8_t *p = part == 0 ? data : data + split;
		size_t		n = part == 0 ? split : len - split;

		if (n > 0)
			(void) SSL_write(c, p, (int) n);
		for (int i = 0; i < 8; i++)
		{
			if (bw_conn_on_readable(conn, 10) < 0)
				break;
			while ((req = bw_conn_pop_request(conn)) != NULL)
			{
				if (req->error_status != 0)
					bw_conn_respond_error(conn, req);
				else
					bw_conn_respond(conn, req, 200, NULL, "{}", 2, false);
			}
			if (bw_conn_flush(conn, 10) < 0)
				break;
			{
				char		buf[4096];

				(void) SSL_read(c, buf, sizeof(buf));
			}
		}
	}
	(void) bw_conn_check_timeout(conn, 100000);
	bw_conn_free(conn);
	/* every body charged to the budget is given back */
	if (budget.used != 0)
		die("body budget not returned");
	ERR_clear_error();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int			sv[2];
	int			mode;
	size_t		split;
	BwTlsContext *ctx;
	BwTransport *t;
	SSL		   *c = NULL;

	if (client == NULL)
		setup();
	if (size < 3)
		return 0;
	mode = data[0];
	split = ((size_t) data[1] << 8 | data[2]);
	data += 3;
	size -= 3;
	if (split > size)
		split = size;

	ctx = (mode & 3) == 3 ? ctx_mtls : (mode & 4) ? ctx13 : ctx12;
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
		return 0;
	fcntl(sv[0], F_SETFL, O_NONBLOCK);
	fcntl(sv[1], F_SETFL, O_NONBLOCK);
	t = bw_transport_tls_new(sv[0], ctx);
	if (t == NULL)
		die("bw_transport_tls_new");

	if ((mode & 3) == 0 || (mode & 3) == 3)
	{
		client_write(sv[1], data, split);
		for (int i = 0; i < 4 && !t->handshake_done; i++)
			if (t->ops->handshake(t) == BW_IO_OK)
				t->handshake_done = true;
		client_write(sv[1], data + split, size - split);
		if (mode & 8)
			shutdown(sv[1], SHUT_WR);
		for (int i = 0; i < 4 && !t->handshake_done; i++)
		{
			BwIoResult	r = t->ops->handshake(t);

			if (r == BW_IO_OK)
				t->handshake_done = true;
			else if (r != BW_IO_WANT_READ && r != BW_IO_WANT_WRITE)
				break;
		}
		if (t->handshake_done)
			server_io(t);
		(void) bw_tls_failure(t);
		(void) bw_tls_failure_detail(t);
		drain(sv[1]);
		t->ops->close(t);
	}
	else
	{
		c = SSL_new(client);
		SSL_set_fd(c, sv[1]);
		SSL_set_connect_state(c);
		if (!handshake(t, c))
			t->ops->close(t);
		else if ((mode & 3) == 1)
		{
			client_write(sv[1], data, size);
			server_io(t);
			t->ops->close(t);
		}
		else
			run_http(t, c, data, size, split);	/* frees t */
		SSL_free(c);
	}
	close(sv[1]);
	ERR_clear_error();
	return 0;
}
