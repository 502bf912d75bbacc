/*-------------------------------------------------------------------------
 *
 * tls.h
 *	  TLS for the listener with OpenSSL: server contexts that can be swapped
 *	  on reload, and the TLS transport.
 *
 * No backend calls, like http.c and transport.c, so that the TLS code can be
 * unit-tested and fuzzed without a server.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BW_TLS_H
#define BW_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "transport.h"

#define BW_TLS_VERSION_1_2	0
#define BW_TLS_VERSION_1_3	1

/* reasons a handshake failed, for the listener's counters */
#define BW_TLS_FAILURE_NONE			(-1)
#define BW_TLS_FAILURE_HANDSHAKE	0
#define BW_TLS_FAILURE_PROTOCOL		1
#define BW_TLS_FAILURE_UNKNOWN_CA	2

typedef struct BwTlsConfig
{
	const char *cert_file;		/* PEM, full chain */
	const char *key_file;		/* PEM; refused if group/world accessible */
	const char *ca_file;		/* PEM; empty or NULL: no client certs */
	const char *ciphers;		/* TLS 1.2 cipher list */
	int			min_version;	/* BW_TLS_VERSION_* */
} BwTlsConfig;

/* A reference-counted server context. */
typedef struct BwTlsContext BwTlsContext;

/*
 * Build a context from the configuration.  Returns NULL with a message in
 * err on any problem (missing file, bad key permissions, key not matching
 * the certificate, ...).
 */
extern BwTlsContext *bw_tls_context_new(const BwTlsConfig *cfg, char *err,
										size_t errsize);

/* Drop one reference; NULL is fine.  Connections hold their own. */
extern void bw_tls_context_release(BwTlsContext *ctx);

/* A TLS transport on an accepted non-blocking socket; NULL on failure. */
extern BwTransport *bw_transport_tls_new(int fd, BwTlsContext *ctx);

/* Why the handshake of a TLS transport failed, BW_TLS_FAILURE_*. */
extern int	bw_tls_failure(const BwTransport *t);

/*
 * Why it failed, as text (an OpenSSL reason, "plain HTTP request sent to
 * the HTTPS port", ...), for logs and tests; "" when nothing failed.
 */
extern const char *bw_tls_failure_detail(const BwTransport *t);

/* Negotiated protocol ("TLSv1.3", ...) once the handshake is done, or NULL. */
extern const char *bw_tls_version(const BwTransport *t);

/* Is this transport a TLS one? */
extern bool bw_transport_is_tls(const BwTransport *t);

#endif							/* BW_TLS_H */
