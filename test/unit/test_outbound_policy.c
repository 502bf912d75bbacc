/*-------------------------------------------------------------------------
 *
 * test_outbound_policy.c
 *	  Unit tests of src/outbound_policy.c: answer classification, the retry
 *	  schedule, Retry-After, redaction.
 *
 *	make test/unit/test_outbound_policy && test/unit/test_outbound_policy
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "outbound_policy.h"

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
	int64_t		d[BW_MAX_RETRY_STEPS];
	int			n;
	const char *bad;
	int64_t		s;

	/* classification */
	CHECK(bw_outcome_classify(200, BW_TRANSPORT_OK) == BW_OUTCOME_DELIVERED);
	CHECK(bw_outcome_classify(204, BW_TRANSPORT_OK) == BW_OUTCOME_DELIVERED);
	CHECK(bw_outcome_classify(299, BW_TRANSPORT_OK) == BW_OUTCOME_DELIVERED);
	CHECK(bw_outcome_classify(301, BW_TRANSPORT_OK) == BW_OUTCOME_RETRY);
	CHECK(bw_outcome_classify(308, BW_TRANSPORT_OK) == BW_OUTCOME_RETRY);
	CHECK(bw_outcome_classify(400, BW_TRANSPORT_OK) == BW_OUTCOME_DEAD);
	CHECK(bw_outcome_classify(401, BW_TRANSPORT_OK) == BW_OUTCOME_DEAD);
	CHECK(bw_outcome_classify(404, BW_TRANSPORT_OK) == BW_OUTCOME_DEAD);
	CHECK(bw_outcome_classify(408, BW_TRANSPORT_OK) == BW_OUTCOME_RETRY);
	CHECK(bw_outcome_classify(410, BW_TRANSPORT_OK) == BW_OUTCOME_DISABLE);
	CHECK(bw_outcome_classify(425, BW_TRANSPORT_OK) == BW_OUTCOME_RETRY);
	CHECK(bw_outcome_classify(429, BW_TRANSPORT_OK) == BW_OUTCOME_RETRY);
	CHECK(bw_outcome_classify(500, BW_TRANSPORT_OK) == BW_OUTCOME_RETRY);
	CHECK(bw_outcome_classify(502, BW_TRANSPORT_OK) == BW_OUTCOME_RETRY);
	CHECK(bw_outcome_classify(503, BW_TRANSPORT_OK) == BW_OUTCOME_RETRY);
	CHECK(bw_outcome_classify(599, BW_TRANSPORT_OK) == BW_OUTCOME_RETRY);
	CHECK(bw_outcome_classify(0, BW_TRANSPORT_RETRYABLE) == BW_OUTCOME_RETRY);
	CHECK(bw_outcome_classify(0, BW_TRANSPORT_FATAL) == BW_OUTCOME_DEAD);
	CHECK(strcmp(bw_status_class(201), "2xx") == 0);
	CHECK(strcmp(bw_status_class(302), "3xx") == 0);
	CHECK(strcmp(bw_status_class(429), "4xx") == 0);
	CHECK(strcmp(bw_status_class(503), "5xx") == 0);
	CHECK(strcmp(bw_status_class(0), "error") == 0);

	/* the Standard Webhooks example schedule */
	CHECK(bw_retry_schedule_parse("0, 5s, 5min, 30min, 2h, 5h, 10h, 14h, 20h, 24h", d, &n, &bad));
	CHECK(n == 10);
	CHECK(d[0] == 0 && d[1] == 5000 && d[2] == 300000 && d[3] == 1800000);
	CHECK(d[4] == 7200000 && d[9] == 86400000);
	CHECK(bw_retry_schedule_parse("100ms,1.5s,2d", d, &n, &bad) && n == 3 &&
		  d[0] == 100 && d[1] == 1500 && d[2] == 2 * 86400000LL);
	CHECK(!bw_retry_schedule_parse("5s, soon", d, &n, &bad) && strcmp(bad, "soon") == 0);
	CHECK(!bw_retry_schedule_parse("5", d, &n, &bad));	/* a unit is needed */
	CHECK(!bw_retry_schedule_parse("-5s", d, &n, &bad));
	CHECK(!bw_retry_schedule_parse("8d", d, &n, &bad));	/* over a week */
	CHECK(!bw_retry_schedule_parse("", d, &n, &bad));
	CHECK(!bw_retry_schedule_parse("1s,,2s", d, &n, &bad));
	CHECK(!bw_retry_schedule_parse("5sx", d, &n, &bad));

	/* delays, with jitter of +-20% */
	CHECK(bw_retry_schedule_parse("0, 10s, 100s", d, &n, &bad));
	CHECK(bw_retry_delay_ms(d, n, 1, 0.5) == 10000);
	CHECK(bw_retry_delay_ms(d, n, 1, 0.0) == 8000);
	CHECK(bw_retry_delay_ms(d, n, 1, 0.999999) >= 11999);
	CHECK(bw_retry_delay_ms(d, n, 2, 0.5) == 100000);
	CHECK(bw_retry_delay_ms(d, n, 7, 0.5) == 100000);	/* past the end: the last */
	CHECK(bw_retry_delay_ms(d, n, 0, 0.5) == 0);

	/* Retry-After */
	CHECK(bw_parse_retry_after("120", 0, &s) && s == 120);
	CHECK(bw_parse_retry_after(" 0 ", 0, &s) && s == 0);
	CHECK(!bw_parse_retry_after("-1", 0, &s));
	CHECK(!bw_parse_retry_after("soon", 0, &s));
	CHECK(!bw_parse_retry_after("12abc", 0, &s));
	CHECK(!bw_parse_retry_after(NULL, 0, &s));
	/* 784111777 = Sun, 06 Nov 1994 08:49:37 GMT */
	CHECK(bw_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784111777 - 30, &s) && s == 30);
	CHECK(bw_parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", 784111777 - 30, &s) && s == 30);
	CHECK(bw_parse_retry_after("Sun Nov  6 08:49:37 1994", 784111777 - 30, &s) && s == 30);
	CHECK(bw_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784111777 + 100, &s) && s == 0);
	CHECK(!bw_parse_retry_after("Sun, 06 Nov 1994 08:49:37 CET", 0, &s));
	CHECK(!bw_parse_retry_after("Sun, 36 Nov 1994 08:49:37 GMT", 0, &s));
	CHECK(!bw_parse_retry_after("Sun, 06 Foo 1994 08:49:37 GMT", 0, &s));

	/* redaction: every copy, the longer of two overlapping, none at all */
	{
		const char *sec[] = {"tok_12345678", NULL, "", "Bearer tok_12345678"};
		const char *in = "echo: Bearer tok_12345678 and tok_12345678tok_12345678.";
		size_t		olen;
		char	   *r = bw_redact(in, strlen(in), sec, 4, &olen);

		CHECK(r != NULL && strcmp(r, "echo: [redacted] and [redacted][redacted].") == 0);
		CHECK(r != NULL && olen == strlen(r));
		free(r);
		r = bw_redact("tok_1234567", 11, sec, 4, &olen);	/* a prefix only */
		CHECK(r != NULL && strcmp(r, "tok_1234567") == 0 && olen == 11);
		free(r);
		r = bw_redact("", 0, sec, 4, &olen);
		CHECK(r != NULL && r[0] == '\0' && olen == 0);
		free(r);
		r = bw_redact("abc", 3, NULL, 0, &olen);
		CHECK(r != NULL && strcmp(r, "abc") == 0);
		free(r);
	}
	{
		/* a secret shorter than the mark: the output grows, within its room */
		const char *sec[] = {"a"};
		size_t		olen;
		char	   *r = bw_redact("aaaa", 4, sec, 1, &olen);

		CHECK(r != NULL && olen == 40 && strncmp(r, "[redacted][redacted]", 20) == 0);
		free(r);
	}

	printf("%d passed, %d failed\n", npassed, nfailed);
	return nfailed == 0 ? 0 : 1;
}
