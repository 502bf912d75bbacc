/*-------------------------------------------------------------------------
 *
 * test_tls.c
 *	  Unit tests for the TLS contexts and the TLS transport (src/tls.c).
 *
 * Certificates are made at run time with the OpenSSL API (a CA, a server
 * certificate, client certificates from that CA and from an unknown one)
 * and written to a temporary directory that is removed at the end.  Each
 * test runs the server transport over one end of a non-blocking
 * socketpair(2) and an OpenSSL client on the other end, in one thread, by
 * stepping both sides in turn.  The last tests drive src/http.c over the
 * TLS transport.  SIGPIPE is left at its default on purpose: a write to a
 * peer that went away must not raise it.
 *
 * The program prints "N passed, N failed" and exits non-zero if anything
 * failed:
 *
 *	make test/unit/test_tls && test/unit/test_tls
 *	valgrind --leak-check=full --error-exitcode=1 test/unit/test_tls
 *
 * test/unit/test_tls.c
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "http.h"
#include "tls.h"
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

#define CHECK_CONTAINS(hay, needle) \
	do { \
		const char *h_ = (hay); \
		const char *n_ = (needle); \
		if (h_ != NULL && strstr(h_, n_) != NULL) \
			npassed++; \
		else \
		{ \
			nfailed++; \
			fprintf(stderr, "FAIL %s (%s:%d): \"%s\" does not contain \"%s\"\n", \
					current_test, __FILE__, __LINE__, h_ ? h_ : "(null)", n_); \
		} \
	} while (0)

/* how often the two sides are stepped before we give up */
#define MAX_STEPS	400

/* ----------------------------------------------------------------
 *		certificates
 * ----------------------------------------------------------------
 */

static char tmpdir[] = "/tmp/test_tls.XXXXXX";

/* paths in tmpdir */
static char ca_pem[256];
static char other_ca_pem[256];
static char server_pem[256];
static char server_key[256];
static char server2_pem[256];
static char server2_key[256];
static char chain_pem[256];
static char client_pem[256];
static char client_key[256];
static char stranger_pem[256];
static char stranger_key[256];
static char wrong_key[256];
static char enc_key[256];
static char garbage_pem[256];

static void
die(const char *what)
{
	fprintf(stderr, "test_tls: %s\n", what);
	ERR_print_errors_fp(stderr);
	exit(2);
}

static EVP_PKEY *
gen_key(void)
{
	EVP_PKEY   *k = EVP_EC_gen("P-256");

	if (k == NULL)
		die("key generation failed");
	return k;
}

static void
add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, ctx, nid, value);

	if (ext == NULL || !X509_add_ext(x, ext, -1))
		die("could not add an extension");
	X509_EXTENSION_free(ext);
}

/*
 * A certificate for key, named cn, signed by issuer (NULL: self-signed).
 */
static X509 *
make_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key,
		  long serial, int is_ca)
{
	X509	   *x = X509_new();
	X509_NAME  *name;
	X509V3_CTX	v3;

	if (x == NULL)
		die("X509_new");
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 30);
	X509_set_pubkey(x, key);
	name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
							   (const unsigned char *) cn, -1, -1, 0);
	X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
	X509V3_set_ctx(&v3, issuer ? issuer : x, x, NULL, NULL, 0);
	add_ext(x, &v3, NID_subject_key_identifier, "hash");
	add_ext(x, &v3, NID_authority_key_identifier, "keyid:always");
	if (is_ca)
	{
		add_ext(x, &v3, NID_basic_constraints, "critical,CA:TRUE");
		add_ext(x, &v3, NID_key_usage, "critical,keyCertSign,cRLSign");
	}
	else
	{
		add_ext(x, &v3, NID_basic_constraints, "CA:FALSE");
		add_ext(x, &v3, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1");
	}
	if (!X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()))
		die("X509_sign");
	return x;
}

static void
write_certs(const char *path, X509 *a, X509 *b)
{
	FILE	   *f = fopen(path, "w");

	if (f == NULL || !PEM_write_X509(f, a) || (b && !PEM_write_X509(f, b)))
		die("could not write a certificate");
	fclose(f);
}

static void
write_key(const char *path, EVP_PKEY *k, const char *passphrase)
{
	FILE	   *f = fopen(path, "w");
	int			ok;

	if (f == NULL)
		die("could not write a key");
	if (passphrase)
		ok = PEM_write_PrivateKey(f, k, EVP_aes_256_cbc(),
								  (const unsigned char *) passphrase,
								  (int) strlen(passphrase), NULL, NULL);
	else
		ok = PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
	if (!ok)
		die("could not write a key");
	fclose(f);
	chmod(path, 0600);
}

static void
path_in(char *buf, const char *name)
{
	snprintf(buf, 256, "%s/%s", tmpdir, name);
}

