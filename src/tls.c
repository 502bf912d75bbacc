/*-------------------------------------------------------------------------
 *
 * tls.c
 *	  TLS for the listener with OpenSSL: server contexts and the TLS
 *	  transport.
 *
 * This file owns everything OpenSSL-specific on the server side.  The
 * setup follows PostgreSQL's src/backend/libpq/be-secure-openssl.c: the
 * certificate file may hold a full chain, the private key file must not be
 * readable by group or others (as for ssl_key_file), client certificates
 * are verified when a CA file is configured, and session tickets, the
 * session cache, compression and renegotiation are all disabled.
 *
 * A BwTlsContext wraps one SSL_CTX.  It is reference counted: the listener
 * holds one reference for the context new connections use, and every TLS
 * transport holds its own, so a reload can swap in a new context while
 * established connections keep the old one until they close.
 *
 * The transport drives SSL_accept/SSL_read/SSL_write on a non-blocking
 * socket and maps OpenSSL's WANT_READ/WANT_WRITE to the BwIoResult values
 * of transport.h.  Socket I/O goes through our own BIO (recv, and send with
 * MSG_NOSIGNAL) so that a peer that went away never raises SIGPIPE.  Before
 * the first handshake byte is consumed, the transport peeks at what the
 * client sent: a plain-HTTP request on the TLS port gets a canned 400
 * answer in clear text and the connection fails, instead of a TLS alert the
 * client cannot read.
 *
 * Every OpenSSL call that is followed by SSL_get_error() starts from an
 * empty error queue, and the queue is emptied again afterwards, so that
 * errors of one connection never leak into another's diagnosis.
 *
 * Like http.c and transport.c this file makes no backend calls and uses no
 * PostgreSQL headers, so it can be unit-tested (test/unit/test_tls.c) and
 * fuzzed (test/fuzz/fuzz_tls.c).  It is single-threaded and never blocks.
 *
 * src/tls.c
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include "tls.h"

/* failure not decided yet (see bw_tls_failure) */
#define FAILURE_UNSET		(-2)

/* how much of a plain-HTTP request we read before answering it */
#define PLAIN_HTTP_DRAIN_MAX	65536

struct BwTlsContext
{
	SSL_CTX    *ctx;
	int			refcount;
};

/* State of one TLS connection (BwTransport.priv). */
typedef struct TlsConn
{
	SSL		   *ssl;
	BwTlsContext *ctx;			/* our reference */
	int			fd;
	bool		peeked;			/* first bytes looked at (plain HTTP?) */
	bool		got_bytes;		/* the client sent at least one byte */
	bool		fatal;			/* fatal error: no close_notify any more */
	bool		close_notify_sent;
	int			failure;		/* BW_TLS_FAILURE_* or FAILURE_UNSET */
	char		detail[160];	/* why the handshake failed */
} TlsConn;

static BwIoResult tls_handshake(BwTransport *t);
static BwIoResult tls_read(BwTransport *t, void *buf, size_t len,
						   size_t *nread);
static BwIoResult tls_write(BwTransport *t, const void *buf, size_t len,
							size_t *nwritten);
static void tls_close(BwTransport *t);
static BwIoResult tls_shutdown(BwTransport *t);
static size_t tls_pending(BwTransport *t);

static const BwTransportOps tls_ops = {
	.handshake = tls_handshake,
	.read = tls_read,
	.write = tls_write,
	.close = tls_close,
	.shutdown = tls_shutdown,
	.pending = tls_pending,
};

/* The answer to a plain-HTTP request on the TLS port. */
#define PLAIN_HTTP_BODY \
	"{\"ok\":false,\"error\":\"plain HTTP request sent to the HTTPS port\"}"
static const char plain_http_response[] =
	"HTTP/1.1 400 Bad Request\r\n"
	"Content-Type: application/json\r\n"
	"Connection: close\r\n"
	"Content-Length: 64\r\n"
	"\r\n"
	PLAIN_HTTP_BODY;

