/*-------------------------------------------------------------------------
 *
 * test_signing.c
 *	  Unit tests of the Standard Webhooks signatures (src/signing.c), with
 *	  the test vectors of the specification's reference libraries.
 *
 *	make test/unit/test_signing && test/unit/test_signing
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <string.h>

#include "signing.h"

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

static void
check_vector(const char *secret, const char *id, long long ts, const char *body,
			 const char *expected)
{
	BwSigningKey key;
	const char *err = NULL;
	char		sig[BW_SIGNATURE_SIZE];

	CHECK(bw_signing_key_parse(secret, &key, &err));
	CHECK(bw_sign(&key, id, ts, body, strlen(body), sig, sizeof(sig)));
	CHECK(strcmp(sig, expected) == 0);
	if (strcmp(sig, expected) != 0)
		fprintf(stderr, "  got %s\n  expected %s\n", sig, expected);
}

int
main(void)
{
	BwSigningKey key;
	const char *err;
	char		buf[256];
	unsigned char raw[128];
	long		n;

	/* the two vectors of the specification's libraries */
	check_vector("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
				 "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
				 "{\"test\": 2432232314}",
				 "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
	check_vector("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
				 "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553,
				 "{\"email\":\"test@example.com\",\"username\":\"test_user\"}",
				 "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");

	/* the key is the decoded bytes */
	CHECK(bw_signing_key_parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &key, &err));
	CHECK(key.len == 24);

	/* secrets that are refused, each with a reason */
	err = NULL;
	CHECK(!bw_signing_key_parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &key, &err) && err != NULL);
	err = NULL;
	CHECK(!bw_signing_key_parse("whsec_", &key, &err) && err != NULL);
	err = NULL;
	CHECK(!bw_signing_key_parse("whsec_c2hvcnQ=", &key, &err) && err != NULL);	/* 5 bytes */
	err = NULL;
	CHECK(!bw_signing_key_parse("whsec_not*base64*at*all*but*long*enough", &key, &err) && err != NULL);
	err = NULL;
	CHECK(!bw_signing_key_parse(NULL, &key, &err) && err != NULL);
	{
		/* 65 bytes is too long */
		unsigned char big[65];
		char		s[200];

		memset(big, 7, sizeof(big));
		memcpy(s, "whsec_", 6);
		bw_base64_encode(big, sizeof(big), s + 6, sizeof(s) - 6);
		CHECK(!bw_signing_key_parse(s, &key, &err));
		bw_base64_encode(big, 64, s + 6, sizeof(s) - 6);
		CHECK(bw_signing_key_parse(s, &key, &err) && key.len == 64);
	}

	/* base64 round trips, with and without padding */
	CHECK(bw_base64_encode((const unsigned char *) "ab", 2, buf, sizeof(buf)) == 4);
	CHECK(strcmp(buf, "YWI=") == 0);
	n = bw_base64_decode("YWI=", 4, raw, sizeof(raw));
	CHECK(n == 2 && memcmp(raw, "ab", 2) == 0);
	n = bw_base64_decode("YWI", 3, raw, sizeof(raw));
	CHECK(n == 2 && memcmp(raw, "ab", 2) == 0);
	CHECK(bw_base64_decode("YWJ=", 4, raw, sizeof(raw)) == -1);	/* non-canonical */
	CHECK(bw_base64_decode("Y", 1, raw, sizeof(raw)) == -1);
	CHECK(bw_base64_decode("YW=I", 4, raw, sizeof(raw)) == -1);
	CHECK(bw_base64_decode("YWI===", 6, raw, sizeof(raw)) == -1);
	CHECK(bw_base64_decode("YWJj", 4, raw, 2) == -1);	/* does not fit */
	CHECK(bw_base64_encode((const unsigned char *) "abc", 3, buf, 4) == 0);

	/* a generated secret parses back to the same bytes */
	{
		unsigned char rnd[32];
		char		secret[BW_SECRET_SIZE];

		for (int i = 0; i < 32; i++)
			rnd[i] = (unsigned char) (i * 37 + 11);
		CHECK(bw_signing_secret_format(rnd, sizeof(rnd), secret, sizeof(secret)));
		CHECK(strncmp(secret, "whsec_", 6) == 0);
		CHECK(bw_signing_key_parse(secret, &key, &err) && key.len == 32 &&
			  memcmp(key.key, rnd, 32) == 0);
		CHECK(!bw_signing_secret_format(rnd, 10, secret, sizeof(secret)));
	}

	/* an empty body is signed too */
	{
		char		sig[BW_SIGNATURE_SIZE];

		CHECK(bw_signing_key_parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &key, &err));
		CHECK(bw_sign(&key, "msg_1", 1, "", 0, sig, sizeof(sig)));
		CHECK(strncmp(sig, "v1,", 3) == 0 && strlen(sig) == 47);
		CHECK(!bw_sign(&key, "msg_1", 1, "", 0, sig, 10));
	}

	printf("%d passed, %d failed\n", npassed, nfailed);
	return nfailed == 0 ? 0 : 1;
}