static void
make_all_certs(void)
{
	EVP_PKEY   *ca_k = gen_key(),
			   *other_k = gen_key(),
			   *srv_k = gen_key(),
			   *srv2_k = gen_key(),
			   *cli_k = gen_key(),
			   *str_k = gen_key(),
			   *wrong_k = gen_key();
	X509	   *ca = make_cert(ca_k, "test CA", NULL, NULL, 1, 1);
	X509	   *other = make_cert(other_k, "other CA", NULL, NULL, 2, 1);
	X509	   *srv = make_cert(srv_k, "localhost", ca, ca_k, 1001, 0);
	X509	   *srv2 = make_cert(srv2_k, "localhost", ca, ca_k, 1002, 0);
	X509	   *cli = make_cert(cli_k, "client", ca, ca_k, 2001, 0);
	X509	   *str = make_cert(str_k, "stranger", other, other_k, 3001, 0);
	FILE	   *f;

	if (mkdtemp(tmpdir) == NULL)
		die("mkdtemp");
	path_in(ca_pem, "ca.pem");
	path_in(other_ca_pem, "other-ca.pem");
	path_in(server_pem, "server.pem");
	path_in(server_key, "server.key");
	path_in(server2_pem, "server2.pem");
	path_in(server2_key, "server2.key");
	path_in(chain_pem, "chain.pem");
	path_in(client_pem, "client.pem");
	path_in(client_key, "client.key");
	path_in(stranger_pem, "stranger.pem");
	path_in(stranger_key, "stranger.key");
	path_in(wrong_key, "wrong.key");
	path_in(enc_key, "encrypted.key");
	path_in(garbage_pem, "garbage.pem");

	write_certs(ca_pem, ca, NULL);
	write_certs(other_ca_pem, other, NULL);
	write_certs(server_pem, srv, NULL);
	write_certs(server2_pem, srv2, NULL);
	write_certs(chain_pem, srv, ca);
	write_certs(client_pem, cli, NULL);
	write_certs(stranger_pem, str, NULL);
	write_key(server_key, srv_k, NULL);
	write_key(server2_key, srv2_k, NULL);
	write_key(client_key, cli_k, NULL);
	write_key(stranger_key, str_k, NULL);
	write_key(wrong_key, wrong_k, NULL);
	write_key(enc_key, srv_k, "secret");
	f = fopen(garbage_pem, "w");
	if (f == NULL)
		die("fopen");
	fputs("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n", f);
	fclose(f);

	X509_free(ca);
	X509_free(other);
	X509_free(srv);
	X509_free(srv2);
	X509_free(cli);
	X509_free(str);
	EVP_PKEY_free(ca_k);
	EVP_PKEY_free(other_k);
	EVP_PKEY_free(srv_k);
	EVP_PKEY_free(srv2_k);
	EVP_PKEY_free(cli_k);
	EVP_PKEY_free(str_k);
	EVP_PKEY_free(wrong_k);
}

static void
remove_all_certs(void)
{
	const char *files[] = {ca_pem, other_ca_pem, server_pem, server_key,
		server2_pem, server2_key, chain_pem, client_pem, client_key,
		stranger_pem, stranger_key, wrong_key, enc_key, garbage_pem};

	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
		unlink(files[i]);
	rmdir(tmpdir);
}

/* ----------------------------------------------------------------
 *		server contexts and the client side
 * ----------------------------------------------------------------
 */

static BwTlsContext *
server_ctx(const char *cert, const char *key, const char *ca, int min_version)
{
	BwTlsConfig cfg;
	char		err[256];
	BwTlsContext *ctx;

	memset(&cfg, 0, sizeof(cfg));
	cfg.cert_file = cert;
	cfg.key_file = key;
	cfg.ca_file = ca;
	cfg.ciphers = "HIGH:!aNULL:!MD5:!3DES:!RC4:!SHA1";
	cfg.min_version = min_version;
	ctx = bw_tls_context_new(&cfg, err, sizeof(err));
	if (ctx == NULL)
		fprintf(stderr, "%s: server context: %s\n", current_test, err);
	return ctx;
}

/*
 * A client context trusting ca (NULL: no verification), with an optional
 * client certificate and a protocol range (0: OpenSSL's default).
 */
static SSL_CTX *
client_ctx(const char *ca, const char *cert, const char *key, int minv, int maxv)
{
	SSL_CTX    *c = SSL_CTX_new(TLS_client_method());

	if (c == NULL)
		die("SSL_CTX_new");
	if (ca)
	{
		if (SSL_CTX_load_verify_locations(c, ca, NULL) != 1)
			die("client CA");
		SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
	}
	if (cert && (SSL_CTX_use_certificate_file(c, cert, SSL_FILETYPE_PEM) != 1 ||
				 SSL_CTX_use_PrivateKey_file(c, key, SSL_FILETYPE_PEM) != 1))
		die("client certificate");
	if (minv && minv < TLS1_2_VERSION)
	{
		/* old protocols need the lowest security level on the client */
		SSL_CTX_set_security_level(c, 0);
		SSL_CTX_set_cipher_list(c, "DEFAULT:@SECLEVEL=0");
	}
	if (minv)
		SSL_CTX_set_min_proto_version(c, minv);
	if (maxv)
		SSL_CTX_set_max_proto_version(c, maxv);
	return c;
}

/* The two ends of a connection. */
typedef struct Pair
{
	int			cfd;			/* client end */
	BwTransport *t;				/* server transport on the other end */
	SSL		   *c;				/* client SSL, or NULL */
	int			server_rc;		/* last handshake result */
	int			server_done;
	int			server_failed;
	int			client_done;
	int			client_failed;
} Pair;

static void
set_nonblocking(int fd)
{
	int			flags = fcntl(fd, F_GETFL, 0);

	fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

static int
pair_open(Pair *p, BwTlsContext *ctx, SSL_CTX *cctx)
{
	int			sv[2];

	memset(p, 0, sizeof(*p));
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
		die("socketpair");
	set_nonblocking(sv[0]);
	set_nonblocking(sv[1]);
	p->cfd = sv[1];
	p->t = bw_transport_tls_new(sv[0], ctx);
	if (p->t == NULL)
		die("bw_transport_tls_new");
	if (cctx)
	{
		p->c = SSL_new(cctx);
		SSL_set_fd(p->c, p->cfd);
		SSL_set_connect_state(p->c);
	}
	return 1;
}

static void
pair_close(Pair *p)
{
	if (p->t)
		p->t->ops->close(p->t);
	if (p->c)
		SSL_free(p->c);
	if (p->cfd >= 0)
		close(p->cfd);
	ERR_clear_error();
}

/* One step of the server handshake. */
static void
server_step(Pair *p)
{
	BwIoResult	r;

	if (p->server_done || p->server_failed)
		return;
	r = p->t->ops->handshake(p->t);
	p->server_rc = r;
	if (r == BW_IO_OK)
	{
		p->server_done = 1;
		p->t->handshake_done = true;
	}
	else if (r == BW_IO_ERROR || r == BW_IO_EOF)
		p->server_failed = 1;
}

/* One step of the client handshake. */
static void
client_step(Pair *p)
{
	int			rc;
	int			err;

	if (p->client_done || p->client_failed || p->c == NULL)
		return;
	ERR_clear_error();
	rc = SSL_connect(p->c);
	if (rc == 1)
	{
		p->client_done = 1;
		return;
	}
	err = SSL_get_error(p->c, rc);
	if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE)
		p->client_failed = 1;
	ERR_clear_error();
}

