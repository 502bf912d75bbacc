/*-------------------------------------------------------------------------
 *
 * test_netaddr.c
 *	  Unit tests of the address helpers (src/netaddr.c): CIDR lists and the
 *	  client address behind trusted proxies.
 *
 *	make test/unit/test_netaddr && test/unit/test_netaddr
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "netaddr.h"

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

#define CHECK_STR(a, b) \
	do { \
		const char *a_ = (a); \
		const char *b_ = (b); \
		if (strcmp(a_, b_) == 0) \
			npassed++; \
		else \
		{ \
			nfailed++; \
			fprintf(stderr, "FAIL (%s:%d): %s == \"%s\", expected \"%s\"\n", \
					__FILE__, __LINE__, #a, a_, b_); \
		} \
	} while (0)

static void
test_cidr(void)
{
	BwCidrList	l;
	const char *bad = NULL;

	CHECK(bw_cidr_parse("10.0.0.0/8, ::1, 192.168.1.5", &l, &bad));
	CHECK(l.n == 3);
	CHECK(bw_cidr_match(&l, "10.200.3.4"));
	CHECK(!bw_cidr_match(&l, "11.0.0.1"));
	CHECK(bw_cidr_match(&l, "::1"));
	CHECK(bw_cidr_match(&l, "::ffff:10.1.1.1"));
	CHECK(bw_cidr_match(&l, "192.168.1.5"));
	CHECK(!bw_cidr_match(&l, "192.168.1.6"));
	CHECK(!bw_cidr_match(&l, "not-an-address"));
	CHECK(!bw_cidr_parse("10.0.0.0/33", &l, &bad));
	CHECK_STR(bad, "10.0.0.0/33");
	CHECK(!bw_cidr_parse("1.2.3.4, nonsense", &l, &bad));
	CHECK_STR(bad, "nonsense");
	CHECK(bw_cidr_parse("", &l, &bad) && l.n == 0);
	CHECK(bw_cidr_parse("172.16.0.0/12", &l, &bad));
	CHECK(bw_cidr_match(&l, "172.31.255.255"));
	CHECK(!bw_cidr_match(&l, "172.32.0.0"));
}

static void
test_forwarded(void)
{
	BwCidrList	t;
	const char *bad;
	char		out[BW_ADDRSTRLEN];
	char	   *many;
	size_t		len = 0;

	CHECK(bw_cidr_parse("127.0.0.1, 10.0.0.0/8", &t, &bad));

	/* an untrusted peer: its header is ignored */
	bw_forwarded_client(&t, "203.0.113.9", "1.2.3.4", out, sizeof(out));
	CHECK_STR(out, "203.0.113.9");
	/* one trusted proxy */
	bw_forwarded_client(&t, "127.0.0.1", "198.51.100.7", out, sizeof(out));
	CHECK_STR(out, "198.51.100.7");
	/* what the client wrote on the left does not count */
	bw_forwarded_client(&t, "127.0.0.1", "6.6.6.6, 198.51.100.7, 10.1.2.3", out, sizeof(out));
	CHECK_STR(out, "198.51.100.7");
	/* every hop trusted: the leftmost */
	bw_forwarded_client(&t, "127.0.0.1", "10.9.9.9, 10.1.2.3", out, sizeof(out));
	CHECK_STR(out, "10.9.9.9");
	/* garbage stops the walk at the last good hop */
	bw_forwarded_client(&t, "127.0.0.1", "1.1.1.1, junk, 10.1.2.3", out, sizeof(out));
	CHECK_STR(out, "10.1.2.3");
	bw_forwarded_client(&t, "127.0.0.1", "junk", out, sizeof(out));
	CHECK_STR(out, "127.0.0.1");
	bw_forwarded_client(&t, "127.0.0.1", "", out, sizeof(out));
	CHECK_STR(out, "127.0.0.1");
	bw_forwarded_client(&t, "127.0.0.1", " , ", out, sizeof(out));
	CHECK_STR(out, "127.0.0.1");
	bw_forwarded_client(&t, "127.0.0.1", NULL, out, sizeof(out));
	CHECK_STR(out, "127.0.0.1");

	/*
	 * More hops than any fixed table: the client chose the first 100, then
	 * the real client and one trusted proxy follow.  The walk still starts
	 * at the right.
	 */
	many = malloc(100 * 20 + 64);
	for (int i = 0; i < 100; i++)
		len += (size_t) sprintf(many + len, "6.6.6.%d, ", i % 250);
	sprintf(many + len, "198.51.100.7, 10.1.2.3");
	bw_forwarded_client(&t, "127.0.0.1", many, out, sizeof(out));
	CHECK_STR(out, "198.51.100.7");
	free(many);

	/* IPv6 hops */
	CHECK(bw_cidr_parse("::1", &t, &bad));
	bw_forwarded_client(&t, "::1", "2001:db8::5", out, sizeof(out));
	CHECK_STR(out, "2001:db8::5");
}

int
main(void)
{
	test_cidr();
	test_forwarded();
	printf("%d passed, %d failed\n", npassed, nfailed);
	return nfailed == 0 ? 0 : 1;
}