_Static_assert(sizeof(PLAIN_HTTP_BODY) - 1 == 64,
			   "Content-Length of the plain-HTTP answer");


/* ----------------------------------------------------------------
 *		error messages
 * ----------------------------------------------------------------
 */

/*
 * Text for an OpenSSL error code, like PostgreSQL's SSLerrmessage(): the
 * reason string, strerror() for system errors, or the number.
 */
static const char *
ssl_errmessage(unsigned long ecode, char *buf, size_t size)
{
	const char *reason;

	if (ecode == 0)
		return "no SSL error reported";
#ifdef ERR_SYSTEM_ERROR
	if (ERR_SYSTEM_ERROR(ecode))
		return strerror(ERR_GET_REASON(ecode));
#endif
	reason = ERR_reason_error_string(ecode);
	if (reason != NULL)
		return reason;
	snprintf(buf, size, "SSL error code %lu", ecode);
	return buf;
}

/*
 * The first error in the queue, as text; empties the queue.
 */
static const char *
ssl_queue_message(char *buf, size_t size)
{
	unsigned long ecode = ERR_get_error();
	const char *msg = ssl_errmessage(ecode, buf, size);

	/* keep msg valid: it may point into buf, which we do not touch again */
	ERR_clear_error();
	return msg;
}


/* ----------------------------------------------------------------
 *		contexts
 * ----------------------------------------------------------------
 */

/*
 * Never prompt for a passphrase (we run in the background): report that
 * one was needed instead.
 */
static int
no_passphrase_cb(char *buf, int size, int rwflag, void *userdata)
{
	*(bool *) userdata = true;
	if (size > 0)
		buf[0] = '\0';
	return 0;
}

/*
 * The private key must be a regular file owned by us or by root and, like
 * PostgreSQL's ssl_key_file, without group or world access (root-owned
 * files may be group-readable, so that a group such as ssl-cert can grant
 * access).
 */
static bool
check_key_file_permissions(const char *path, char *err, size_t errsize)
{
	struct stat st;

	if (stat(path, &st) != 0)
	{
		snprintf(err, errsize, "could not access private key file \"%s\": %s",
				 path, strerror(errno));
		return false;
	}
	if (!S_ISREG(st.st_mode))
	{
		snprintf(err, errsize, "private key file \"%s\" is not a regular file",
				 path);
		return false;
	}
	if (st.st_uid != geteuid() && st.st_uid != 0)
	{
		snprintf(err, errsize,
				 "private key file \"%s\" must be owned by the database user or root",
				 path);
		return false;
	}
	if ((st.st_uid == 0 && (st.st_mode & (S_IWGRP | S_IXGRP | S_IRWXO)) != 0) ||
		(st.st_uid != 0 && (st.st_mode & (S_IRWXG | S_IRWXO)) != 0))
	{
		snprintf(err, errsize,
				 "private key file \"%s\" has group or world access; "
				 "it must be mode 0600 or less (0640 or less if owned by root)",
				 path);
		return false;
	}
	return true;
}

/*
 * ALPN: we speak HTTP/1.1 only.  Without a match we do not acknowledge
 * ALPN at all, and clients fall back to HTTP/1.1 anyway.
 */