/*
 * Step both sides until both are finished one way or the other, or until
 * nothing moves any more.  Returns 1 when both completed.
 */
static int
handshake(Pair *p)
{
	for (int i = 0; i < MAX_STEPS; i++)
	{
		client_step(p);
		server_step(p);
		if ((p->server_done || p->server_failed) &&
			(p->client_done || p->client_failed || p->c == NULL))
			break;
	}
	return p->server_done && p->client_done;
}

/* Client reads what is there (after the server wrote), up to len. */
static size_t
client_read(Pair *p, char *buf, size_t len)
{
	size_t		got = 0;

	for (int i = 0; i < MAX_STEPS && got < len; i++)
	{
		int			n;

		ERR_clear_error();
		n = SSL_read(p->c, buf + got, (int) (len - got));
		if (n > 0)
			got += (size_t) n;
		else if (SSL_get_error(p->c, n) != SSL_ERROR_WANT_READ)
			break;
	}
	ERR_clear_error();
	return got;
}

/* Server reads until it has len bytes or nothing more comes. */
static size_t
server_read(Pair *p, char *buf, size_t len, BwIoResult *last)
{
	size_t		got = 0;
	BwIoResult	r = BW_IO_WANT_READ;

	for (int i = 0; i < MAX_STEPS && got < len; i++)
	{
		size_t		n = 0;

		r = p->t->ops->read(p->t, buf + got, len - got, &n);
		if (r == BW_IO_OK)
			got += n;
		else if (r != BW_IO_WANT_READ)
			break;
	}
	if (last)
		*last = r;
	return got;
}

/* Serial number of the certificate the client got. */
static long
peer_serial(SSL *c)
{
	X509	   *x = SSL_get1_peer_certificate(c);
	long		serial;

	if (x == NULL)
		return -1;
	serial = ASN1_INTEGER_get(X509_get0_serialNumber(x));
	X509_free(x);
	return serial;
}

/* ----------------------------------------------------------------
 *		tests
 * ----------------------------------------------------------------
 */

static void
test_context_errors(void)
{
	BwTlsConfig cfg;
	char		err[256];
	BwTlsContext *ctx;

	current_test = "context_errors";
	memset(&cfg, 0, sizeof(cfg));
	cfg.cert_file = server_pem;
	cfg.key_file = server_key;
	cfg.ciphers = "HIGH:!aNULL";
	cfg.min_version = BW_TLS_VERSION_1_2;

	ctx = bw_tls_context_new(&cfg, err, sizeof(err));
	CHECK(ctx != NULL);
	CHECK_INT(err[0], '\0');
	bw_tls_context_release(ctx);
	bw_tls_context_release(NULL);

	cfg.cert_file = "";
	CHECK(bw_tls_context_new(&cfg, err, sizeof(err)) == NULL);
	CHECK_CONTAINS(err, "ssl_cert_file is not set");
	cfg.cert_file = server_pem;

	cfg.key_file = NULL;
	CHECK(bw_tls_context_new(&cfg, err, sizeof(err)) == NULL);
	CHECK_CONTAINS(err, "ssl_key_file is not set");
	cfg.key_file = server_key;

	cfg.cert_file = "/nonexistent/server.pem";
	CHECK(bw_tls_context_new(&cfg, err, sizeof(err)) == NULL);
	CHECK_CONTAINS(err, "could not load server certificate file \"/nonexistent/server.pem\": ");
	CHECK_CONTAINS(err, "No such file");
	cfg.cert_file = garbage_pem;
	CHECK(bw_tls_context_new(&cfg, err, sizeof(err)) == NULL);
	CHECK_CONTAINS(err, "could not load server certificate file");
	cfg.cert_file = server_pem;

	cfg.key_file = "/nonexistent/server.key";
	CHECK(bw_tls_context_new(&cfg, err, sizeof(err)) == NULL);
	CHECK_CONTAINS(err, "could not access private key file \"/nonexistent/server.key\": No such file");
	cfg.key_file = tmpdir;
	CHECK(bw_tls_context_new(&cfg, err, sizeof(err)) == NULL);
	CHECK_CONTAINS(err, "is not a regular file");
	cfg.key_file = server_key;

	/* permissions, as PostgreSQL checks ssl_key_file */
	chmod(server_key, 0644);
	CHECK(bw_tls_context_new(&cfg, err, sizeof(err)) == NULL);
	CHECK_CONTAINS(err, "has group or world access");
	chmod(server_key, 0604);
	CHECK(bw_tls_context_new(&cfg, err, sizeof(err)) == NULL);
	chmod(server_key, 0640);
	ctx = bw_tls_context_new(&cfg, err, sizeof(err));
	if (geteuid() == 0)
		CHECK(ctx != NULL);		/* root-owned: group read allowed */
	else
	{
		CHECK(ctx == NULL);
		CHECK_CONTAINS(err, "has group or world access");
	}
	bw_tls_context_release(ctx);
	chmod(server_key, 0400);
	ctx = bw_tls_context_new(&cfg, err, sizeof(err));
	CHECK(ctx != NULL);
	bw_tls_context_release(ctx);
	chmod(server_key, 0600);

	cfg.key_file = wrong_key;
	CHECK(bw_tls_context_new(&cfg, err, sizeof(err)) == NULL);
	CHECK_CONTAINS(err, "does not match certificate file");
	cfg.key_file = enc_key;
	CHECK(bw_tls_context_new(&cfg, err, sizeof(err)) == NULL);
	CHECK_CONTAINS(err, "requires a passphrase");
	cfg.key_file = server_pem;	/* a certificate, not a key */
	chmod(server_pem, 0600);
	CHECK(bw_tls_context_new(&cfg, err, sizeof(err)) == NULL);
	CHECK_CONTAINS(err, "could not load private key file");
	chmod(server_pem, 0644);
	cfg.key_file = server_key;

	cfg.ciphers = "NO-SUCH-CIPHER";
	CHECK(bw_tls_context_new(&cfg, err, sizeof(err)) == NULL);
	CHECK_CONTAINS(err, "could not set the cipher list \"NO-SUCH-CIPHER\"");
	cfg.ciphers = "";
	ctx = bw_tls_context_new(&cfg, err, sizeof(err));
	CHECK(ctx != NULL);			/* empty: OpenSSL's default list */
	bw_tls_context_release(ctx);
	cfg.ciphers = "HIGH:!aNULL";

	cfg.ca_file = "/nonexistent/ca.pem";
	CHECK(bw_tls_context_new(&cfg, err, sizeof(err)) == NULL);
	CHECK_CONTAINS(err, "could not load root certificate file \"/nonexistent/ca.pem\"");
	cfg.ca_file = garbage_pem;
	CHECK(bw_tls_context_new(&cfg, err, sizeof(err)) == NULL);
	CHECK_CONTAINS(err, "could not load root certificate file");
	cfg.ca_file = ca_pem;
	ctx = bw_tls_context_new(&cfg, err, sizeof(err));
	CHECK(ctx != NULL);
	bw_tls_context_release(ctx);
	cfg.ca_file = NULL;

	cfg.min_version = 7;
	CHECK(bw_tls_context_new(&cfg, err, sizeof(err)) == NULL);
	CHECK_CONTAINS(err, "invalid minimum TLS protocol version");
	cfg.min_version = BW_TLS_VERSION_1_3;

	/* a full chain in the certificate file */
	cfg.cert_file = chain_pem;
	ctx = bw_tls_context_new(&cfg, err, sizeof(err));
	CHECK(ctx != NULL);
	bw_tls_context_release(ctx);

	/* no error is left behind for the next connection to trip over */
	CHECK_INT(ERR_peek_error(), 0);
}

