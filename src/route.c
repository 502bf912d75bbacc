/*-------------------------------------------------------------------------
 *
 * route.c
 *	  Pure C decisions of the listener: routing, which bodies to keep,
 *	  which headers are credentials, and the constant-time signature check.
 *
 * See route.h.  No backend calls: the fuzzer drives this file together
 * with the HTTP layer.
 *
 *-------------------------------------------------------------------------
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <http_parser.h>
#include <openssl/evp.h>

#include "payload.h"
#include "route.h"

static int
path_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

void
bw_path_list_sort(BwPathList *list)
{
	if (list->npaths > 1)
		qsort(list->paths, list->npaths, sizeof(char *), path_cmp);
}

static bool
is_webhook_path(const BwPathList *list, const char *path)
{
	if (list == NULL || list->npaths == 0 || path == NULL)
		return false;
	return bsearch(&path, list->paths, list->npaths, sizeof(char *),
				   path_cmp) != NULL;
}

BwRouteKind
bw_route_classify(const BwPathList *list, const char *path)
{
	if (path == NULL)
		return BW_ROUTE_UNKNOWN;
	if (strcmp(path, "/healthz") == 0)
		return BW_ROUTE_HEALTHZ;
	if (strcmp(path, "/metrics") == 0)
		return BW_ROUTE_METRICS;
	if (is_webhook_path(list, path))
		return BW_ROUTE_WEBHOOK;
	return BW_ROUTE_UNKNOWN;
}

bool
bw_route_wants_body(const BwPathList *list, int method, const char *path)
{
	return method == HTTP_POST && is_webhook_path(list, path);
}

static inline char
ascii_lower(char c)
{
	return (c >= 'A' && c <= 'Z') ? (char) (c + ('a' - 'A')) : c;
}

/*
 * ASCII case-insensitive substring search; the needle is lower case.  It runs
 * for every header of every stored delivery, so it compares one character
 * before it compares the rest, and it does not depend on the locale.
 */
static bool
contains_ci(const char *haystack, const char *needle)
{
	for (const char *p = haystack; *p != '\0'; p++)
	{
		size_t		i;

		if (ascii_lower(*p) != needle[0])
			continue;
		for (i = 1; needle[i] != '\0' && ascii_lower(p[i]) == needle[i]; i++)
			;
		if (needle[i] == '\0')
			return true;
	}
	return false;
}

bool
bw_header_is_secret(const char *name, const char *signature_key)
{
	static const char *const words[] = {
		"auth", "token", "secret", "signature", "password", "api-key",
		"apikey", "cookie"
	};

	if (name == NULL)
		return false;
	if (signature_key != NULL && strcasecmp(name, signature_key) == 0)
		return true;
	if (strcasecmp(name, "x-api-key") == 0)
		return true;
	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
	{
		if (contains_ci(name, words[i]))
			return true;
	}
	return false;
}

bool
bw_sha256_raw(const void *data, size_t len, uint8_t *digest)
{
	unsigned int dlen = BW_DIGEST_LEN;

	return EVP_Digest(data, len, digest, &dlen, EVP_sha256(), NULL) == 1 &&
		dlen == BW_DIGEST_LEN;
}

int
bw_verify_secret(const char *value, const uint8_t *digests, int ndigests)
{
	uint8_t		digest[BW_DIGEST_LEN];
	int			matched = -1;

	if (value == NULL || !bw_sha256_raw(value, strlen(value), digest))
		return -1;
	/* no early exit: every secret is compared */
	for (int i = 0; i < ndigests; i++)
	{
		bool		eq = bw_timingsafe_equal(digest, digests + BW_DIGEST_LEN * i,
											 BW_DIGEST_LEN);

		if (eq && matched < 0)
			matched = i;
	}
	return matched;
}