static int
alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
			   const unsigned char *in, unsigned int inlen, void *arg)
{
	static const unsigned char http11[] = "\x08http/1.1";

	if (SSL_select_next_proto((unsigned char **) out, outlen, http11,
							  sizeof(http11) - 1, in, inlen) ==
		OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_OK;
	return SSL_TLSEXT_ERR_NOACK;
}

static bool
is_empty(const char *s)
{
	return s == NULL || s[0] == '\0';
}

/*
 * See tls.h.
 */
BwTlsContext *
bw_tls_context_new(const BwTlsConfig *cfg, char *err, size_t errsize)
{
	static const unsigned char sid_ctx[] = "biteship_webhook";
	static bool passphrase_needed;
	SSL_CTX    *ctx = NULL;
	BwTlsContext *result;
	char		ebuf[64];
	int			min_version;

	if (errsize > 0)
		err[0] = '\0';
	ERR_clear_error();

	if (is_empty(cfg->cert_file))
	{
		snprintf(err, errsize, "biteship_webhook.ssl_cert_file is not set");
		return NULL;
	}
	if (is_empty(cfg->key_file))
	{
		snprintf(err, errsize, "biteship_webhook.ssl_key_file is not set");
		return NULL;
	}
	switch (cfg->min_version)
	{
		case BW_TLS_VERSION_1_2:
			min_version = TLS1_2_VERSION;
			break;
		case BW_TLS_VERSION_1_3:
			min_version = TLS1_3_VERSION;
			break;
		default:
			snprintf(err, errsize, "invalid minimum TLS protocol version %d",
					 cfg->min_version);
			return NULL;
	}

	ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL)
	{
		snprintf(err, errsize, "could not create SSL context: %s",
				 ssl_queue_message(ebuf, sizeof(ebuf)));
		return NULL;
	}

	/*
	 * Partial writes, and retries with a buffer that moved: http.c's output
	 * buffer can grow between a WANT_WRITE and the retry.
	 */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
					 SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);

	/* an encrypted key is an error, never a prompt on the terminal */
	passphrase_needed = false;
	SSL_CTX_set_default_passwd_cb(ctx, no_passphrase_cb);
	SSL_CTX_set_default_passwd_cb_userdata(ctx, &passphrase_needed);

	if (SSL_CTX_use_certificate_chain_file(ctx, cfg->cert_file) != 1)
	{
		snprintf(err, errsize, "could not load server certificate file \"%s\": %s",
				 cfg->cert_file, ssl_queue_message(ebuf, sizeof(ebuf)));
		goto error;
	}

	if (!check_key_file_permissions(cfg->key_file, err, errsize))
		goto error;

	if (SSL_CTX_use_PrivateKey_file(ctx, cfg->key_file, SSL_FILETYPE_PEM) != 1)
	{
		if (passphrase_needed)
		{
			ERR_clear_error();
			snprintf(err, errsize,
					 "private key file \"%s\" cannot be loaded because it requires a passphrase",
					 cfg->key_file);
		}
		else if (ERR_GET_LIB(ERR_peek_error()) == ERR_LIB_X509 &&
				 ERR_GET_REASON(ERR_peek_error()) == X509_R_KEY_VALUES_MISMATCH)
		{
			ERR_clear_error();
			snprintf(err, errsize,
					 "private key file \"%s\" does not match certificate file \"%s\"",
					 cfg->key_file, cfg->cert_file);
		}
		else
			snprintf(err, errsize, "could not load private key file \"%s\": %s",
					 cfg->key_file, ssl_queue_message(ebuf, sizeof(ebuf)));
		goto error;
	}
	if (SSL_CTX_check_private_key(ctx) != 1)
	{
		snprintf(err, errsize,
				 "private key file \"%s\" does not match certificate file \"%s\": %s",
				 cfg->key_file, cfg->cert_file,
				 ssl_queue_message(ebuf, sizeof(ebuf)));
		goto error;
	}

	if (SSL_CTX_set_min_proto_version(ctx, min_version) != 1)
	{
		snprintf(err, errsize, "could not set minimum TLS protocol version: %s",
				 ssl_queue_message(ebuf, sizeof(ebuf)));
		goto error;
	}

	/* no session tickets, no session cache (as PostgreSQL) */
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	SSL_CTX_set_num_tickets(ctx, 0);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	/* no compression (CRIME) */
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION);
	/* no renegotiation (TLS 1.2 and older; TLS 1.3 has none) */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
#ifdef SSL_OP_NO_CLIENT_RENEGOTIATION
	SSL_CTX_set_options(ctx, SSL_OP_NO_CLIENT_RENEGOTIATION);
