/*-------------------------------------------------------------------------
 *
 * fuzz_api.c
 *	  libFuzzer target for the pure C Biteship API helpers
 *	  (src/biteship_api.c): arbitrary bytes as an answer of
 *	  GET /v1/orders/{id}, as an order id and as an API key.
 *
 * Build with "make fuzz" (see test/fuzz/README.md), or by hand from the
 * repository root:
 *
 *	clang-14 -g -O1 -fsanitize=fuzzer,address,undefined \
 *		-fno-sanitize-recover=undefined -Isrc \
 *		test/fuzz/fuzz_api.c src/biteship_api.c -o test/fuzz/fuzz_api
 *	test/fuzz/fuzz_api -max_len=65536 test/fuzz/corpus/api
 *
 * The input is copied into a buffer of its exact size (no terminating
 * NUL), so that a read past the end shows up under ASan.
 *
 * Checked (abort() on failure): a parse that fails leaves nothing behind
 * (no arena, every field NULL) and says why; a parse that succeeds gives
 * NUL-free, NUL-terminated strings that are valid UTF-8, at most 1000
 * history entries, and the same result when run twice; every answer
 * classifies to a known result for every status; an order id accepted for
 * a URL has only URL-safe characters; pacing never hands out slots closer
 * than the interval.
 *
 *-------------------------------------------------------------------------
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "biteship_api.h"

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "check failed: %s\n", #c); abort(); } } while (0)

static void
check_utf8(const char *s)
{
	const unsigned char *p = (const unsigned char *) s;

	while (*p)
	{
		int			n;

		if (*p < 0x80)
			n = 1;
		else if (*p >= 0xC2 && *p <= 0xDF)
			n = 2;
		else if (*p >= 0xE0 && *p <= 0xEF)
			n = 3;
		else if (*p >= 0xF0 && *p <= 0xF4)
			n = 4;
		else
			abort();
		for (int i = 1; i < n; i++)
			CHECK((p[i] & 0xC0) == 0x80);
		p += n;
	}
}

static void
check_field(const char *s)
{
	if (s != NULL)
	{
		(void) strlen(s);
		check_utf8(s);
	}
}

static void
check_order(const BwApiOrder *o)
{
	const char *fields[] = {
		o->error, o->object, o->id, o->status, o->price,
		o->courier_tracking_id, o->courier_waybill_id, o->courier_company,
		o->courier_type, o->courier_link, o->courier_driver_name,
		o->courier_driver_phone, o->courier_driver_photo_url,
		o->courier_driver_plate_number, o->shipment_fee, o->insurance_fee,
		o->cash_on_delivery_fee, o->proof_of_delivery_fee
	};

	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		check_field(fields[i]);
	CHECK(o->nhistory >= 0 && o->nhistory <= 1000);
	CHECK(o->success >= -1 && o->success <= 1);
	for (int i = 0; i < o->nhistory; i++)
	{
		check_field(o->history[i].status);
		check_field(o->history[i].note);
		check_field(o->history[i].updated_at);
		check_field(o->history[i].service_type);
	}
}

static int
same(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *buf = malloc(size ? size : 1);
	BwApiOrder	o,
				o2;
	char		err[128];
	bool		ok;
	static const long statuses[] = {0, 200, 201, 204, 301, 400, 401, 403, 404, 418, 429, 500, 503};

	memcpy(buf, data, size);
	ok = bw_api_parse_order(buf, size, &o, err, sizeof(err));
	if (!ok)
	{
		CHECK(o.arena == NULL && o.id == NULL && o.status == NULL && o.nhistory == 0);
		CHECK(err[0] != '\0' && memchr(err, '\0', sizeof(err)) != NULL);
	}
	else
	{
		check_order(&o);
		CHECK(bw_api_parse_order(buf, size, &o2, err, sizeof(err)));
		CHECK(same(o.id, o2.id) && same(o.status, o2.status) && o.nhistory == o2.nhistory &&
			  o.nbad == o2.nbad && o.have_code == o2.have_code &&
			  (!o.have_code || o.code == o2.code));
		bw_api_order_free(&o2);
	}
	for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++)
	{
		BwApiResult r = bw_api_classify(statuses[i], BW_TRANSPORT_OK, ok ? &o : NULL);

		CHECK(r >= 0 && r < BW_API_NRESULTS);
		CHECK(strcmp(bw_api_result_name(r), "unknown") != 0);
	}
	if (ok)
		bw_api_order_free(&o);

	/* the input as an order id and as a key */
	{
		char	   *s = malloc(size + 1);

		memcpy(s, data, size);
		s[size] = '\0';
		if (bw_api_order_id_ok(s))
		{
			CHECK(strlen(s) >= 1 && strlen(s) <= BW_API_ORDER_ID_MAXLEN);
			CHECK(strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") == strlen(s));
		}
		(void) bw_api_key_prefix_matches("live", s);
		(void) bw_api_key_prefix_matches("test", s);
		free(s);
	}

	/* pacing, with the input as the clock's steps */
	{
		int64_t		next = 0,
					now = 0,
					prev = INT64_MIN;
		int64_t		interval = bw_api_pace_interval(size > 0 ? data[0] : 0);

		CHECK(interval > 0);
		for (size_t i = 1; i < size && i < 64; i++)
		{
			int64_t		slot;

			now += (int64_t) data[i] * 10000;
			slot = bw_api_pace_take(&next, now, interval);
			CHECK(slot >= now);
			CHECK(prev == INT64_MIN || slot - prev >= interval);
			prev = slot;
		}
	}
	free(buf);
	return 0;
}
