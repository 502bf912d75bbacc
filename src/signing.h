/*-------------------------------------------------------------------------
 *
 * signing.h
 *	  Standard Webhooks signatures (specification v1.0.0) for the requests
 *	  the outbox sends: "whsec_" secrets, and the v1 HMAC-SHA256 signature
 *	  of msg_id "." timestamp "." body.
 *
 * Pure C on OpenSSL, no backend calls, unit-tested with the test vectors of
 * the specification's reference libraries.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BW_SIGNING_H
#define BW_SIGNING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BW_SIGNING_KEY_MIN	24	/* decoded bytes */
#define BW_SIGNING_KEY_MAX	64
/* "v1," + base64 of 32 bytes (44) + NUL */
#define BW_SIGNATURE_SIZE	48
/* "whsec_" + base64 of BW_SIGNING_KEY_MAX bytes + NUL */
#define BW_SECRET_SIZE		(6 + 88 + 1)

typedef struct BwSigningKey
{
	unsigned char key[BW_SIGNING_KEY_MAX];
	size_t		len;
} BwSigningKey;

/*
 * Parse a "whsec_<base64>" secret: the HMAC key is the decoded bytes, 24 to
 * 64 of them.  Returns false with *error set (a static message) when the
 * secret is not of that form.
 */
extern bool bw_signing_key_parse(const char *secret, BwSigningKey *key,
								 const char **error);

/*
 * The v1 signature of one attempt: "v1," + base64(HMAC-SHA256(key,
 * msg_id "." timestamp "." body)), NUL-terminated in out (at least
 * BW_SIGNATURE_SIZE bytes).  false on failure.
 */
extern bool bw_sign(const BwSigningKey *key, const char *msg_id,
					int64_t timestamp, const char *body, size_t body_len,
					char *out, size_t outsize);

/*
 * A new secret from len random bytes (24 to 64): "whsec_" + base64.
 * out must hold BW_SECRET_SIZE bytes.
 */
extern bool bw_signing_secret_format(const unsigned char *random, size_t len,
									 char *out, size_t outsize);

/* Standard base64 with padding; returns the encoded length. */
extern size_t bw_base64_encode(const unsigned char *in, size_t len, char *out,
							   size_t outsize);

/*
 * Strict standard base64 (padding optional, no whitespace); returns the
 * decoded length, or -1 when the input is not base64 or does not fit.
 */
extern long bw_base64_decode(const char *in, size_t len, unsigned char *out,
							 size_t outsize);

#endif							/* BW_SIGNING_H */