/* Handshake, request, answer, orderly close, over one protocol version. */
static void
run_roundtrip(const char *name, int server_min, int cmin, int cmax,
			  const char *want_version)
{
	BwTlsContext *ctx = server_ctx(server_pem, server_key, NULL, server_min);
	SSL_CTX    *cctx = client_ctx(ca_pem, NULL, NULL, cmin, cmax);
	Pair		p;
	char		buf[256];
	size_t		n = 0;
	BwIoResult	r;
	int			rc;
	static const char req[] = "POST /x HTTP/1.1\r\nHost: a\r\n\r\n";
	static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

	current_test = name;
	pair_open(&p, ctx, cctx);
	CHECK(bw_transport_is_tls(p.t));
	CHECK(bw_tls_version(p.t) == NULL);

	/* nothing sent yet: the server waits, and nothing has failed */
	CHECK_INT(p.t->ops->handshake(p.t), BW_IO_WANT_READ);
	CHECK_INT(bw_tls_failure(p.t), BW_TLS_FAILURE_NONE);

	CHECK(handshake(&p));
	CHECK_INT(SSL_get_verify_result(p.c), X509_V_OK);
	CHECK(bw_tls_version(p.t) != NULL &&
		  strcmp(bw_tls_version(p.t), want_version) == 0);
	CHECK_INT(bw_tls_failure(p.t), BW_TLS_FAILURE_NONE);
	CHECK(strcmp(SSL_get_version(p.c), want_version) == 0);
	CHECK_INT(peer_serial(p.c), 1001);
	/* no session ticket is issued */
	{
		SSL_SESSION *s;

		ERR_clear_error();
		rc = SSL_read(p.c, buf, 1);
		CHECK_INT(SSL_get_error(p.c, rc), SSL_ERROR_WANT_READ);
		s = SSL_get1_session(p.c);
		CHECK(s == NULL || !SSL_SESSION_has_ticket(s));
		SSL_SESSION_free(s);
	}

	/* client to server */
	CHECK_INT(SSL_write(p.c, req, sizeof(req) - 1), sizeof(req) - 1);
	n = server_read(&p, buf, sizeof(req) - 1, &r);
	CHECK_INT(n, sizeof(req) - 1);
	CHECK(memcmp(buf, req, sizeof(req) - 1) == 0);
	/* nothing more: want read */
	CHECK_INT(p.t->ops->read(p.t, buf, sizeof(buf), &n), BW_IO_WANT_READ);
	CHECK_INT(n, 0);

	/* pending: a record read in part leaves the rest buffered */
	CHECK_INT(SSL_write(p.c, "0123456789", 10), 10);
	CHECK_INT(server_read(&p, buf, 4, NULL), 4);
	CHECK_INT(p.t->ops->pending(p.t), 6);
	CHECK_INT(p.t->ops->read(p.t, buf, sizeof(buf), &n), BW_IO_OK);
	CHECK_INT(n, 6);
	CHECK(memcmp(buf, "456789", 6) == 0);
	CHECK_INT(p.t->ops->pending(p.t), 0);

	/* server to client */
	CHECK_INT(p.t->ops->write(p.t, resp, sizeof(resp) - 1, &n), BW_IO_OK);
	CHECK_INT(n, sizeof(resp) - 1);
	CHECK_INT(client_read(&p, buf, sizeof(resp) - 1), sizeof(resp) - 1);
	CHECK(memcmp(buf, resp, sizeof(resp) - 1) == 0);

	/* shutdown: close_notify then FIN; the server can still read */
	CHECK_INT(p.t->ops->shutdown(p.t), BW_IO_OK);
	ERR_clear_error();
	rc = SSL_read(p.c, buf, sizeof(buf));
	CHECK_INT(rc, 0);
	CHECK_INT(SSL_get_error(p.c, rc), SSL_ERROR_ZERO_RETURN);
	CHECK_INT(SSL_write(p.c, "late", 4), 4);
	CHECK_INT(server_read(&p, buf, 4, NULL), 4);
	/* the client's close_notify is an orderly EOF */
	SSL_shutdown(p.c);
	CHECK_INT(p.t->ops->read(p.t, buf, sizeof(buf), &n), BW_IO_EOF);

	pair_close(&p);
	SSL_CTX_free(cctx);
	bw_tls_context_release(ctx);
}

