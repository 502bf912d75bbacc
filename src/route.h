/*-------------------------------------------------------------------------
 *
 * route.h
 *	  Pure C decisions of the listener that need no database: what a
 *	  request is (health, metrics, a webhook path, or nothing), whether its
 *	  body is worth keeping, whether a header carries a credential, and the
 *	  constant-time check of a signature header against a webhook's
 *	  secrets.
 *
 * No backend calls, so that the fuzzer and unit tests drive these with the
 * HTTP layer, without a server.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BW_ROUTE_H
#define BW_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BW_DIGEST_LEN 32

typedef enum BwRouteKind
{
	BW_ROUTE_HEALTHZ,
	BW_ROUTE_METRICS,
	BW_ROUTE_WEBHOOK,			/* a path in the list of webhook paths */
	BW_ROUTE_UNKNOWN
} BwRouteKind;

/*
 * The webhook paths the listener knows, sorted by strcmp (byte order).
 * Owned by the caller.
 */
typedef struct BwPathList
{
	char	  **paths;
	int			npaths;
} BwPathList;

/* Sort a path list in place (for bw_route_find). */
extern void bw_path_list_sort(BwPathList *list);

/* What a request path is. */
extern BwRouteKind bw_route_classify(const BwPathList *list, const char *path);

/*
 * Does a request need its body kept?  Only a POST (method is http_parser's
 * enum) to a webhook path does; everything else is answered without it.
 */
extern bool bw_route_wants_body(const BwPathList *list, int method,
								const char *path);

/*
 * Is a header a credential that must never reach the events log?  The
 * webhook's own signature header (signature_key, may be NULL), the usual
 * credential headers, and any header whose name says it carries a secret
 * (contains "auth", "token", "secret", "signature", "password", "api-key"
 * or "apikey", case-insensitively), so that a signature sent to a webhook
 * that expects none is not kept either.
 */
extern bool bw_header_is_secret(const char *name, const char *signature_key);

/*
 * Check a signature header value against the SHA-256 digests of a
 * webhook's secrets (ndigests * BW_DIGEST_LEN bytes).  Every digest is
 * compared, in constant time, so that neither a secret nor which one
 * matched leaks through timing.  Returns the index of the first match, or
 * -1.
 */
extern int	bw_verify_secret(const char *value, const uint8_t *digests,
							 int ndigests);

/* SHA-256 with OpenSSL; false on failure. */
extern bool bw_sha256_raw(const void *data, size_t len, uint8_t *digest);

#endif							/* BW_ROUTE_H */