#endif
	/* the server's cipher order wins */
	SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
	/* ephemeral DH parameters sized to the certificate, for DHE suites */
	SSL_CTX_set_dh_auto(ctx, 1);

	if (!is_empty(cfg->ciphers) &&
		SSL_CTX_set_cipher_list(ctx, cfg->ciphers) != 1)
	{
		ERR_clear_error();
		snprintf(err, errsize,
				 "could not set the cipher list \"%s\" (no valid ciphers available)",
				 cfg->ciphers);
		goto error;
	}

	if (SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1) != 1)
	{
		snprintf(err, errsize, "could not set the session id context: %s",
				 ssl_queue_message(ebuf, sizeof(ebuf)));
		goto error;
	}

	/* client certificates, when a CA file is configured */
	if (!is_empty(cfg->ca_file))
	{
		STACK_OF(X509_NAME) *root_names = NULL;

		if (SSL_CTX_load_verify_locations(ctx, cfg->ca_file, NULL) != 1 ||
			(root_names = SSL_load_client_CA_file(cfg->ca_file)) == NULL)
		{
			snprintf(err, errsize, "could not load root certificate file \"%s\": %s",
					 cfg->ca_file, ssl_queue_message(ebuf, sizeof(ebuf)));
			goto error;
		}

		/*
		 * Send the names of the CAs we trust in the CertificateRequest, so
		 * that a client with several certificates picks the right one; the
		 * context owns the list from here on.
		 */
		SSL_CTX_set_client_CA_list(ctx, root_names);
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT |
						   SSL_VERIFY_CLIENT_ONCE, NULL);
	}

	SSL_CTX_set_alpn_select_cb(ctx, alpn_select_cb, NULL);

	result = malloc(sizeof(BwTlsContext));
	if (result == NULL)
	{
		snprintf(err, errsize, "out of memory");
		goto error;
	}
	/* the callback's userdata is a static of this function: drop it */
	SSL_CTX_set_default_passwd_cb(ctx, NULL);
	SSL_CTX_set_default_passwd_cb_userdata(ctx, NULL);
	result->ctx = ctx;
	result->refcount = 1;
	ERR_clear_error();
	return result;

error:
	SSL_CTX_free(ctx);
	ERR_clear_error();
	return NULL;
}

/*
 * See tls.h.
 */
void
bw_tls_context_release(BwTlsContext *ctx)
{
	if (ctx == NULL)
		return;
	if (--ctx->refcount > 0)
		return;
	SSL_CTX_free(ctx->ctx);
	free(ctx);
}


/* ----------------------------------------------------------------
 *		socket BIO
 *
 * OpenSSL's own socket BIO writes with write(2), which raises SIGPIPE when
 * the peer has gone; ours uses send(2) with MSG_NOSIGNAL and retries EINTR.
 * Like transport.c, it falls back to read/write for fds that are not
 * sockets.
 * ----------------------------------------------------------------
 */

static BIO_METHOD *bio_method = NULL;

static int
bio_sock_read(BIO *b, char *buf, int size)
{
	TlsConn    *tc = BIO_get_data(b);
	ssize_t		n;

	BIO_clear_retry_flags(b);
	if (buf == NULL || size <= 0)
		return 0;
	for (;;)
	{
		n = recv(tc->fd, buf, (size_t) size, 0);
		if (n < 0 && errno == ENOTSOCK)
			n = read(tc->fd, buf, (size_t) size);
		if (n < 0 && errno == EINTR)
			continue;
		break;
	}
	if (n > 0)
		tc->got_bytes = true;
	else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		BIO_set_retry_read(b);
	return (int) n;
}

static int
bio_sock_write(BIO *b, const char *buf, int size)
{
	TlsConn    *tc = BIO_get_data(b);
	ssize_t		n;

	BIO_clear_retry_flags(b);
	if (size <= 0)
		return 0;
	for (;;)
	{
		n = send(tc->fd, buf, (size_t) size, MSG_NOSIGNAL);
		if (n < 0 && errno == ENOTSOCK)
			n = write(tc->fd, buf, (size_t) size);
		if (n < 0 && errno == EINTR)
			continue;
		break;
	}
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		BIO_set_retry_write(b);
	return (int) n;
}