static void
test_roundtrips(void)
{
	run_roundtrip("tls12", BW_TLS_VERSION_1_2, TLS1_2_VERSION, TLS1_2_VERSION,
				  "TLSv1.2");
	run_roundtrip("tls13", BW_TLS_VERSION_1_2, TLS1_3_VERSION, 0, "TLSv1.3");
	run_roundtrip("tls13_min13", BW_TLS_VERSION_1_3, 0, 0, "TLSv1.3");
}

/* Protocol versions below the minimum are refused and counted as such. */
static void
run_old_client(const char *name, int server_min, int cmax)
{
	BwTlsContext *ctx = server_ctx(server_pem, server_key, NULL, server_min);
	SSL_CTX    *cctx = client_ctx(ca_pem, NULL, NULL,
								  cmax < TLS1_2_VERSION ? cmax : 0, cmax);
	Pair		p;

	current_test = name;
	pair_open(&p, ctx, cctx);
	CHECK(!handshake(&p));
	CHECK(p.server_failed);
	CHECK(p.client_failed);
	CHECK_INT(bw_tls_failure(p.t), BW_TLS_FAILURE_PROTOCOL);
	CHECK_CONTAINS(bw_tls_failure_detail(p.t), "protocol");
	pair_close(&p);
	SSL_CTX_free(cctx);
	bw_tls_context_release(ctx);
}

static void
test_old_protocols(void)
{
	run_old_client("tls11_refused", BW_TLS_VERSION_1_2, TLS1_1_VERSION);
	run_old_client("tls10_refused", BW_TLS_VERSION_1_2, TLS1_VERSION);
	run_old_client("tls12_below_min13", BW_TLS_VERSION_1_3, TLS1_2_VERSION);
}

/* Send raw bytes, step the server, return the result. */
static BwIoResult
raw_client(Pair *p, const void *bytes, size_t len)
{
	if (len > 0 && write(p->cfd, bytes, len) != (ssize_t) len)
		die("write");
	for (int i = 0; i < 10 && !p->server_failed && !p->server_done; i++)
		server_step(p);
	return (BwIoResult) p->server_rc;
}

static void
test_garbage(void)
{
	BwTlsContext *ctx = server_ctx(server_pem, server_key, NULL,
								   BW_TLS_VERSION_1_2);
	unsigned char junk[512];
	uint32_t	seed = 12345;
	Pair		p;
	static const unsigned char bad_record[] = {
		0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00
	};
	static const unsigned char huge_record[] = {
		0x16, 0x03, 0x01, 0xff, 0xff
	};

	current_test = "garbage";
	for (int round = 0; round < 20; round++)
	{
		for (size_t i = 0; i < sizeof(junk); i++)
		{
			seed = seed * 1103515245 + 12345;
			junk[i] = (unsigned char) (seed >> 16);
		}
		if (junk[0] >= 'A' && junk[0] <= 'Z')
			junk[0] = 0;		/* that would be plain HTTP */
		pair_open(&p, ctx, NULL);
		raw_client(&p, junk, sizeof(junk));
		CHECK(p.server_failed);
		CHECK_INT(bw_tls_failure(p.t), BW_TLS_FAILURE_HANDSHAKE);
		pair_close(&p);
	}

	/* a malformed ClientHello inside a well-formed record */
	pair_open(&p, ctx, NULL);
	raw_client(&p, bad_record, sizeof(bad_record));
	CHECK(p.server_failed);
	CHECK_INT(bw_tls_failure(p.t), BW_TLS_FAILURE_HANDSHAKE);
	pair_close(&p);

	/* a record header announcing too much */
	pair_open(&p, ctx, NULL);
	raw_client(&p, huge_record, sizeof(huge_record));
	CHECK(p.server_failed);
	CHECK_INT(bw_tls_failure(p.t), BW_TLS_FAILURE_HANDSHAKE);
	pair_close(&p);

	/* garbage, then the client goes away: still a handshake failure */
	pair_open(&p, ctx, NULL);
	raw_client(&p, "\x16\x03", 2);
	CHECK(!p.server_failed);
	close(p.cfd);
	p.cfd = -1;
	raw_client(&p, NULL, 0);
	CHECK(p.server_failed);
	CHECK_INT(bw_tls_failure(p.t), BW_TLS_FAILURE_HANDSHAKE);
	pair_close(&p);

	bw_tls_context_release(ctx);
}

static void
test_plain_http(void)
{
	BwTlsContext *ctx = server_ctx(server_pem, server_key, NULL,
								   BW_TLS_VERSION_1_2);
	static const char req[] =
		"POST /biteship/live HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}";
	char		buf[1024];
	size_t		got = 0;
	ssize_t		n;
	Pair		p;

	current_test = "plain_http";
	pair_open(&p, ctx, NULL);
	CHECK_INT(raw_client(&p, req, sizeof(req) - 1), BW_IO_ERROR);
	CHECK_INT(bw_tls_failure(p.t), BW_TLS_FAILURE_HANDSHAKE);
	CHECK_CONTAINS(bw_tls_failure_detail(p.t), "plain HTTP");
	/* the client gets a readable answer, then EOF */
	while ((n = read(p.cfd, buf + got, sizeof(buf) - 1 - got)) > 0)
		got += (size_t) n;
	buf[got] = '\0';
	CHECK_INT(n, 0);
	CHECK(strncmp(buf, "HTTP/1.1 400 Bad Request\r\n", 26) == 0);
	CHECK_CONTAINS(buf, "Connection: close");
	CHECK_CONTAINS(buf, "\r\n\r\n{\"ok\":false,\"error\":\"plain HTTP request sent to the HTTPS port\"}");
	/* calling again changes nothing */
	CHECK_INT(p.t->ops->handshake(p.t), BW_IO_ERROR);
	pair_close(&p);

	/* just the first letters of a method are enough */
	pair_open(&p, ctx, NULL);
	CHECK_INT(raw_client(&p, "GE", 2), BW_IO_ERROR);
	CHECK_INT(bw_tls_failure(p.t), BW_TLS_FAILURE_HANDSHAKE);
	pair_close(&p);

	bw_tls_context_release(ctx);
}

