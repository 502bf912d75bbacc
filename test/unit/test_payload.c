/*-------------------------------------------------------------------------
 *
 * test_payload.c
 *	  Unit tests of the pure C payload helpers (src/payload.c), run without
 *	  a server.
 *
 *-------------------------------------------------------------------------
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "payload.h"

static int	passed = 0;
static int	failed = 0;

#define CHECK(cond) \
	do { \
		if (cond) \
			passed++; \
		else \
		{ \
			failed++; \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
		} \
	} while (0)

static bool
ping(const char *s)
{
	return bw_body_is_ping(s, strlen(s));
}

static void
test_ping(void)
{
	CHECK(ping(""));
	CHECK(ping(" \r\n\t"));
	CHECK(ping("{}"));
	CHECK(ping(" { \n } \n"));
	CHECK(!ping("{ }x"));
	CHECK(!ping("{\"a\":1}"));
	CHECK(!ping("[]"));
	CHECK(!ping("{"));
	CHECK(!ping("}"));
	CHECK(!ping("null"));
	CHECK(bw_body_looks_like_object("  {\"a\":1}", 9));
	CHECK(bw_body_looks_like_object("\xEF\xBB\xBF{}", 5));
	CHECK(!bw_body_looks_like_object("[{}]", 4));
	CHECK(!bw_body_looks_like_object("   ", 3));
}

static const char *
norm(const char *in, bool *known)
{
	static char out[BW_STATUS_MAXLEN + 1];

	*known = bw_normalize_status(in, strlen(in), out, sizeof(out));
	return out;
}

static void
test_status(void)
{
	bool		known;

	CHECK(strcmp(norm("droppingOff", &known), "dropping_off") == 0 && known);
	CHECK(strcmp(norm("pickingUp", &known), "picking_up") == 0 && known);
	CHECK(strcmp(norm("returnInTransit", &known), "return_in_transit") == 0 && known);
	CHECK(strcmp(norm("courierNotFound", &known), "courier_not_found") == 0 && known);
	CHECK(strcmp(norm("onHold", &known), "on_hold") == 0 && known);
	CHECK(strcmp(norm("DELIVERED", &known), "delivered") == 0 && known);
	CHECK(strcmp(norm(" delivered ", &known), "delivered") == 0 && known);
	CHECK(strcmp(norm("picking_up", &known), "picking_up") == 0 && known);
	CHECK(strcmp(norm("someNewStatus", &known), "someNewStatus") == 0 && !known);
	CHECK(strcmp(norm("", &known), "") == 0 && !known);
	/* long unknown statuses are kept, truncated to the buffer */
	{
		char		longstatus[300];

		memset(longstatus, 'A', sizeof(longstatus) - 1);
		longstatus[sizeof(longstatus) - 1] = '\0';
		CHECK(strlen(norm(longstatus, &known)) == BW_STATUS_MAXLEN && !known);
	}
	CHECK(bw_status_is_final("delivered"));
	CHECK(bw_status_is_final("courier_not_found"));
	CHECK(bw_status_is_final("disposed"));
	CHECK(!bw_status_is_final("picked"));
	CHECK(!bw_status_is_final("return_in_transit"));
	CHECK(!bw_status_is_final("unknown"));
}

static bool
ts(const char *in, int64_t *usec)
{
	return bw_parse_timestamp(in, strlen(in), usec);
}

static void
test_timestamp(void)
{
	int64_t		u;

	CHECK(ts("1970-01-01T00:00:00Z", &u) && u == 0);
	CHECK(ts("2025-11-08T04:06:08.351Z", &u) && u == INT64_C(1762574768351000));
	CHECK(ts("2025-11-08T11:06:08.351+07:00", &u) && u == INT64_C(1762574768351000));
	CHECK(ts("2025-11-08T11:06:08.351+0700", &u) && u == INT64_C(1762574768351000));
	CHECK(ts("2025-11-08 04:06:08.351", &u) && u == INT64_C(1762574768351000));
	CHECK(ts("2025-11-08T04:06:08.3519999Z", &u) && u == INT64_C(1762574768351999));
	CHECK(ts("2025-11-08T04:06Z", &u) && u == INT64_C(1762574760000000));
	CHECK(ts("2024-02-29T00:00:00Z", &u));
	CHECK(!ts("2025-02-29T00:00:00Z", &u));
	CHECK(!ts("2025-13-01T00:00:00Z", &u));
	CHECK(!ts("2025-11-08", &u));
	CHECK(!ts("yesterday", &u));
	CHECK(!ts("2025-11-08T04:06:08.Z", &u));
	CHECK(!ts("2025-11-08T04:06:08Zjunk", &u));
	CHECK(!ts("2025-11-08T24:00:00Z", &u));
	CHECK(!ts("2025-11-08T04:06:08+19:00", &u));
	CHECK(!ts("", &u));
}

static bool
dec(const char *in, char *out)
{
	return bw_parse_decimal(in, strlen(in), out, 64);
}

static void
test_decimal(void)
{
	char		out[64];

	CHECK(dec("100000", out) && strcmp(out, "100000") == 0);
	CHECK(dec(" 16000.50 ", out) && strcmp(out, "16000.50") == 0);
	CHECK(dec("-5", out) && strcmp(out, "-5") == 0);
	CHECK(!dec("1e5", out));
	CHECK(!dec("1,000", out));
	CHECK(!dec("abc", out));
	CHECK(!dec("", out));
	CHECK(!dec("-", out));
	CHECK(!dec(".5", out));
	CHECK(!dec("5.", out));
	CHECK(!dec("1.2.3", out));
	CHECK(!dec("NaN", out));
	CHECK(!dec("12345678901234567890123456789012345678901", out));
}

static void
test_timingsafe(void)
{
	CHECK(bw_timingsafe_equal((const unsigned char *) "abcd", (const unsigned char *) "abcd", 4));
	CHECK(!bw_timingsafe_equal((const unsigned char *) "abcd", (const unsigned char *) "abce", 4));
	CHECK(bw_timingsafe_equal((const unsigned char *) "", (const unsigned char *) "", 0));
}

int
main(void)
{
	test_ping();
	test_status();
	test_timestamp();
	test_decimal();
	test_timingsafe();
	printf("test_payload: %d passed, %d failed\n", passed, failed);
	return failed == 0 ? 0 : 1;
}