static long
bio_sock_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	switch (cmd)
	{
		case BIO_CTRL_FLUSH:
			/* nothing is buffered here */
			return 1;
		default:
			return 0;
	}
}

static int
bio_sock_create(BIO *b)
{
	BIO_set_init(b, 1);
	BIO_set_data(b, NULL);
	return 1;
}

static BIO *
bio_sock_new(TlsConn *tc)
{
	BIO		   *b;

	if (bio_method == NULL)
	{
		BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK,
									 "biteship_webhook socket");

		if (m == NULL ||
			!BIO_meth_set_read(m, bio_sock_read) ||
			!BIO_meth_set_write(m, bio_sock_write) ||
			!BIO_meth_set_ctrl(m, bio_sock_ctrl) ||
			!BIO_meth_set_create(m, bio_sock_create))
		{
			BIO_meth_free(m);
			return NULL;
		}
		bio_method = m;
	}
	b = BIO_new(bio_method);
	if (b != NULL)
		BIO_set_data(b, tc);
	return b;
}


/* ----------------------------------------------------------------
 *		the transport
 * ----------------------------------------------------------------
 */

/*
 * Why a failed handshake failed, from the first OpenSSL error code.
 */
static int
classify_failure(SSL *ssl, unsigned long ecode)
{
	if (ecode == 0 || ERR_GET_LIB(ecode) != ERR_LIB_SSL)
		return BW_TLS_FAILURE_HANDSHAKE;

	switch (ERR_GET_REASON(ecode))
	{
			/*
			 * The client offered only versions below our minimum (or one
			 * we do not speak at all).  WRONG_VERSION_NUMBER is left out:
			 * it is what random bytes produce.
			 */
		case SSL_R_UNSUPPORTED_PROTOCOL:
		case SSL_R_NO_PROTOCOLS_AVAILABLE:
		case SSL_R_BAD_PROTOCOL_VERSION_NUMBER:
		case SSL_R_UNSUPPORTED_SSL_VERSION:
		case SSL_R_WRONG_SSL_VERSION:
		case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
#ifdef SSL_R_VERSION_TOO_LOW
		case SSL_R_VERSION_TOO_LOW:
#endif
			return BW_TLS_FAILURE_PROTOCOL;

		case SSL_R_CERTIFICATE_VERIFY_FAILED:
			switch (SSL_get_verify_result(ssl))
			{
				case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
				case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
				case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
				case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
				case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
					return BW_TLS_FAILURE_UNKNOWN_CA;
				default:
					return BW_TLS_FAILURE_HANDSHAKE;
			}

		default:
			return BW_TLS_FAILURE_HANDSHAKE;
	}
}

/*
 * Record why the handshake failed; the first reason wins.
 */
static void
set_failure(TlsConn *tc, int failure, const char *detail)
{
	if (tc->failure != FAILURE_UNSET)
		return;
	tc->failure = failure;
	snprintf(tc->detail, sizeof(tc->detail), "%s", detail);
}

/*
 * Could these first bytes be a plain-HTTP request?  A TLS stream starts
 * with a record type (20-24) or, for an SSLv2-style hello, a byte with the
 * high bit set, so an upper-case letter is never TLS; we also want the
 * method token to be made of upper-case letters up to a space.
 */
static bool
looks_like_http(const unsigned char *buf, size_t n)
{
	size_t		i;

	if (n == 0 || buf[0] < 'A' || buf[0] > 'Z')
		return false;
	for (i = 1; i < n; i++)
	{
		if (buf[i] == ' ')
			return true;
		if (buf[i] < 'A' || buf[i] > 'Z')
			return false;
	}
	return true;				/* only part of a method so far */
}