static void
test_silent_clients(void)
{
	BwTlsContext *ctx = server_ctx(server_pem, server_key, NULL,
								   BW_TLS_VERSION_1_2);
	SSL_CTX    *cctx = client_ctx(ca_pem, NULL, NULL, 0, 0);
	unsigned char hello[4096];
	int			hello_len;
	Pair		p;

	current_test = "silent_clients";

	/* connect and close without a byte: not a failure */
	pair_open(&p, ctx, NULL);
	CHECK_INT(p.t->ops->handshake(p.t), BW_IO_WANT_READ);
	close(p.cfd);
	p.cfd = -1;
	CHECK_INT(p.t->ops->handshake(p.t), BW_IO_EOF);
	CHECK_INT(bw_tls_failure(p.t), BW_TLS_FAILURE_NONE);
	pair_close(&p);

	/* connect and stay silent (the listener times it out): not a failure */
	pair_open(&p, ctx, NULL);
	for (int i = 0; i < 3; i++)
		CHECK_INT(p.t->ops->handshake(p.t), BW_IO_WANT_READ);
	CHECK_INT(bw_tls_failure(p.t), BW_TLS_FAILURE_NONE);
	pair_close(&p);

	/* half a ClientHello, then silence: a failed handshake */
	{
		SSL		   *c = SSL_new(cctx);
		BIO		   *rb = BIO_new(BIO_s_mem());
		BIO		   *wb = BIO_new(BIO_s_mem());

		SSL_set_bio(c, rb, wb);
		SSL_set_connect_state(c);
		SSL_do_handshake(c);
		hello_len = BIO_read(wb, hello, sizeof(hello));
		SSL_free(c);
		ERR_clear_error();
	}
	CHECK(hello_len > 40);
	pair_open(&p, ctx, NULL);
	CHECK_INT(raw_client(&p, hello, (size_t) hello_len / 2), BW_IO_WANT_READ);
	CHECK(!p.server_failed);
	CHECK_INT(bw_tls_failure(p.t), BW_TLS_FAILURE_HANDSHAKE);
	/* the rest, later: the handshake goes on */
	CHECK_INT(raw_client(&p, hello + hello_len / 2,
						 (size_t) (hello_len - hello_len / 2)), BW_IO_WANT_READ);
	CHECK(!p.server_failed);
	pair_close(&p);

	SSL_CTX_free(cctx);
	bw_tls_context_release(ctx);
}

/* Client certificates, when the server has a CA file. */
static void
run_mtls(const char *name, int cmax)
{
	BwTlsContext *ctx = server_ctx(server_pem, server_key, ca_pem,
								   BW_TLS_VERSION_1_2);
	SSL_CTX    *anon = client_ctx(ca_pem, NULL, NULL, 0, cmax);
	SSL_CTX    *good = client_ctx(ca_pem, client_pem, client_key, 0, cmax);
	SSL_CTX    *stranger = client_ctx(ca_pem, stranger_pem, stranger_key, 0, cmax);
	char		buf[64];
	Pair		p;

	current_test = name;

	pair_open(&p, ctx, good);
	CHECK(handshake(&p));
	CHECK_INT(bw_tls_failure(p.t), BW_TLS_FAILURE_NONE);
	CHECK_INT(SSL_write(p.c, "hi", 2), 2);
	CHECK_INT(server_read(&p, buf, 2, NULL), 2);
	pair_close(&p);

	pair_open(&p, ctx, anon);
	handshake(&p);
	CHECK(p.server_failed);
	CHECK_INT(bw_tls_failure(p.t), BW_TLS_FAILURE_HANDSHAKE);
	CHECK_CONTAINS(bw_tls_failure_detail(p.t), "certificate");
	/* with TLS 1.3 the client learns it only when it reads */
	CHECK(p.client_failed || client_read(&p, buf, 1) == 0);
	pair_close(&p);

	pair_open(&p, ctx, stranger);
	handshake(&p);
	CHECK(p.server_failed);
	CHECK_INT(bw_tls_failure(p.t), BW_TLS_FAILURE_UNKNOWN_CA);
	CHECK_CONTAINS(bw_tls_failure_detail(p.t), "certificate verify failed");
	CHECK(p.client_failed || client_read(&p, buf, 1) == 0);
	pair_close(&p);

	SSL_CTX_free(anon);
	SSL_CTX_free(good);
	SSL_CTX_free(stranger);
	bw_tls_context_release(ctx);
}

static void
test_mtls(void)
{
	run_mtls("mtls12", TLS1_2_VERSION);
	run_mtls("mtls13", 0);
}

/* A client that does not trust our CA fails; the server counts it. */
static void
test_client_distrusts(void)
{
	BwTlsContext *ctx = server_ctx(server_pem, server_key, NULL,
								   BW_TLS_VERSION_1_2);
	SSL_CTX    *cctx = client_ctx(other_ca_pem, NULL, NULL, 0, 0);
	Pair		p;

	current_test = "client_distrusts";
	pair_open(&p, ctx, cctx);
	CHECK(!handshake(&p));
	CHECK(p.client_failed);
	CHECK(p.server_failed);
	CHECK_INT(bw_tls_failure(p.t), BW_TLS_FAILURE_HANDSHAKE);
	CHECK_CONTAINS(bw_tls_failure_detail(p.t), "unknown ca");
	pair_close(&p);
	SSL_CTX_free(cctx);
	bw_tls_context_release(ctx);
}

/*
 * A reload: the listener swaps contexts; a connection made on the old one
 * keeps working after the old one was released, new ones get the new
 * certificate.
 */
