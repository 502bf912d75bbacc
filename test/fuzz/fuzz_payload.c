/*-------------------------------------------------------------------------
 *
 * fuzz_payload.c
 *	  libFuzzer target for the pure C payload helpers (src/payload.c) and
 *	  the address helpers (src/netaddr.c): arbitrary bytes as bodies,
 *	  statuses, timestamps, numbers, CIDR lists, peers and X-Forwarded-For
 *	  values.
 *
 * Build with "make fuzz" (see test/fuzz/README.md), or by hand from the
 * repository root:
 *
 *	clang-14 -g -O1 -fsanitize=fuzzer,address,undefined \
 *		-fno-sanitize-recover=undefined -Isrc \
 *		test/fuzz/fuzz_payload.c src/payload.c src/netaddr.c \
 *		-o test/fuzz/fuzz_payload
 *	test/fuzz/fuzz_payload -max_len=16384 test/fuzz/corpus/payload
 *
 * The whole input is a request body (installation check, object
 * detection).  The helpers for single values get the whole input and each
 * piece of it between double quotes or newlines, so that a JSON payload
 * from test/data hands them its statuses, timestamps and numbers.  Output
 * buffers are allocated at their exact size, from one byte up, so that an
 * off-by-one shows up under ASan.
 *
 * For the address helpers the input is read as lines: a CIDR list, a peer
 * address, an X-Forwarded-For value (a missing line falls back to the whole
 * input).  The whole input is also walked as an X-Forwarded-For value
 * behind a fixed list of trusted proxies, however long it is.
 *
 * Checked (abort() on failure): outputs are NUL-terminated within their
 * size; a known status normalises to itself; an accepted number is the
 * trimmed input; accepted timestamps fall in years 1970-9999 (give or take
 * the zone offset); bw_timingsafe_equal agrees with memcmp; the client
 * behind proxies is the peer or an address, and the peer when the peer is
 * not trusted; socket addresses print as addresses.
 *
 * test/fuzz/fuzz_payload.c
 *
 *-------------------------------------------------------------------------
 */
