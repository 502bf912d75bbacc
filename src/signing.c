/*-------------------------------------------------------------------------
 *
 * signing.c
 *	  Standard Webhooks signatures: secrets, base64, HMAC-SHA256.
 *
 * See signing.h.  The MAC is computed with OpenSSL's EVP_MAC interface over
 * the three parts of the signed content without copying them together.
 *
 *-------------------------------------------------------------------------
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "signing.h"

static const char b64chars[] =
"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t
bw_base64_encode(const unsigned char *in, size_t len, char *out, size_t outsize)
{
	size_t		n = 0;
	size_t		need = ((len + 2) / 3) * 4 + 1;

	if (outsize < need)
	{
		if (outsize > 0)
			out[0] = '\0';
		return 0;
	}
	for (size_t i = 0; i < len; i += 3)
	{
		uint32_t	v = (uint32_t) in[i] << 16;

		if (i + 1 < len)
			v |= (uint32_t) in[i + 1] << 8;
		if (i + 2 < len)
			v |= in[i + 2];
		out[n++] = b64chars[(v >> 18) & 63];
		out[n++] = b64chars[(v >> 12) & 63];
		out[n++] = i + 1 < len ? b64chars[(v >> 6) & 63] : '=';
		out[n++] = i + 2 < len ? b64chars[v & 63] : '=';
	}
	out[n] = '\0';
	return n;
}

static int
b64value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

long
bw_base64_decode(const char *in, size_t len, unsigned char *out, size_t outsize)
{
	size_t		n = 0;
	uint32_t	acc = 0;
	int			bits = 0;
	size_t		pad = 0;

	/* padding only at the end, at most two, and only to a multiple of 4 */
	while (len > 0 && in[len - 1] == '=')
	{
		len--;
		pad++;
	}
	if (pad > 2 || (pad > 0 && (len + pad) % 4 != 0) || len % 4 == 1)
		return -1;
	for (size_t i = 0; i < len; i++)
	{
		int			v = b64value(in[i]);

		if (v < 0)
			return -1;
		acc = (acc << 6) | (uint32_t) v;
		bits += 6;
		if (bits >= 8)
		{
			bits -= 8;
			if (n >= outsize)
				return -1;
			out[n++] = (unsigned char) ((acc >> bits) & 0xff);
		}
	}
	/* leftover bits must be zero (canonical encoding) */
	if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
		return -1;
	return (long) n;
}

bool
bw_signing_key_parse(const char *secret, BwSigningKey *key, const char **error)
{
	long		n;
	size_t		len;

	if (secret == NULL || strncmp(secret, "whsec_", 6) != 0)
	{
		*error = "a signing secret starts with \"whsec_\"";
		return false;
	}
	len = strlen(secret + 6);
	if (len == 0)
	{
		*error = "the signing secret is empty after \"whsec_\"";
		return false;
	}
	n = bw_base64_decode(secret + 6, len, key->key, sizeof(key->key));
	if (n < 0)
	{
		*error = "the signing secret after \"whsec_\" is not base64 of at most 64 bytes";
		return false;
	}
	if (n < BW_SIGNING_KEY_MIN)
	{
		*error = "the signing secret decodes to fewer than 24 bytes";
		return false;
	}
	key->len = (size_t) n;
	return true;
}

bool
bw_signing_secret_format(const unsigned char *random, size_t len, char *out,
						 size_t outsize)
{
	if (len < BW_SIGNING_KEY_MIN || len > BW_SIGNING_KEY_MAX ||
		outsize < BW_SECRET_SIZE)
		return false;
	memcpy(out, "whsec_", 6);
	return bw_base64_encode(random, len, out + 6, outsize - 6) > 0;
}

bool
bw_sign(const BwSigningKey *key, const char *msg_id, int64_t timestamp,
		const char *body, size_t body_len, char *out, size_t outsize)
{
	static EVP_MAC *mac = NULL;
	EVP_MAC_CTX *ctx;
	OSSL_PARAM	params[2];
	char		ts[32];
	unsigned char md[32];
	size_t		mdlen = 0;
	bool		ok;

	if (outsize < BW_SIGNATURE_SIZE || key->len == 0)
		return false;
	if (mac == NULL)
	{
		mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
		if (mac == NULL)
			return false;
	}
	ctx = EVP_MAC_CTX_new(mac);
	if (ctx == NULL)
		return false;
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
												 (char *) "SHA256", 0);
	params[1] = OSSL_PARAM_construct_end();
	snprintf(ts, sizeof(ts), "%" PRId64, timestamp);
	ok = EVP_MAC_init(ctx, key->key, key->len, params) == 1 &&
		EVP_MAC_update(ctx, (const unsigned char *) msg_id, strlen(msg_id)) == 1 &&
		EVP_MAC_update(ctx, (const unsigned char *) ".", 1) == 1 &&
		EVP_MAC_update(ctx, (const unsigned char *) ts, strlen(ts)) == 1 &&
		EVP_MAC_update(ctx, (const unsigned char *) ".", 1) == 1 &&
		(body_len == 0 ||
		 EVP_MAC_update(ctx, (const unsigned char *) body, body_len) == 1) &&
		EVP_MAC_final(ctx, md, &mdlen, sizeof(md)) == 1 && mdlen == 32;
	EVP_MAC_CTX_free(ctx);
	if (!ok)
		return false;
	memcpy(out, "v1,", 3);
	return bw_base64_encode(md, mdlen, out + 3, outsize - 3) == 44;
}
