/*-------------------------------------------------------------------------
 *
 * test_biteship_api.c
 *	  Unit tests of the pure C Biteship API helpers (src/biteship_api.c):
 *	  the recorded answers of test/data/api/, hostile JSON, the meaning of
 *	  answers, key prefixes and pacing.  Run from the repository root.
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "biteship_api.h"

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

#define STREQ(a, b) ((a) != NULL && strcmp((a), (b)) == 0)

static char *
slurp(const char *path, size_t *len)
{
	FILE	   *f = fopen(path, "rb");
	char	   *buf;
	long		n;

	if (f == NULL)
	{
		fprintf(stderr, "cannot open %s\n", path);
		exit(2);
	}
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t) n + 1);
	if (fread(buf, 1, (size_t) n, f) != (size_t) n)
		exit(2);
	buf[n] = '\0';
	fclose(f);
	*len = (size_t) n;
	return buf;
}

static bool
parse(const char *s, BwApiOrder *o)
{
	char		err[128];

	return bw_api_parse_order(s, strlen(s), o, err, sizeof(err));
}

static void
test_fixture_in_transit(void)
{
	size_t		len;
	char	   *body = slurp("test/data/api/order_dropping_off.json", &len);
	BwApiOrder	o;
	char		err[128];

	CHECK(bw_api_parse_order(body, len, &o, err, sizeof(err)));
	CHECK(o.success == 1);
	CHECK(STREQ(o.object, "order"));
	CHECK(STREQ(o.id, "67cd3f0a8e2b1c0012a4f9d1"));
	CHECK(STREQ(o.status, "dropping_off"));
	CHECK(STREQ(o.price, "19750"));
	CHECK(STREQ(o.courier_tracking_id, "67cd3f0a8e2b1c0012a4f9d4"));
	CHECK(STREQ(o.courier_waybill_id, "0114392500012345"));
	CHECK(STREQ(o.courier_company, "jne"));
	CHECK(STREQ(o.courier_type, "reg"));
	CHECK(o.courier_driver_name == NULL);
	CHECK(STREQ(o.shipment_fee, "18000"));
	CHECK(STREQ(o.insurance_fee, "1750"));
	CHECK(STREQ(o.cash_on_delivery_fee, "0"));
	CHECK(STREQ(o.proof_of_delivery_fee, "0"));
	CHECK(o.nhistory == 5);
	if (o.nhistory == 5)
	{
		CHECK(STREQ(o.history[0].status, "confirmed"));
		CHECK(STREQ(o.history[0].updated_at, "2025-03-10T09:15:22+07:00"));
		CHECK(STREQ(o.history[4].status, "dropping_off"));
		CHECK(STREQ(o.history[4].note, "Item is on the way to customer."));
		CHECK(STREQ(o.history[4].service_type, "reg"));
	}
	CHECK(o.nbad == 0);
	CHECK(bw_api_classify(200, BW_TRANSPORT_OK, &o) == BW_API_OK);
	bw_api_order_free(&o);
	free(body);
}

static void
test_fixture_instant(void)
{
	size_t		len;
	char	   *body = slurp("test/data/api/order_delivered_instant.json", &len);
	BwApiOrder	o;
	char		err[128];

	CHECK(bw_api_parse_order(body, len, &o, err, sizeof(err)));
	CHECK(STREQ(o.status, "delivered"));
	CHECK(o.courier_driver_name != NULL);
	CHECK(o.courier_driver_phone != NULL);
	CHECK(o.courier_driver_plate_number != NULL);
	CHECK(o.nhistory > 0);
	CHECK(bw_api_classify(200, BW_TRANSPORT_OK, &o) == BW_API_OK);
	bw_api_order_free(&o);
	free(body);
}

static void
test_errors(void)
{
	static const struct
	{
		const char *file;
		long		status;
		BwApiResult want;
	}			cases[] = {
		{"test/data/api/error_order_not_found.json", 400, BW_API_NOT_FOUND},
		{"test/data/api/error_order_not_found.json", 404, BW_API_NOT_FOUND},
		{"test/data/api/error_invalid_key.json", 400, BW_API_KEY_REFUSED},
		{"test/data/api/error_missing_key.json", 401, BW_API_NO_KEY},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
	{
		size_t		len;
		char	   *body = slurp(cases[i].file, &len);
		BwApiOrder	o;
		char		err[128];

		CHECK(bw_api_parse_order(body, len, &o, err, sizeof(err)));
		CHECK(o.success == 0);
		CHECK(o.have_code);
		CHECK(o.error != NULL);
		CHECK(bw_api_classify(cases[i].status, BW_TRANSPORT_OK, &o) == cases[i].want);
		bw_api_order_free(&o);
		free(body);
	}

	CHECK(bw_api_classify(429, BW_TRANSPORT_OK, NULL) == BW_API_RATE_LIMITED);
	CHECK(bw_api_classify(500, BW_TRANSPORT_OK, NULL) == BW_API_SERVER_ERROR);
	CHECK(bw_api_classify(503, BW_TRANSPORT_OK, NULL) == BW_API_SERVER_ERROR);
	CHECK(bw_api_classify(0, BW_TRANSPORT_RETRYABLE, NULL) == BW_API_NETWORK_ERROR);
	CHECK(bw_api_classify(404, BW_TRANSPORT_OK, NULL) == BW_API_NOT_FOUND);
	CHECK(bw_api_classify(401, BW_TRANSPORT_OK, NULL) == BW_API_NO_KEY);
	CHECK(bw_api_classify(418, BW_TRANSPORT_OK, NULL) == BW_API_CLIENT_ERROR);
	CHECK(bw_api_classify(408, BW_TRANSPORT_OK, NULL) == BW_API_SERVER_ERROR);
	CHECK(bw_api_classify(425, BW_TRANSPORT_OK, NULL) == BW_API_SERVER_ERROR);
	CHECK(bw_api_classify(302, BW_TRANSPORT_OK, NULL) == BW_API_CLIENT_ERROR);
	CHECK(bw_api_classify(200, BW_TRANSPORT_OK, NULL) == BW_API_BAD_ANSWER);
	CHECK(bw_api_result_refuses_order(BW_API_NOT_FOUND));
	CHECK(!bw_api_result_refuses_order(BW_API_SERVER_ERROR));
	CHECK(bw_api_result_refuses_key(BW_API_KEY_REFUSED));
	CHECK(bw_api_result_refuses_key(BW_API_NO_KEY));
	CHECK(!bw_api_result_refuses_key(BW_API_RATE_LIMITED));
	CHECK(STREQ(bw_api_result_name(BW_API_RATE_LIMITED), "rate_limited"));
	CHECK(STREQ(bw_api_result_name(BW_API_NRESULTS), "unknown"));

	{
		BwApiOrder	o;

		/* a 200 that is not an order */
		CHECK(parse("{\"success\":true,\"object\":\"tracking\",\"id\":\"x\"}", &o));
		CHECK(bw_api_classify(200, BW_TRANSPORT_OK, &o) == BW_API_BAD_ANSWER);
		bw_api_order_free(&o);
		CHECK(parse("{}", &o));
		CHECK(bw_api_classify(200, BW_TRANSPORT_OK, &o) == BW_API_BAD_ANSWER);
		bw_api_order_free(&o);
		/* an unknown code with a 400 */
		CHECK(parse("{\"success\":false,\"code\":40099999,\"error\":\"x\"}", &o));
		CHECK(bw_api_classify(400, BW_TRANSPORT_OK, &o) == BW_API_CLIENT_ERROR);
		bw_api_order_free(&o);
	}
}

