/*-------------------------------------------------------------------------
 *
 * payload.h
 *	  Pure C helpers for Biteship payload values: status normalisation,
 *	  timestamps, numbers sent as strings, and installation-check bodies.
 *
 * Nothing here calls into the backend, so the helpers can be unit-tested
 * and fuzzed on their own.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BW_PAYLOAD_H
#define BW_PAYLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest status we keep; anything longer is kept verbatim but truncated. */
#define BW_STATUS_MAXLEN 64

/*
 * Is the body an installation check: empty, only whitespace, or an empty
 * JSON object (with any whitespace around or inside)?
 */
extern bool bw_body_is_ping(const char *body, size_t len);

/*
 * Does the body, after leading whitespace, start like a JSON object?  The
 * full parse happens later; this only gives a cheap, precise 400 for bodies
 * that are arrays, scalars or not JSON at all.
 */
extern bool bw_body_looks_like_object(const char *body, size_t len);

/*
 * Normalise a status as Biteship sends it.  camelCase spellings of the
 * documented statuses ("droppingOff") become snake_case ("dropping_off"),
 * and so do upper-case ones; a status we do not know is copied verbatim.
 * Writes a NUL-terminated string of at most outsize - 1 bytes into out and
 * returns true when the status is one of the documented ones.
 */
extern bool bw_normalize_status(const char *in, size_t len, char *out, size_t outsize);

/* Is this (normalised) status final: delivered, returned, cancelled, ...? */
extern bool bw_status_is_final(const char *status);

/*
 * Parse an ISO-8601 timestamp: "2025-11-08T04:06:08.351Z",
 * "2025-11-08T09:00:00+07:00", "2025-11-08 09:00:00+0700", or without a zone
 * (taken as UTC).  Fractions of up to microsecond precision are kept.  On
 * success stores microseconds since 1970-01-01 00:00:00 UTC in *usec.
 */
extern bool bw_parse_timestamp(const char *in, size_t len, int64_t *usec);

/*
 * Validate a decimal number sent as a string ("100000", " 16000.50 ",
 * "-5").  Copies the trimmed number into out (NUL-terminated) and returns
 * true when it is a plain decimal of at most 40 significant characters; no
 * exponents, no thousands separators.
 */
extern bool bw_parse_decimal(const char *in, size_t len, char *out, size_t outsize);

/* Constant-time comparison of two equal-length byte strings. */
extern bool bw_timingsafe_equal(const unsigned char *a, const unsigned char *b, size_t len);

#endif							/* BW_PAYLOAD_H */
