/*-------------------------------------------------------------------------
 *
 * test_route.c
 *	  Unit tests of the listener's pure decisions (src/route.c): routing,
 *	  which bodies are kept, which headers are credentials, and the
 *	  signature check.
 *
 *	make test/unit/test_route && test/unit/test_route
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <string.h>

#include <http_parser.h>

#include "route.h"

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

int
main(void)
{
	char	   *paths[] = {"/biteship/test", "/biteship/live", "/a"};
	BwPathList	list = {paths, 3};
	BwPathList	empty = {NULL, 0};
	uint8_t		digests[3 * BW_DIGEST_LEN];

	bw_path_list_sort(&list);
	CHECK(strcmp(list.paths[0], "/a") == 0);

	CHECK(bw_route_classify(&list, "/healthz") == BW_ROUTE_HEALTHZ);
	CHECK(bw_route_classify(&list, "/metrics") == BW_ROUTE_METRICS);
	CHECK(bw_route_classify(&list, "/biteship/live") == BW_ROUTE_WEBHOOK);
	CHECK(bw_route_classify(&list, "/biteship/live/") == BW_ROUTE_UNKNOWN);
	CHECK(bw_route_classify(&list, "/biteship") == BW_ROUTE_UNKNOWN);
	CHECK(bw_route_classify(&empty, "/biteship/live") == BW_ROUTE_UNKNOWN);
	CHECK(bw_route_classify(NULL, "/a") == BW_ROUTE_UNKNOWN);
	CHECK(bw_route_classify(&list, NULL) == BW_ROUTE_UNKNOWN);

	CHECK(bw_route_wants_body(&list, HTTP_POST, "/biteship/test"));
	CHECK(!bw_route_wants_body(&list, HTTP_PUT, "/biteship/test"));
	CHECK(!bw_route_wants_body(&list, HTTP_GET, "/biteship/test"));
	CHECK(!bw_route_wants_body(&list, HTTP_POST, "/metrics"));
	CHECK(!bw_route_wants_body(&list, HTTP_POST, "/nowhere"));
	CHECK(!bw_route_wants_body(&empty, HTTP_POST, "/a"));

	CHECK(bw_header_is_secret("X-Biteship-Signature", "x-biteship-signature"));
	CHECK(bw_header_is_secret("x-my-key", "X-My-Key"));
	CHECK(bw_header_is_secret("Authorization", NULL));
	CHECK(bw_header_is_secret("proxy-authorization", NULL));
	CHECK(bw_header_is_secret("Cookie", NULL));
	CHECK(bw_header_is_secret("X-Api-Key", NULL));
	CHECK(bw_header_is_secret("x-biteship-signature", NULL));
	CHECK(bw_header_is_secret("X-Webhook-Secret", NULL));
	CHECK(bw_header_is_secret("X-Access-Token", NULL));
	CHECK(bw_header_is_secret("apikey", NULL));
	CHECK(!bw_header_is_secret("Content-Type", NULL));
	CHECK(!bw_header_is_secret("User-Agent", "x-sig"));
	CHECK(!bw_header_is_secret("X-Forwarded-For", NULL));
	CHECK(!bw_header_is_secret(NULL, NULL));
	/* the words match anywhere, in any case, overlapping a false start */
	CHECK(bw_header_is_secret("X-AUTH", NULL));
	CHECK(bw_header_is_secret("x-aauth-id", NULL));
	CHECK(bw_header_is_secret("X-Session-COOKIE", NULL));
	CHECK(bw_header_is_secret("x-sec-secret", NULL));
	CHECK(!bw_header_is_secret("X-Aut", NULL));
	CHECK(!bw_header_is_secret("X-Toke", NULL));
	CHECK(!bw_header_is_secret("", NULL));

	CHECK(bw_sha256_raw("first", 5, digests));
	CHECK(bw_sha256_raw("second", 6, digests + BW_DIGEST_LEN));
	CHECK(bw_sha256_raw("second", 6, digests + 2 * BW_DIGEST_LEN));
	CHECK(bw_verify_secret("first", digests, 3) == 0);
	CHECK(bw_verify_secret("second", digests, 3) == 1);
	CHECK(bw_verify_secret("third", digests, 3) == -1);
	CHECK(bw_verify_secret("", digests, 3) == -1);
	CHECK(bw_verify_secret("first", digests, 0) == -1);
	CHECK(bw_verify_secret(NULL, digests, 3) == -1);
	{
		/* the SHA-256 test vector of "abc" */
		static const uint8_t abc[BW_DIGEST_LEN] = {
			0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde,
			0x5d, 0xae, 0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c,
			0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad
		};

		CHECK(bw_verify_secret("abc", abc, 1) == 0);
	}

	printf("%d passed, %d failed\n", npassed, nfailed);
	return nfailed == 0 ? 0 : 1;
}