static void
test_strings_and_types(void)
{
	BwApiOrder	o;

	CHECK(parse("{\"id\":\"a\\u00e9\\ud83d\\ude00\\n\\\"\",\"status\":\"picked\"}", &o));
	CHECK(STREQ(o.id, "a\xc3\xa9\xf0\x9f\x98\x80\n\""));
	bw_api_order_free(&o);

	/* wrong types are ignored and counted, numbers kept as lexemes */
	CHECK(parse("{\"id\":{\"x\":1},\"status\":[1],\"price\":-1.5e3,"
				"\"courier\":{\"waybill_id\":123,\"history\":{\"a\":1}},"
				"\"code\":1.5}", &o));
	CHECK(o.id == NULL);
	CHECK(o.status == NULL);
	CHECK(STREQ(o.price, "-1.5e3"));
	CHECK(STREQ(o.courier_waybill_id, "123"));
	CHECK(o.nhistory == 0);
	CHECK(!o.have_code);
	CHECK(o.nbad == 3);
	bw_api_order_free(&o);

	/* history entries that are not objects are counted */
	CHECK(parse("{\"courier\":{\"history\":[1,{\"status\":\"x\"},null]}}", &o));
	CHECK(o.nhistory == 1);
	CHECK(o.nbad == 2);
	bw_api_order_free(&o);

	/* the last of duplicate keys wins, as in jsonb */
	CHECK(parse("{\"status\":\"a\",\"status\":\"b\"}", &o));
	CHECK(STREQ(o.status, "b"));
	bw_api_order_free(&o);

	/* keys and values of other objects are only validated */
	CHECK(parse("{\"items\":[{\"status\":\"x\",\"deep\":[[[]]]}],\"status\":null}", &o));
	CHECK(o.status == NULL);
	bw_api_order_free(&o);
}