#define _GNU_SOURCE				/* memmem */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "netaddr.h"
#include "payload.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond) \
	do { \
		if (!(cond)) \
		{ \
			fprintf(stderr, "fuzz_payload: check failed (line %d): %s\n", \
					__LINE__, #cond); \
			abort(); \
		} \
	} while (0)

/* Values are split into at most this many pieces. */
#define MAX_PIECES	64

/* 1970-01-01 minus 18 hours, and 10000-01-01 plus 18 hours, in usec */
#define USEC_MIN	(-INT64_C(18) * 3600 * 1000000)
#define USEC_MAX	((INT64_C(253402300800) + 18 * 3600) * 1000000)

static BwCidrList trusted;		/* fixed trusted proxies */
static BwCidrList any;			/* every address */

static void
setup(void)
{
	const char *bad = NULL;

	CHECK(bw_cidr_parse("10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, "
						"127.0.0.1, ::1, fd00::/8", &trusted, &bad));
	CHECK(bw_cidr_parse("0.0.0.0/0, ::/0", &any, &bad));
}

/* A copy of s[0..len) in a buffer of exactly len + 1 bytes. */
static char *
cstring(const char *s, size_t len)
{
	char	   *c = malloc(len + 1);

	CHECK(c != NULL);
	memcpy(c, s, len);
	c[len] = '\0';
	return c;
}

/* The helpers for one value (a status, a timestamp, a number). */
static void
value_helpers(const char *s, size_t len)
{
	static const size_t status_sizes[] = {1, 2, 9, BW_STATUS_MAXLEN + 1, 200};
	static const size_t decimal_sizes[] = {1, 2, 8, 41, 64};
	int64_t		usec;

	for (size_t i = 0; i < sizeof(status_sizes) / sizeof(status_sizes[0]); i++)
	{
		size_t		outsize = status_sizes[i];
		char	   *out = malloc(outsize);
		bool		known;

		CHECK(out != NULL);
		known = bw_normalize_status(s, len, out, outsize);
		CHECK(strlen(out) < outsize);
		if (known)
		{
			char		again[BW_STATUS_MAXLEN + 1];

			/* a documented status is its own normal form */
			CHECK(bw_normalize_status(out, strlen(out), again, sizeof(again)));
			CHECK(strcmp(out, again) == 0);
			(void) bw_status_is_final(out);
		}
		free(out);
	}

	if (bw_parse_timestamp(s, len, &usec))
		CHECK(usec >= USEC_MIN && usec < USEC_MAX);

	for (size_t i = 0; i < sizeof(decimal_sizes) / sizeof(decimal_sizes[0]); i++)
	{
		size_t		outsize = decimal_sizes[i];
		char	   *out = malloc(outsize);

		CHECK(out != NULL);
		if (bw_parse_decimal(s, len, out, outsize))
		{
			size_t		n = strlen(out);

			CHECK(n > 0 && n < outsize && n <= 41);
			CHECK(memmem(s, len, out, n) != NULL);
		}
		free(out);
	}
}

/* Is out the peer, as far as an output buffer of outsize bytes holds? */
static bool
is_peer(const char *out, const char *peer, size_t outsize)
{
	size_t		n = strlen(peer);

	if (n > outsize - 1)
		n = outsize - 1;
	return strlen(out) == n && strncmp(out, peer, n) == 0;
}

/* The client address behind proxies, with several output sizes. */
static void
forwarded(const BwCidrList *list, const char *peer, const char *xff)
{
	static const size_t sizes[] = {BW_ADDRSTRLEN, 8, 1};
	char	   *out;

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
	{
		out = malloc(sizes[i]);
		CHECK(out != NULL);
		bw_forwarded_client(list, peer, xff, out, sizes[i]);
		CHECK(strlen(out) < sizes[i]);
		if (i == 0)
		{
			/* hops are shorter than BW_ADDRSTRLEN: never cut short */
			CHECK(is_peer(out, peer, sizes[i]) || bw_cidr_match(&any, out));
			if (!bw_cidr_match(list, peer))
				CHECK(is_peer(out, peer, sizes[i]));
		}
		free(out);
	}
}

static void
address_helpers(const char *s, size_t len)
{
	const char *nl1 = memchr(s, '\n', len);
	const char *nl2 = nl1 != NULL ?
		memchr(nl1 + 1, '\n', len - (size_t) (nl1 + 1 - s)) : NULL;
	char	   *whole = cstring(s, len);
	char	   *spec = cstring(s, nl1 != NULL ? (size_t) (nl1 - s) : len);
	char	   *peer;
	char	   *xff;
	BwCidrList	list;
	const char *bad = NULL;

	if (nl1 != NULL)
		peer = cstring(nl1 + 1, nl2 != NULL ? (size_t) (nl2 - nl1 - 1) :
					   len - (size_t) (nl1 + 1 - s));
	else
		peer = cstring("10.1.2.3", 8);
	if (nl2 != NULL)
		xff = cstring(nl2 + 1, len - (size_t) (nl2 + 1 - s));
	else
		xff = cstring(s, len);

	if (bw_cidr_parse(spec, &list, &bad))
	{
		CHECK(list.n >= 0 && list.n <= BW_MAX_CIDRS);
		for (int i = 0; i < list.n; i++)
			CHECK(list.items[i].prefix >= 0 &&
				  list.items[i].prefix <=
				  (list.items[i].family == AF_INET ? 32 : 128));
		(void) bw_cidr_match(&list, "127.0.0.1");
		(void) bw_cidr_match(&list, "::1");
		(void) bw_cidr_match(&list, peer);
		forwarded(&list, peer, xff);
		forwarded(&list, "127.0.0.1", whole);
	}
	else
		CHECK(bad != NULL && strlen(bad) < 128);

	/* behind the fixed proxies, with the whole input as the header */
	(void) bw_cidr_match(&trusted, whole);
	forwarded(&trusted, "10.1.2.3", whole);
	forwarded(&trusted, "::1", xff);

	free(whole);
	free(spec);
	free(peer);
	free(xff);
}

/* Socket addresses made of input bytes print as addresses. */
static void
sockaddr_helpers(const uint8_t *data, size_t size)
{
	struct sockaddr_in s4;
	struct sockaddr_in6 s6;
	char		out[BW_ADDRSTRLEN];

	if (size < 16)
		return;
	memset(&s4, 0, sizeof(s4));
	s4.sin_family = AF_INET;
	memcpy(&s4.sin_addr, data, 4);
	bw_sockaddr_text((struct sockaddr *) &s4, out, sizeof(out));
	CHECK(bw_cidr_match(&any, out));

	memset(&s6, 0, sizeof(s6));
	s6.sin6_family = AF_INET6;
	memcpy(&s6.sin6_addr, data, 16);
	bw_sockaddr_text((struct sockaddr *) &s6, out, sizeof(out));
	CHECK(bw_cidr_match(&any, out));
	bw_sockaddr_text((struct sockaddr *) &s6, out, 5);
	CHECK(strlen(out) < 5);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool initialised = false;
	const char *s = (const char *) data;
	size_t		start = 0;
	int			pieces = 0;

	if (!initialised)
	{
		setup();
		initialised = true;
	}

	/* the whole input as a body */
	if (bw_body_is_ping(s, size) && memchr(s, '{', size) != NULL)
		CHECK(bw_body_looks_like_object(s, size));
	(void) bw_body_looks_like_object(s, size);
	CHECK(bw_timingsafe_equal(data, data, size));
	CHECK(bw_timingsafe_equal(data, data + size / 2, size / 2) ==
		  (memcmp(data, data + size / 2, size / 2) == 0));

	/* the whole input as one value, then each piece of it */
	value_helpers(s, size);
	for (size_t i = 0; i <= size && pieces < MAX_PIECES; i++)
	{
		if (i == size || s[i] == '"' || s[i] == '\n')
		{
			if (i > start)
			{
				char	   *piece = cstring(s + start, i - start);

				value_helpers(piece, i - start);
				free(piece);
				pieces++;
			}
			start = i + 1;
		}
	}

	address_helpers(s, size);
	sockaddr_helpers(data, size);
	return 0;
}
