/*-------------------------------------------------------------------------
 *
 * biteship_api.h
 *	  Pure C knowledge of Biteship's REST API: which order ids may be put in
 *	  a URL, the parse of GET /v1/orders/{id} answers and of its error
 *	  answers, what an answer means for the reconciler, the key prefixes,
 *	  and the even pacing of requests under a rate limit.
 *
 * Nothing here calls into the backend (no palloc, no ereport), so the
 * parser can be unit-tested and fuzzed on its own.  Memory comes from
 * malloc and is released with bw_api_order_free().
 *
 *-------------------------------------------------------------------------
 */
#ifndef BW_BITESHIP_API_H
#define BW_BITESHIP_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "outbound_policy.h"

/* Longest order id we put in a URL. */
#define BW_API_ORDER_ID_MAXLEN	64

/* Nesting deeper than this is refused as not an answer of Biteship's. */
#define BW_API_MAX_DEPTH		32

/* One entry of courier.history[]. */
typedef struct BwApiHistory
{
	const char *status;			/* as sent (not normalised); NULL if absent */
	const char *note;
	const char *updated_at;		/* as sent */
	const char *service_type;
} BwApiHistory;

/*
 * What we use of an answer.  Strings are NUL-free UTF-8 as the answer
 * had them (a field holding "\u0000", an object or an array is treated as
 * absent and counted in nbad); numbers are kept as their JSON lexemes.
 * Every field may be NULL.
 */
typedef struct BwApiOrder
{
	int			success;		/* 1, 0, or -1 when absent */
	bool		have_code;
	int64_t		code;			/* Biteship's error code */
	const char *error;			/* "error" of an error answer */
	const char *object;			/* "order" */
	const char *id;
	const char *status;
	const char *price;			/* total, a number lexeme */

	const char *courier_tracking_id;
	const char *courier_waybill_id;
	const char *courier_company;
	const char *courier_type;
	const char *courier_link;
	const char *courier_driver_name;
	const char *courier_driver_phone;
	const char *courier_driver_photo_url;
	const char *courier_driver_plate_number;
	const char *shipment_fee;
	const char *insurance_fee;
	const char *cash_on_delivery_fee;
	const char *proof_of_delivery_fee;

	BwApiHistory *history;		/* in the answer's order (oldest first) */
	int			nhistory;
	int			nbad;			/* fields of the wrong type, ignored */

	void	   *arena;			/* private */
} BwApiOrder;

/* What one API request came to. */
typedef enum BwApiResult
{
	BW_API_OK,					/* 200 with an order */
	BW_API_NOT_FOUND,			/* 40002057, or 404 */
	BW_API_KEY_REFUSED,			/* 40000001: a wrong key */
	BW_API_NO_KEY,				/* 40101001: no key, or 401/403 */
	BW_API_RATE_LIMITED,		/* 429 */
	BW_API_SERVER_ERROR,		/* 5xx, 408, 409, 425: try again later */
	BW_API_NETWORK_ERROR,		/* no HTTP answer: timeout, refused, TLS */
	BW_API_BAD_ANSWER,			/* 2xx that is not an order, or not JSON */
	BW_API_CLIENT_ERROR,		/* any other 4xx */
	BW_API_NRESULTS
} BwApiResult;

/*
 * Is this an order id we put in a URL: 1 to BW_API_ORDER_ID_MAXLEN ASCII
 * letters, digits, '-' or '_'?  (Biteship's are 24 hex digits.)
 */
extern bool bw_api_order_id_ok(const char *id);

/*
 * Parse an answer body.  Returns true and fills *out (release it with
 * bw_api_order_free) when the body is one JSON object; false with a
 * message in err when it is not valid JSON, not an object, nested deeper
 * than BW_API_MAX_DEPTH, or not valid UTF-8.  *out is zeroed either way.
 */
extern bool bw_api_parse_order(const char *body, size_t len, BwApiOrder *out,
							   char *err, size_t errsize);

extern void bw_api_order_free(BwApiOrder *o);

/*
 * What an answer means.  parsed is NULL when the body was not JSON (or
 * there was no body).
 */
extern BwApiResult bw_api_classify(long http_status, BwTransportError terr,
								   const BwApiOrder *parsed);

/* "ok", "not_found", "key_refused", "no_key", "rate_limited", ... */
extern const char *bw_api_result_name(BwApiResult r);

/*
 * Is the result final for this order (retrying cannot change it:
 * not_found), for the whole environment's key (key_refused, no_key), or
 * worth a retry later (rate_limited, server_error, network_error,
 * bad_answer, client_error)?
 */
extern bool bw_api_result_refuses_order(BwApiResult r);
extern bool bw_api_result_refuses_key(BwApiResult r);

/*
 * Does an API key's prefix match its environment ('live' wants
 * "biteship_live.", 'test' wants "biteship_test.")?
 */
extern bool bw_api_key_prefix_matches(const char *environment, const char *key);

/*
 * Even pacing under a rate limit, shared by every process that calls the
 * API: *next_slot is the earliest time the next request may start.  Takes
 * a slot no earlier than now and moves *next_slot one interval past it;
 * returns the slot, which the caller waits for.  Times in microseconds.
 * Requests spaced by at least interval can never put more than the limit
 * into any one second.
 */
extern int64_t bw_api_pace_take(int64_t *next_slot, int64_t now, int64_t interval);

/* The interval of a rate limit of per_second requests (> 0), with margin. */
extern int64_t bw_api_pace_interval(int per_second);

#endif							/* BW_BITESHIP_API_H */