/*
 * Answer a plain-HTTP request with a 400 in clear text: read what the
 * client sent (so that closing does not turn into a reset that eats the
 * answer), write the answer without waiting, and half-close.
 */
static void
answer_plain_http(TlsConn *tc)
{
	char		buf[4096];
	size_t		drained = 0;
	ssize_t		n;

	while (drained < PLAIN_HTTP_DRAIN_MAX)
	{
		n = recv(tc->fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		drained += (size_t) n;
	}
	do
		n = send(tc->fd, plain_http_response, sizeof(plain_http_response) - 1,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	(void) shutdown(tc->fd, SHUT_WR);
}

/*
 * Look at the first bytes without consuming them.  Returns BW_IO_OK to go
 * on with SSL_accept, or the result the handshake should return now.
 */
static BwIoResult
peek_first_bytes(TlsConn *tc)
{
	unsigned char buf[16];
	ssize_t		n;

	do
		n = recv(tc->fd, buf, sizeof(buf), MSG_PEEK | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);

	if (n < 0)
	{
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return BW_IO_WANT_READ;
		if (errno == ENOTSOCK)
		{
			/* not a socket (tests with pipes): nothing to peek at */
			tc->peeked = true;
			return BW_IO_OK;
		}
		/* reset before a single byte arrived: not a failed handshake */
		tc->fatal = true;
		set_failure(tc, BW_TLS_FAILURE_NONE, strerror(errno));
		return BW_IO_ERROR;
	}
	if (n == 0)
	{
		/* connected and closed without a byte (a port probe) */
		tc->fatal = true;
		set_failure(tc, BW_TLS_FAILURE_NONE, "connection closed before the handshake");
		return BW_IO_EOF;
	}

	tc->peeked = true;
	tc->got_bytes = true;
	if (looks_like_http(buf, (size_t) n))
	{
		answer_plain_http(tc);
		tc->fatal = true;
		set_failure(tc, BW_TLS_FAILURE_HANDSHAKE,
					"plain HTTP request sent to the HTTPS port");
		return BW_IO_ERROR;
	}
	return BW_IO_OK;
}

static BwIoResult
tls_handshake(BwTransport *t)
{
	TlsConn    *tc = t->priv;
	int			r;
	int			err;
	int			save_errno;
	unsigned long ecode;
	char		ebuf[64];
	char		detail[160];

	if (tc->fatal)
		return BW_IO_ERROR;
	if (!tc->peeked)
	{
		BwIoResult	pr = peek_first_bytes(tc);

		if (pr != BW_IO_OK)
			return pr;
	}

	ERR_clear_error();
	errno = 0;
	r = SSL_accept(tc->ssl);
	if (r == 1)
		return BW_IO_OK;

	save_errno = errno;
	err = SSL_get_error(tc->ssl, r);
	ecode = ERR_get_error();
	switch (err)
	{
		case SSL_ERROR_WANT_READ:
			ERR_clear_error();
			return BW_IO_WANT_READ;
		case SSL_ERROR_WANT_WRITE:
			ERR_clear_error();
			return BW_IO_WANT_WRITE;
		case SSL_ERROR_SSL:
			if (ERR_GET_LIB(ecode) == ERR_LIB_SSL &&
				ERR_GET_REASON(ecode) == SSL_R_CERTIFICATE_VERIFY_FAILED)
				snprintf(detail, sizeof(detail), "%s: %s",
						 ssl_errmessage(ecode, ebuf, sizeof(ebuf)),
						 X509_verify_cert_error_string(SSL_get_verify_result(tc->ssl)));
			else
				snprintf(detail, sizeof(detail), "%s",
						 ssl_errmessage(ecode, ebuf, sizeof(ebuf)));
			set_failure(tc, classify_failure(tc->ssl, ecode), detail);
			break;
		case SSL_ERROR_SYSCALL:
		case SSL_ERROR_ZERO_RETURN:
			if (ecode != 0)
				snprintf(detail, sizeof(detail), "%s",
						 ssl_errmessage(ecode, ebuf, sizeof(ebuf)));
			else if (r < 0 && save_errno != 0)
				snprintf(detail, sizeof(detail), "%s", strerror(save_errno));
			else
				snprintf(detail, sizeof(detail), "EOF during the handshake");
			set_failure(tc, tc->got_bytes ? BW_TLS_FAILURE_HANDSHAKE :
						BW_TLS_FAILURE_NONE, detail);
			break;
		default:
			snprintf(detail, sizeof(detail), "unexpected SSL error code %d", err);
			set_failure(tc, BW_TLS_FAILURE_HANDSHAKE, detail);
			break;
	}
	ERR_clear_error();
	tc->fatal = true;
	return BW_IO_ERROR;
}

static BwIoResult
tls_read(BwTransport *t, void *buf, size_t len, size_t *nread)
{
	TlsConn    *tc = t->priv;
	int			n;
	int			err;
	int			save_errno;
	unsigned long ecode;

	*nread = 0;
	if (tc->fatal)
		return BW_IO_ERROR;
	ERR_clear_error();
	errno = 0;
	n = SSL_read(tc->ssl, buf, len > INT_MAX ? INT_MAX : (int) len);
	if (n > 0)
	{
		*nread = (size_t) n;
		return BW_IO_OK;
	}
	save_errno = errno;
	err = SSL_get_error(tc->ssl, n);
	ecode = ERR_get_error();
	ERR_clear_error();
	switch (err)
	{
		case SSL_ERROR_WANT_READ:
			return BW_IO_WANT_READ;
		case SSL_ERROR_WANT_WRITE:
			return BW_IO_WANT_WRITE;
		case SSL_ERROR_ZERO_RETURN:
			/* close_notify: orderly end of the stream */
			return BW_IO_EOF;
		case SSL_ERROR_SYSCALL:
			tc->fatal = true;
			/* EOF without close_notify: HTTP framing tells what was lost */
			if (ecode == 0 && (n == 0 || save_errno == 0))
				return BW_IO_EOF;
			return BW_IO_ERROR;
		case SSL_ERROR_SSL:
			tc->fatal = true;
#ifdef SSL_R_UNEXPECTED_EOF_WHILE_READING
			if (ERR_GET_LIB(ecode) == ERR_LIB_SSL &&
				ERR_GET_REASON(ecode) == SSL_R_UNEXPECTED_EOF_WHILE_READING)
				return BW_IO_EOF;
#endif
			return BW_IO_ERROR;
		default:
			tc->fatal = true;
			return BW_IO_ERROR;
	}
}

static BwIoResult
tls_write(BwTransport *t, const void *buf, size_t len, size_t *nwritten)
{
	TlsConn    *tc = t->priv;
	int			n;
	int			err;

	*nwritten = 0;
	if (tc->fatal || tc->close_notify_sent)
		return BW_IO_ERROR;
	ERR_clear_error();
	n = SSL_write(tc->ssl, buf, len > INT_MAX ? INT_MAX : (int) len);
	if (n > 0)
	{
		*nwritten = (size_t) n;
		return BW_IO_OK;
	}
	err = SSL_get_error(tc->ssl, n);
	ERR_clear_error();
	switch (err)
	{
		case SSL_ERROR_WANT_WRITE:
			return BW_IO_WANT_WRITE;
		case SSL_ERROR_WANT_READ:
			return BW_IO_WANT_READ;
		default:
			/* the peer closed (ZERO_RETURN), went away, or worse */
			tc->fatal = true;
			return BW_IO_ERROR;
	}
}

/*
 * Send close_notify once, without waiting for the peer's.
 */
static void
send_close_notify(TlsConn *tc)
{
	if (tc->fatal || tc->close_notify_sent || !SSL_is_init_finished(tc->ssl))
		return;
	tc->close_notify_sent = true;
	ERR_clear_error();
	(void) SSL_shutdown(tc->ssl);
	ERR_clear_error();
}

static BwIoResult
tls_shutdown(BwTransport *t)
{
	TlsConn    *tc = t->priv;

	send_close_notify(tc);
	if (shutdown(t->fd, SHUT_WR) == 0 || errno == ENOTCONN ||
		errno == ENOTSOCK)
		return BW_IO_OK;
	return BW_IO_ERROR;
}

static size_t
tls_pending(BwTransport *t)
{
	TlsConn    *tc = t->priv;
	int			n;

	if (tc->fatal)
		return 0;
	n = SSL_pending(tc->ssl);
	return n > 0 ? (size_t) n : 0;
}

static void
tls_close(BwTransport *t)
{
	TlsConn    *tc = t->priv;

	if (tc != NULL)
	{
		send_close_notify(tc);
		SSL_free(tc->ssl);
		bw_tls_context_release(tc->ctx);
		free(tc);
	}
	if (t->fd >= 0)
		close(t->fd);
	free(t);
}

/*
 * See tls.h.  The fd must already be non-blocking; on failure (NULL) it is
 * left open for the caller, as with bw_transport_plain_new.
 */
BwTransport *
bw_transport_tls_new(int fd, BwTlsContext *ctx)
{
	BwTransport *t;
	TlsConn    *tc;
	BIO		   *bio;

	if (ctx == NULL)
		return NULL;
	t = calloc(1, sizeof(BwTransport));
	tc = calloc(1, sizeof(TlsConn));
	if (t == NULL || tc == NULL)
		goto error;
	tc->fd = fd;
	tc->failure = FAILURE_UNSET;

	ERR_clear_error();
	tc->ssl = SSL_new(ctx->ctx);	/* takes its own SSL_CTX reference */
	if (tc->ssl == NULL)
		goto error;
	bio = bio_sock_new(tc);
	if (bio == NULL)
		goto error;
	SSL_set_bio(tc->ssl, bio, bio); /* the SSL owns the BIO */
	SSL_set_accept_state(tc->ssl);

	tc->ctx = ctx;
	ctx->refcount++;
	t->ops = &tls_ops;
	t->fd = fd;
	t->handshake_done = false;
	t->priv = tc;
	return t;

error:
	ERR_clear_error();
	if (tc != NULL)
		SSL_free(tc->ssl);
	free(tc);
	free(t);
	return NULL;
}

/*
 * See tls.h.  A handshake that failed knows why; one that never finished
 * (the connection timed out or was dropped) is a failure only if the
 * client sent something.
 */
int
bw_tls_failure(const BwTransport *t)
{
	const TlsConn *tc;

	if (!bw_transport_is_tls(t))
		return BW_TLS_FAILURE_NONE;
	tc = t->priv;
	if (tc->failure != FAILURE_UNSET)
		return tc->failure;
	if (t->handshake_done || SSL_is_init_finished(tc->ssl))
		return BW_TLS_FAILURE_NONE;
	return tc->got_bytes ? BW_TLS_FAILURE_HANDSHAKE : BW_TLS_FAILURE_NONE;
}

/*
 * See tls.h.
 */
const char *
bw_tls_failure_detail(const BwTransport *t)
{
	const TlsConn *tc;

	if (!bw_transport_is_tls(t))
		return "";
	tc = t->priv;
	if (tc->failure != FAILURE_UNSET)
		return tc->detail;
	if (t->handshake_done || SSL_is_init_finished(tc->ssl))
		return "";
	return tc->got_bytes ? "handshake not completed" : "no handshake bytes received";
}

/*
 * See tls.h.
 */
const char *
bw_tls_version(const BwTransport *t)
{
	const TlsConn *tc;

	if (!bw_transport_is_tls(t))
		return NULL;
	tc = t->priv;
	if (!SSL_is_init_finished(tc->ssl))
		return NULL;
	return SSL_get_version(tc->ssl);
}

/*
 * See tls.h.
 */
bool
bw_transport_is_tls(const BwTransport *t)
{
	return t != NULL && t->ops == &tls_ops;
}