static void
test_swap_contexts(void)
{
	BwTlsContext *old = server_ctx(server_pem, server_key, NULL,
								   BW_TLS_VERSION_1_2);
	BwTlsContext *new;
	SSL_CTX    *cctx = client_ctx(ca_pem, NULL, NULL, 0, 0);
	Pair		a,
				b,
				c;
	char		buf[16];
	size_t		n;

	current_test = "swap_contexts";
	pair_open(&a, old, cctx);
	CHECK(handshake(&a));
	pair_open(&b, old, cctx);	/* accepted, handshake not begun */

	new = server_ctx(server2_pem, server2_key, NULL, BW_TLS_VERSION_1_2);
	CHECK(new != NULL);
	bw_tls_context_release(old);

	CHECK(handshake(&b));
	CHECK_INT(peer_serial(b.c), 1001);
	pair_open(&c, new, cctx);
	CHECK(handshake(&c));
	CHECK_INT(peer_serial(c.c), 1002);

	CHECK_INT(SSL_write(a.c, "still", 5), 5);
	CHECK_INT(server_read(&a, buf, 5, NULL), 5);
	CHECK_INT(a.t->ops->write(a.t, "ok", 2, &n), BW_IO_OK);
	CHECK_INT(client_read(&a, buf, 2), 2);

	pair_close(&a);
	pair_close(&b);				/* the last user of the old context */
	pair_close(&c);
	bw_tls_context_release(new);
	SSL_CTX_free(cctx);
}

/*
 * Big answers: partial writes and WANT_WRITE with a small socket buffer,
 * retried from a buffer that moved and grew, as http.c does.
 */
static void
test_big_write(void)
{
	BwTlsContext *ctx = server_ctx(server_pem, server_key, NULL,
								   BW_TLS_VERSION_1_2);
	SSL_CTX    *cctx = client_ctx(ca_pem, NULL, NULL, 0, 0);
	const size_t total = 1024 * 1024;
	unsigned char *data = malloc(total);
	unsigned char *got = malloc(total);
	size_t		sent = 0,
				received = 0;
	int			want_write = 0;
	int			sndbuf = 4096;
	Pair		p;

	current_test = "big_write";
	for (size_t i = 0; i < total; i++)
		data[i] = (unsigned char) (i * 7 + (i >> 10));
	pair_open(&p, ctx, cctx);
	CHECK(handshake(&p));
	setsockopt(p.t->fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));

	for (int i = 0; i < 100000 && received < total; i++)
	{
		if (sent < total)
		{
			/* a fresh copy each time: the buffer moves and may grow */
			size_t		len = total - sent < 100000 ? total - sent : 100000;
			unsigned char *copy = malloc(len);
			size_t		n = 0;
			BwIoResult	r;

			memcpy(copy, data + sent, len);
			r = p.t->ops->write(p.t, copy, len, &n);
			free(copy);
			if (r == BW_IO_OK)
				sent += n;
			else if (r == BW_IO_WANT_WRITE)
				want_write++;
			else
			{
				CHECK(r == BW_IO_OK);
				break;
			}
		}
		if (i % 3 == 0 || sent == total)
		{
			int			n;

			ERR_clear_error();
			n = SSL_read(p.c, got + received, (int) (total - received));
			if (n > 0)
				received += (size_t) n;
		}
	}
	CHECK_INT(sent, total);
	CHECK_INT(received, total);
	CHECK(want_write > 0);
	CHECK(memcmp(data, got, total) == 0);
	pair_close(&p);
	free(data);
	free(got);
	SSL_CTX_free(cctx);
	bw_tls_context_release(ctx);
}

/* The peer disappears: errors, no SIGPIPE, close does not block. */
static void
test_peer_gone(void)
{
	BwTlsContext *ctx = server_ctx(server_pem, server_key, NULL,
								   BW_TLS_VERSION_1_2);
	SSL_CTX    *cctx = client_ctx(ca_pem, NULL, NULL, 0, 0);
	char		buf[8192];
	size_t		n;
	BwIoResult	r = BW_IO_OK;
	Pair		p;

	current_test = "peer_gone";
	pair_open(&p, ctx, cctx);
	CHECK(handshake(&p));
	SSL_free(p.c);
	p.c = NULL;
	close(p.cfd);
	p.cfd = -1;

	/* EOF without close_notify reads as EOF */
	CHECK_INT(p.t->ops->read(p.t, buf, sizeof(buf), &n), BW_IO_EOF);

	pair_close(&p);

	pair_open(&p, ctx, cctx);
	CHECK(handshake(&p));
	close(p.cfd);
	p.cfd = -1;
	memset(buf, 'x', sizeof(buf));
	for (int i = 0; i < 100 && r == BW_IO_OK; i++)
		r = p.t->ops->write(p.t, buf, sizeof(buf), &n);
	CHECK_INT(r, BW_IO_ERROR);	/* EPIPE, and we are still alive */
	CHECK_INT(p.t->ops->write(p.t, buf, 1, &n), BW_IO_ERROR);
	CHECK_INT(p.t->ops->pending(p.t), 0);
	pair_close(&p);

	SSL_CTX_free(cctx);
	bw_tls_context_release(ctx);
}

/* A TLS 1.2 client asking to renegotiate is turned down. */
static void
test_no_renegotiation(void)
{
	BwTlsContext *ctx = server_ctx(server_pem, server_key, NULL,
								   BW_TLS_VERSION_1_2);
	SSL_CTX    *cctx = client_ctx(ca_pem, NULL, NULL, 0, TLS1_2_VERSION);
	char		buf[64];
	size_t		n;
	int			completed = 0;
	BwIoResult	r = BW_IO_WANT_READ;
	Pair		p;

	current_test = "no_renegotiation";
	pair_open(&p, ctx, cctx);
	CHECK(handshake(&p));
	CHECK_INT(SSL_renegotiate(p.c), 1);
	for (int i = 0; i < 20; i++)
	{
		int			rc;

		ERR_clear_error();
		rc = SSL_do_handshake(p.c);
		if (rc == 1 && !SSL_renegotiate_pending(p.c))
			completed = 1;
		if (rc <= 0 && SSL_get_error(p.c, rc) != SSL_ERROR_WANT_READ &&
			SSL_get_error(p.c, rc) != SSL_ERROR_WANT_WRITE)
			break;
		r = p.t->ops->read(p.t, buf, sizeof(buf), &n);
		if (r == BW_IO_ERROR || r == BW_IO_EOF)
			break;
	}
	CHECK(!completed);
	CHECK(r != BW_IO_OK);
	ERR_clear_error();
	pair_close(&p);
	SSL_CTX_free(cctx);
	bw_tls_context_release(ctx);
}