static void
test_refused(void)
{
	static const char *const bad[] = {
		"", "   ", "[]", "null", "\"x\"", "{", "{\"a\"}", "{\"a\":}", "{\"a\":1,}",
		"{\"a\":01}", "{\"a\":1.}", "{\"a\":.5}", "{\"a\":+1}", "{\"a\":1e}",
		"{\"a\":tru}", "{\"a\":\"\\x\"}", "{\"a\":\"\\u12\"}", "{\"a\":\"\\u0000\"}",
		"{\"a\":\"\\udc00\"}", "{\"a\":\"\\ud800\"}", "{\"a\":\"\\ud800\\u0041\"}",
		"{\"a\":\"\x01\"}", "{\"a\":\"\xff\"}", "{\"a\":\"\xc0\xaf\"}",
		"{\"a\":\"\xed\xa0\x80\"}", "{\"a\":\"\xf4\x90\x80\x80\"}", "{\"a\":\"\xe2\x82\"}",
		"{} x", "{}{}", "\xef\xbb\xbf{}", "{\"a\":\"unterminated}",
		"{\"a\":[1 2]}", "{\"a\" 1}", "{'a':1}",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
	{
		BwApiOrder	o;
		char		err[128];
		bool		ok = bw_api_parse_order(bad[i], strlen(bad[i]), &o, err, sizeof(err));

		if (ok)
			fprintf(stderr, "accepted: %s\n", bad[i]);
		CHECK(!ok);
		CHECK(err[0] != '\0');
		CHECK(o.arena == NULL);
	}

	/* nesting is bounded */
	{
		char		deep[200];
		BwApiOrder	o;
		char		err[128];
		int			n = 0;

		deep[n++] = '{';
		deep[n++] = '"';
		deep[n++] = 'a';
		deep[n++] = '"';
		deep[n++] = ':';
		for (int i = 0; i < 40; i++)
			deep[n++] = '[';
		for (int i = 0; i < 40; i++)
			deep[n++] = ']';
		deep[n++] = '}';
		CHECK(!bw_api_parse_order(deep, (size_t) n, &o, err, sizeof(err)));
		CHECK(strstr(err, "deep") != NULL);
	}

	/* a NUL byte inside the body is not JSON */
	{
		BwApiOrder	o;
		char		err[128];

		CHECK(!bw_api_parse_order("{\"a\":\"x\0\"}", 9, &o, err, sizeof(err)));
	}
}

static void
test_history_growth(void)
{
	/* more entries than the first allocation, and past the cap */
	size_t		cap = 64 * 1200 + 64;
	char	   *s = malloc(cap);
	size_t		n = 0;
	BwApiOrder	o;
	char		err[128];

	n += (size_t) sprintf(s + n, "{\"courier\":{\"history\":[");
	for (int i = 0; i < 1100; i++)
		n += (size_t) sprintf(s + n, "%s{\"status\":\"s%d\",\"note\":\"n\"}", i ? "," : "", i);
	n += (size_t) sprintf(s + n, "]}}");
	CHECK(bw_api_parse_order(s, n, &o, err, sizeof(err)));
	CHECK(o.nhistory == 1000);
	CHECK(o.nbad == 100);
	CHECK(STREQ(o.history[0].status, "s0"));
	CHECK(STREQ(o.history[999].status, "s999"));
	bw_api_order_free(&o);
	free(s);
}

static void
test_ids_keys_pacing(void)
{
	CHECK(bw_api_order_id_ok("67cd3f0a8e2b1c0012a4f9d1"));
	CHECK(bw_api_order_id_ok("A_b-9"));
	CHECK(!bw_api_order_id_ok(""));
	CHECK(!bw_api_order_id_ok(NULL));
	CHECK(!bw_api_order_id_ok("../x"));
	CHECK(!bw_api_order_id_ok("a/b"));
	CHECK(!bw_api_order_id_ok("a?b"));
	CHECK(!bw_api_order_id_ok("a%2e"));
	CHECK(!bw_api_order_id_ok("a b"));
	CHECK(!bw_api_order_id_ok("0123456789012345678901234567890123456789012345678901234567890123456789"));

	CHECK(bw_api_key_prefix_matches("live", "biteship_live.abc"));
	CHECK(bw_api_key_prefix_matches("test", "biteship_test.abc"));
	CHECK(!bw_api_key_prefix_matches("live", "biteship_test.abc"));
	CHECK(!bw_api_key_prefix_matches("test", "abc"));
	CHECK(!bw_api_key_prefix_matches("staging", "biteship_test.abc"));

	/* pacing: never more than the limit in any one second */
	{
		int64_t		next = 0;
		int64_t		interval = bw_api_pace_interval(5);
		int64_t		slots[50];
		int64_t		now = 1000000;

		CHECK(interval > 200000 && interval < 210000);
		CHECK(bw_api_pace_interval(10) == 103000);
		for (int i = 0; i < 50; i++)
		{
			slots[i] = bw_api_pace_take(&next, now, interval);
			/* callers come early and late */
			now += (i % 3 == 0) ? 0 : 150000;
		}
		for (int i = 0; i + 5 < 50; i++)
			CHECK(slots[i + 5] - slots[i] >= 1000000);
		for (int i = 1; i < 50; i++)
			CHECK(slots[i] >= slots[i - 1] + interval);
		/* after an idle time the next slot is now, without a burst debt */
		now = slots[49] + 10 * 1000000;
		CHECK(bw_api_pace_take(&next, now, interval) == now);
		CHECK(bw_api_pace_interval(0) == 1030000);
	}
}

int
main(void)
{
	test_fixture_in_transit();
	test_fixture_instant();
	test_errors();
	test_strings_and_types();
	test_refused();
	test_history_growth();
	test_ids_keys_pacing();
	printf("test_biteship_api: %d passed, %d failed\n", passed, failed);
	return failed == 0 ? 0 : 1;
}
