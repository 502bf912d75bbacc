/*-------------------------------------------------------------------------
 *
 * outbound_policy.h
 *	  What an answer to an outbound request means, and when to try again:
 *	  the classification of HTTP statuses and transport errors, the retry
 *	  schedule (a list of delays, with jitter), and Retry-After; and what
 *	  of an answer may be kept: copies of our credentials are taken out.
 *
 * Pure C, no backend calls; unit-tested.  The rules follow the Standard
 * Webhooks sender guidance: only 2xx is success, 3xx is a failure and is
 * never followed, 410 disables the endpoint, 408, 425, 429 and 5xx and
 * network errors are retried, other 4xx are final.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BW_OUTBOUND_POLICY_H
#define BW_OUTBOUND_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BW_MAX_RETRY_STEPS 32

typedef enum BwOutcome
{
	BW_OUTCOME_DELIVERED,		/* 2xx */
	BW_OUTCOME_RETRY,			/* try again later */
	BW_OUTCOME_DEAD,			/* final: never again on its own */
	BW_OUTCOME_DISABLE			/* 410: the endpoint is gone */
} BwOutcome;

/* Transport-level results of an attempt (no HTTP status). */
typedef enum BwTransportError
{
	BW_TRANSPORT_OK,			/* an HTTP status was received */
	BW_TRANSPORT_RETRYABLE,		/* timeout, refused, reset, DNS, TLS, ... */
	BW_TRANSPORT_FATAL			/* the request can never be made (bad URL) */
} BwTransportError;

/* What an attempt's result means. */
extern BwOutcome bw_outcome_classify(long http_status, BwTransportError terr);

/* "2xx", "3xx", "4xx", "5xx" or "error": the label of a status class. */
extern const char *bw_status_class(long http_status);

/*
 * Parse a retry schedule: comma-separated delays with a unit (ms, s, min,
 * h, d), e.g. "0, 5s, 5min, 30min, 2h". Delay i is waited before attempt
 * i + 1 (the first is counted from when the message was queued). At most
 * BW_MAX_RETRY_STEPS entries, each at most a week.  false with *bad set to
 * the offending item (a static copy) on error.
 */
extern bool bw_retry_schedule_parse(const char *spec, int64_t *delays_ms,
									int *n, const char **bad);

/*
 * The delay before the next attempt, after `attempts` attempts have been
 * made (>= 1): schedule[attempts], or the last entry past the end, times a
 * jitter factor between 0.8 and 1.2 (jitter in [0, 1)).
 */
extern int64_t bw_retry_delay_ms(const int64_t *delays_ms, int n, int attempts,
								 double jitter);

/*
 * Parse a Retry-After value: delta-seconds, or an HTTP-date in any of the
 * three formats of RFC 9110 (IMF-fixdate, RFC 850, asctime).  *delay_s is
 * the wait from now_unix (never negative).  false when the value is
 * neither.
 */
extern bool bw_parse_retry_after(const char *value, int64_t now_unix,
								 int64_t *delay_s);

/*
 * The text with every copy of any of the secrets replaced by "[redacted]",
 * NUL-terminated, in a malloc'd buffer (the caller frees it), its length
 * in *outlen; NULL when out of memory.  Empty or NULL secrets are skipped;
 * where two overlap, the longer one is taken out.  For what a receiver
 * answers, before it is stored: it may echo the credentials it was sent.
 */
extern char *bw_redact(const char *text, size_t len,
					   const char *const *secrets, int nsecrets,
					   size_t *outlen);

#endif							/* BW_OUTBOUND_POLICY_H */