static void
test_misc(void)
{
	int			sv[2];
	BwTransport *plain;

	current_test = "misc";
	CHECK(!bw_transport_is_tls(NULL));
	CHECK_INT(bw_tls_failure(NULL), BW_TLS_FAILURE_NONE);
	CHECK(bw_transport_tls_new(0, NULL) == NULL);
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
		die("socketpair");
	plain = bw_transport_plain_new(sv[0]);
	CHECK(!bw_transport_is_tls(plain));
	CHECK_INT(bw_tls_failure(plain), BW_TLS_FAILURE_NONE);
	CHECK(strcmp(bw_tls_failure_detail(plain), "") == 0);
	CHECK(bw_tls_version(plain) == NULL);
	plain->ops->close(plain);
	close(sv[1]);
}

/* ----------------------------------------------------------------
 *		http.c over TLS
 * ----------------------------------------------------------------
 */

static BwHttpLimits
test_limits(void)
{
	BwHttpLimits l;

	memset(&l, 0, sizeof(l));
	l.max_header_size = 8192;
	l.max_body_size = 65536;
	l.max_pipelined = 16;
	l.request_timeout_ms = 1000;
	l.keepalive_timeout_ms = 5000;
	l.write_timeout_ms = 1000;
	return l;
}

/* Step the connection as the listener would. */
static int
conn_step(BwConn *conn, int64_t now)
{
	int			rc = bw_conn_on_readable(conn, now);

	if (rc < 0)
		return -1;
	if (bw_conn_flush(conn, now) < 0)
		return -1;
	return 0;
}

static void
test_http_over_tls(void)
{
	BwTlsContext *ctx = server_ctx(server_pem, server_key, NULL,
								   BW_TLS_VERSION_1_2);
	SSL_CTX    *cctx = client_ctx(ca_pem, NULL, NULL, 0, 0);
	BwHttpLimits limits = test_limits();
	static const char two[] =
		"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
		"GET /b HTTP/1.1\r\nHost: x\r\n\r\n";
	char		buf[4096];
	size_t		got = 0;
	BwHttpRequest *req;
	int			answered = 0;
	BwConn	   *conn;
	Pair		p;

	current_test = "http_over_tls";
	pair_open(&p, ctx, cctx);
	conn = bw_conn_new(p.t, &limits, 0);
	p.t = NULL;					/* owned by conn */
	CHECK(conn != NULL);
	CHECK(bw_conn_want_read(conn));

	/* handshake driven by on_readable/flush; then two pipelined requests */
	for (int i = 0; i < MAX_STEPS && !p.client_done; i++)
	{
		client_step(&p);
		CHECK_INT(conn_step(conn, 10), 0);
	}
	CHECK(p.client_done);
	CHECK_INT(SSL_write(p.c, two, sizeof(two) - 1), sizeof(two) - 1);
	for (int i = 0; i < MAX_STEPS && answered < 2; i++)
	{
		CHECK_INT(conn_step(conn, 20), 0);
		while ((req = bw_conn_pop_request(conn)) != NULL)
		{
			CHECK_INT(req->error_status, 0);
			bw_conn_respond(conn, req, 200, NULL, req->path, strlen(req->path),
							false);
			answered++;
		}
	}
	CHECK_INT(answered, 2);
	CHECK_INT(bw_conn_flush(conn, 30), 0);
	for (int i = 0; i < MAX_STEPS; i++)
	{
		int			n;

		ERR_clear_error();
		n = SSL_read(p.c, buf + got, (int) (sizeof(buf) - 1 - got));
		if (n > 0)
			got += (size_t) n;
		else if (strstr(buf, "/b") != NULL)
			break;
		buf[got] = '\0';
	}
	buf[got] = '\0';
	CHECK(strncmp(buf, "HTTP/1.1 200 ", 13) == 0);
	CHECK_CONTAINS(buf, "\r\n\r\n/a");
	CHECK_CONTAINS(buf, "\r\n\r\n/b");
	bw_conn_free(conn);
	pair_close(&p);

	/*
	 * A stalled handshake is bounded by request_timeout: no deadline
	 * beyond created + request_timeout, and then the connection dies.
	 */
	pair_open(&p, ctx, NULL);
	conn = bw_conn_new(p.t, &limits, 1000);
	CHECK(conn != NULL);
	raw_client(&p, "\x16\x03\x01\x02", 4); /* partial record header */
	CHECK_INT(bw_conn_on_readable(conn, 1100), 0);
	CHECK_INT(bw_conn_next_deadline(conn), 2000);
	CHECK_INT(bw_conn_check_timeout(conn, 1999), 0);
	CHECK_INT(bw_conn_check_timeout(conn, 2000), -1);
	CHECK_INT(bw_tls_failure(bw_conn_transport(conn)), BW_TLS_FAILURE_HANDSHAKE);
	p.t = NULL;
	bw_conn_free(conn);
	pair_close(&p);

	/* plain HTTP through the connection layer: it just fails */
	pair_open(&p, ctx, NULL);
	conn = bw_conn_new(p.t, &limits, 0);
	p.t = NULL;
	if (write(p.cfd, "GET / HTTP/1.1\r\n\r\n", 18) != 18)
		die("write");
	CHECK_INT(bw_conn_on_readable(conn, 1), -1);
	CHECK_INT(bw_tls_failure(bw_conn_transport(conn)), BW_TLS_FAILURE_HANDSHAKE);
	bw_conn_free(conn);
	pair_close(&p);

	SSL_CTX_free(cctx);
	bw_tls_context_release(ctx);
}

int
main(void)
{
	make_all_certs();

	test_context_errors();
	test_roundtrips();
	test_old_protocols();
	test_garbage();
	test_plain_http();
	test_silent_clients();
	test_mtls();
	test_client_distrusts();
	test_swap_contexts();
	test_big_write();
	test_peer_gone();
	test_no_renegotiation();
	test_misc();
	test_http_over_tls();

	remove_all_certs();
	printf("%d passed, %d failed\n", npassed, nfailed);
	return nfailed == 0 ? 0 : 1;
}
