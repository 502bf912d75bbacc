/*-------------------------------------------------------------------------
 *
 * biteship_api.c
 *	  Pure C knowledge of Biteship's REST API: order ids in URLs, a strict
 *	  JSON parse of order answers and error answers that keeps only the
 *	  fields reconciliation uses, the meaning of an answer, key prefixes,
 *	  and even pacing under a rate limit.
 *
 * The parser is a single-pass recursive descent over RFC 8259 JSON.  It
 * accepts what PostgreSQL's jsonb input accepts, and refuses what jsonb
 * refuses (invalid UTF-8, lone surrogates, "\u0000"), so that an answer
 * the reconciler applies can always be stored as jsonb too.  Nesting is
 * bounded, every byte is looked at once, and only the fields below are
 * copied, into one malloc'd arena:
 *
 *	  success, code, error, object, id, status, price
 *	  courier.{tracking_id, waybill_id, company, type, link, driver_name,
 *			   driver_phone, driver_photo_url, driver_plate_number,
 *			   shipment_fee, insurance.fee, history[].{status, note,
 *			   updated_at, service_type}}
 *	  destination.{cash_on_delivery.fee, proof_of_delivery.fee}
 *
 *-------------------------------------------------------------------------
 */
#include "biteship_api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_HISTORY		1000

/* a chain of malloc'd blocks, freed together */
typedef struct ArenaBlock
{
	struct ArenaBlock *next;
	size_t		used;
	size_t		size;
	char		data[];
} ArenaBlock;

/* the kind of container a value is parsed into */
typedef enum Kind
{
	K_OTHER,
	K_ROOT,
	K_COURIER,
	K_INSURANCE,
	K_DESTINATION,
	K_COD,
	K_POD,
	K_HISTORY,					/* the array */
	K_HISTORY_ENTRY
} Kind;

/* what a scalar is stored into */
typedef enum Special
{
	S_NONE,
	S_TEXT,						/* *target = copy (strings, numbers) */
	S_SUCCESS,
	S_CODE
} Special;

typedef struct Parser
{
	const char *p;
	const char *end;
	int			depth;
	BwApiOrder *out;
	ArenaBlock *arena;
	int			hcap;
	char	   *err;
	size_t		errsize;
	bool		failed;
} Parser;

static void *
arena_alloc(Parser *P, size_t n)
{
	ArenaBlock *b = P->arena;

	n = (n + 7) & ~(size_t) 7;
	if (b == NULL || b->size - b->used < n)
	{
		size_t		size = n > 4096 ? n : 4096;

		b = malloc(sizeof(ArenaBlock) + size);
		if (b == NULL)
			return NULL;
		b->next = P->arena;
		b->used = 0;
		b->size = size;
		P->arena = b;
	}
	b->used += n;
	return b->data + b->used - n;
}

static bool
fail(Parser *P, const char *msg)
{
	if (!P->failed)
	{
		if (P->errsize > 0)
			snprintf(P->err, P->errsize, "%s", msg);
		P->failed = true;
	}
	return false;
}

static void
skip_ws(Parser *P)
{
	while (P->p < P->end &&
		   (*P->p == ' ' || *P->p == '\t' || *P->p == '\n' || *P->p == '\r'))
		P->p++;
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static bool
read_hex4(Parser *P, unsigned *cp)
{
	unsigned	v = 0;

	if (P->end - P->p < 4)
		return fail(P, "truncated \\u escape");
	for (int i = 0; i < 4; i++)
	{
		int			h = hexval(P->p[i]);

		if (h < 0)
			return fail(P, "invalid \\u escape");
		v = (v << 4) | (unsigned) h;
	}
	P->p += 4;
	*cp = v;
	return true;
}

/* Length of a valid UTF-8 sequence at s (at most avail bytes), or 0. */
static int
utf8_len(const unsigned char *s, size_t avail)
{
	unsigned char c = s[0];
	int			n;
	unsigned	cp;

	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF)
		n = 2, cp = c & 0x1F;
	else if (c >= 0xE0 && c <= 0xEF)
		n = 3, cp = c & 0x0F;
	else if (c >= 0xF0 && c <= 0xF4)
		n = 4, cp = c & 0x07;
	else
		return 0;
	if ((size_t) n > avail)
		return 0;
	for (int i = 1; i < n; i++)
	{
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3F);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
		(cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	return n;
}

static size_t
put_utf8(char *d, unsigned cp)
{
	if (cp < 0x80)
	{
		d[0] = (char) cp;
		return 1;
	}
	if (cp < 0x800)
	{
		d[0] = (char) (0xC0 | (cp >> 6));
		d[1] = (char) (0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000)
	{
		d[0] = (char) (0xE0 | (cp >> 12));
		d[1] = (char) (0x80 | ((cp >> 6) & 0x3F));
		d[2] = (char) (0x80 | (cp & 0x3F));
		return 3;
	}
	d[0] = (char) (0xF0 | (cp >> 18));
	d[1] = (char) (0x80 | ((cp >> 12) & 0x3F));
	d[2] = (char) (0x80 | ((cp >> 6) & 0x3F));
	d[3] = (char) (0x80 | (cp & 0x3F));
	return 4;
}

/*
 * A string, positioned on its opening quote.  With copy, the decoded
 * string is stored in the arena and returned through *outp.  A decoded
 * string is never longer than its escaped form.
 */
static bool
parse_string(Parser *P, const char **outp)
{
	const char *start;
	char	   *dst = NULL;
	size_t		dn = 0;

	P->p++;						/* the quote */
	start = P->p;
	if (outp != NULL)
	{
		const char *q = start;

		/* the raw length bounds the decoded one */
		while (q < P->end && *q != '"')
			q += (*q == '\\' && q + 1 < P->end) ? 2 : 1;
		dst = arena_alloc(P, (size_t) (q - start) + 1);
		if (dst == NULL)
			return fail(P, "out of memory");
	}
	while (P->p < P->end)
	{
		unsigned char c = (unsigned char) *P->p;

		if (c == '"')
		{
			P->p++;
			if (dst != NULL)
			{
				dst[dn] = '\0';
				*outp = dst;
			}
			return true;
		}
		if (c < 0x20)
			return fail(P, "control character in a string");
		if (c == '\\')
		{
			char		e;
			char		tmp[4];
			size_t		tn = 1;

			if (P->end - P->p < 2)
				return fail(P, "truncated escape");
			e = P->p[1];
			P->p += 2;
			switch (e)
			{
				case '"':
				case '\\':
				case '/':
					tmp[0] = e;
					break;
				case 'b':
					tmp[0] = '\b';
					break;
				case 'f':
					tmp[0] = '\f';
					break;
				case 'n':
					tmp[0] = '\n';
					break;
				case 'r':
					tmp[0] = '\r';
					break;
				case 't':
					tmp[0] = '\t';
					break;
				case 'u':
					{
						unsigned	cp;

						if (!read_hex4(P, &cp))
							return false;
						if (cp == 0)
							return fail(P, "\\u0000 in a string");
						if (cp >= 0xDC00 && cp <= 0xDFFF)
							return fail(P, "lone low surrogate");
						if (cp >= 0xD800 && cp <= 0xDBFF)
						{
							unsigned	lo;

							if (P->end - P->p < 2 || P->p[0] != '\\' || P->p[1] != 'u')
								return fail(P, "lone high surrogate");
							P->p += 2;
							if (!read_hex4(P, &lo))
								return false;
							if (lo < 0xDC00 || lo > 0xDFFF)
								return fail(P, "lone high surrogate");
							cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
						}
						tn = put_utf8(tmp, cp);
						break;
					}
				default:
					return fail(P, "invalid escape");
			}
			if (dst != NULL)
			{
				memcpy(dst + dn, tmp, tn);
				dn += tn;
			}
			continue;
		}
		{
			int			n = utf8_len((const unsigned char *) P->p, (size_t) (P->end - P->p));

			if (n == 0)
				return fail(P, "invalid UTF-8");
			if (dst != NULL)
			{
				memcpy(dst + dn, P->p, (size_t) n);
				dn += (size_t) n;
			}
			P->p += n;
		}
	}
	return fail(P, "unterminated string");
}

/* A number, strictly by RFC 8259; returns its lexeme through start/len. */
static bool
parse_number(Parser *P, const char **start, size_t *len)
{
	const char *s = P->p;

	if (P->p < P->end && *P->p == '-')
		P->p++;
	if (P->p >= P->end)
		return fail(P, "truncated number");
	if (*P->p == '0')
		P->p++;
	else if (*P->p >= '1' && *P->p <= '9')
		while (P->p < P->end && *P->p >= '0' && *P->p <= '9')
			P->p++;
	else
		return fail(P, "invalid number");
	if (P->p < P->end && *P->p == '.')
	{
		P->p++;
		if (P->p >= P->end || *P->p < '0' || *P->p > '9')
			return fail(P, "invalid number");
		while (P->p < P->end && *P->p >= '0' && *P->p <= '9')
			P->p++;
	}
	if (P->p < P->end && (*P->p == 'e' || *P->p == 'E'))
	{
		P->p++;
		if (P->p < P->end && (*P->p == '+' || *P->p == '-'))
			P->p++;
		if (P->p >= P->end || *P->p < '0' || *P->p > '9')
			return fail(P, "invalid number");
		while (P->p < P->end && *P->p >= '0' && *P->p <= '9')
			P->p++;
	}
	*start = s;
	*len = (size_t) (P->p - s);
	return true;
}

static bool
literal(Parser *P, const char *word)
{
	size_t		n = strlen(word);

	if ((size_t) (P->end - P->p) < n || memcmp(P->p, word, n) != 0)
		return fail(P, "invalid literal");
	P->p += n;
	return true;
}

static bool parse_value(Parser *P, Kind kind, Special sp, const char **target);

/* Where a key of a container of this kind goes. */
static void
route_key(Parser *P, Kind kind, const char *key, Kind *child, Special *sp,
		  const char ***target, BwApiHistory *entry)
{
	BwApiOrder *o = P->out;

	*child = K_OTHER;
	*sp = S_NONE;
	*target = NULL;

#define TEXT(name, field) \
	if (strcmp(key, name) == 0) { *sp = S_TEXT; *target = &(field); return; }

	switch (kind)
	{
		case K_ROOT:
			if (strcmp(key, "success") == 0)
			{
				*sp = S_SUCCESS;
				return;
			}
			if (strcmp(key, "code") == 0)
			{
				*sp = S_CODE;
				return;
			}
			TEXT("error", o->error);
			TEXT("object", o->object);
			TEXT("id", o->id);
			TEXT("status", o->status);
			TEXT("price", o->price);
			if (strcmp(key, "courier") == 0)
				*child = K_COURIER;
			else if (strcmp(key, "destination") == 0)
				*child = K_DESTINATION;
			return;
		case K_COURIER:
			TEXT("tracking_id", o->courier_tracking_id);
			TEXT("waybill_id", o->courier_waybill_id);
			TEXT("company", o->courier_company);
			TEXT("type", o->courier_type);
			TEXT("link", o->courier_link);
			TEXT("driver_name", o->courier_driver_name);
			TEXT("driver_phone", o->courier_driver_phone);
			TEXT("driver_photo_url", o->courier_driver_photo_url);
			TEXT("driver_plate_number", o->courier_driver_plate_number);
			TEXT("shipment_fee", o->shipment_fee);
			if (strcmp(key, "insurance") == 0)
				*child = K_INSURANCE;
			else if (strcmp(key, "history") == 0)
				*child = K_HISTORY;
			return;
		case K_INSURANCE:
			TEXT("fee", o->insurance_fee);
			return;
		case K_DESTINATION:
			if (strcmp(key, "cash_on_delivery") == 0)
				*child = K_COD;
			else if (strcmp(key, "proof_of_delivery") == 0)
				*child = K_POD;
			return;
		case K_COD:
			TEXT("fee", o->cash_on_delivery_fee);
			return;
		case K_POD:
			TEXT("fee", o->proof_of_delivery_fee);
			return;
		case K_HISTORY_ENTRY:
			if (entry == NULL)
				return;
			TEXT("status", entry->status);
			TEXT("note", entry->note);
			TEXT("updated_at", entry->updated_at);
			TEXT("service_type", entry->service_type);
			return;
		case K_OTHER:
		case K_HISTORY:
			return;
	}
#undef TEXT
}

static bool
parse_object(Parser *P, Kind kind, BwApiHistory *entry)
{
	P->p++;						/* '{' */
	skip_ws(P);
	if (P->p < P->end && *P->p == '}')
	{
		P->p++;
		return true;
	}
	for (;;)
	{
		const char *key = NULL;
		Kind		child;
		Special		sp;
		const char **target;
		const char *val = NULL;

		skip_ws(P);
		if (P->p >= P->end || *P->p != '"')
			return fail(P, "expected a key");
		/* keys are copied only where they matter */
		if (kind == K_OTHER)
		{
			if (!parse_string(P, NULL))
				return false;
		}
		else if (!parse_string(P, &key))
			return false;
		skip_ws(P);
		if (P->p >= P->end || *P->p != ':')
			return fail(P, "expected ':'");
		P->p++;
		skip_ws(P);
		if (kind == K_OTHER)
		{
			child = K_OTHER;
			sp = S_NONE;
			target = NULL;
		}
		else
			route_key(P, kind, key, &child, &sp, &target, entry);
		if (sp == S_TEXT)
		{
			if (!parse_value(P, child, sp, &val))
				return false;
			*target = val;
		}
		else if (!parse_value(P, child, sp, NULL))
			return false;
		skip_ws(P);
		if (P->p < P->end && *P->p == ',')
		{
			P->p++;
			continue;
		}
		if (P->p < P->end && *P->p == '}')
		{
			P->p++;
			return true;
		}
		return fail(P, "expected ',' or '}'");
	}
}

static bool
parse_array(Parser *P, Kind kind)
{
	P->p++;						/* '[' */
	skip_ws(P);
	if (P->p < P->end && *P->p == ']')
	{
		P->p++;
		return true;
	}
	for (;;)
	{
		skip_ws(P);
		if (kind == K_HISTORY && P->p < P->end && *P->p == '{')
		{
			BwApiOrder *o = P->out;
			BwApiHistory *entry = NULL;

			if (o->nhistory < MAX_HISTORY)
			{
				if (o->nhistory == P->hcap)
				{
					int			ncap = P->hcap == 0 ? 16 : P->hcap * 2;
					BwApiHistory *h = arena_alloc(P, sizeof(BwApiHistory) * (size_t) ncap);

					if (h == NULL)
						return fail(P, "out of memory");
					if (o->nhistory > 0)
						memcpy(h, o->history, sizeof(BwApiHistory) * (size_t) o->nhistory);
					o->history = h;
					P->hcap = ncap;
				}
				entry = &o->history[o->nhistory++];
				memset(entry, 0, sizeof(*entry));
			}
			else
				o->nbad++;
			if (++P->depth > BW_API_MAX_DEPTH)
				return fail(P, "nested too deeply");
			if (!parse_object(P, entry != NULL ? K_HISTORY_ENTRY : K_OTHER, entry))
				return false;
			P->depth--;
		}
		else
		{
			if (kind == K_HISTORY)
				P->out->nbad++;
			if (!parse_value(P, K_OTHER, S_NONE, NULL))
				return false;
		}
		skip_ws(P);
		if (P->p < P->end && *P->p == ',')
		{
			P->p++;
			continue;
		}
		if (P->p < P->end && *P->p == ']')
		{
			P->p++;
			return true;
		}
		return fail(P, "expected ',' or ']'");
	}
}

static bool
parse_value(Parser *P, Kind kind, Special sp, const char **target)
{
	BwApiOrder *o = P->out;

	skip_ws(P);
	if (P->p >= P->end)
		return fail(P, "unexpected end of input");
	switch (*P->p)
	{
		case '{':
			{
				bool		ok;

				if (sp != S_NONE)
					o->nbad++;
				if (++P->depth > BW_API_MAX_DEPTH)
					return fail(P, "nested too deeply");
				ok = parse_object(P, sp != S_NONE ? K_OTHER :
								  (kind == K_HISTORY ? K_OTHER : kind), NULL);
				P->depth--;
				return ok;
			}
		case '[':
			{
				bool		ok;

				if (sp != S_NONE)
					o->nbad++;
				if (++P->depth > BW_API_MAX_DEPTH)
					return fail(P, "nested too deeply");
				ok = parse_array(P, sp == S_NONE && kind == K_HISTORY ? K_HISTORY : K_OTHER);
				P->depth--;
				return ok;
			}
		case '"':
			if (sp == S_TEXT)
				return parse_string(P, target);
			if (sp != S_NONE)
				o->nbad++;
			return parse_string(P, NULL);
		case 't':
		case 'f':
			{
				bool		v = *P->p == 't';

				if (!literal(P, v ? "true" : "false"))
					return false;
				if (sp == S_SUCCESS)
					o->success = v ? 1 : 0;
				else if (sp == S_TEXT)
					*target = v ? "true" : "false";
				else if (sp != S_NONE)
					o->nbad++;
				return true;
			}
		case 'n':
			return literal(P, "null");
		default:
			{
				const char *s = NULL;
				size_t		n = 0;

				if (!parse_number(P, &s, &n))
					return false;
				if (sp == S_TEXT)
				{
					char	   *c = arena_alloc(P, n + 1);

					if (c == NULL)
						return fail(P, "out of memory");
					memcpy(c, s, n);
					c[n] = '\0';
					*target = c;
				}
				else if (sp == S_CODE)
				{
					int64_t		v = 0;
					bool		ok = n > 0 && n <= 18;

					for (size_t i = 0; ok && i < n; i++)
					{
						if (s[i] < '0' || s[i] > '9')
							ok = false;
						else
							v = v * 10 + (s[i] - '0');
					}
					if (ok)
					{
						o->have_code = true;
						o->code = v;
					}
					else
						o->nbad++;
				}
				else if (sp != S_NONE)
					o->nbad++;
				return true;
			}
	}
}

bool
bw_api_parse_order(const char *body, size_t len, BwApiOrder *out,
				   char *err, size_t errsize)
{
	Parser		P;

	memset(out, 0, sizeof(*out));
	out->success = -1;
	if (errsize > 0)
		err[0] = '\0';
	memset(&P, 0, sizeof(P));
	P.p = body;
	P.end = body + len;
	P.out = out;
	P.err = err;
	P.errsize = errsize;

	/* a UTF-8 byte order mark is not JSON; jsonb refuses it too */
	skip_ws(&P);
	if (P.p >= P.end || *P.p != '{')
	{
		if (P.p >= P.end)
			fail(&P, "empty body");
		else
			fail(&P, "not a JSON object");
	}
	else
	{
		P.depth = 1;
		if (parse_object(&P, K_ROOT, NULL))
		{
			skip_ws(&P);
			if (P.p != P.end)
				fail(&P, "trailing data after the object");
		}
	}
	out->arena = P.arena;
	if (P.failed)
	{
		bw_api_order_free(out);
		return false;
	}
	return true;
}

void
bw_api_order_free(BwApiOrder *o)
{
	ArenaBlock *b = o->arena;

	while (b != NULL)
	{
		ArenaBlock *next = b->next;

		free(b);
		b = next;
	}
	memset(o, 0, sizeof(*o));
	o->success = -1;
}

bool
bw_api_order_id_ok(const char *id)
{
	size_t		n;

	if (id == NULL)
		return false;
	n = strlen(id);
	if (n == 0 || n > BW_API_ORDER_ID_MAXLEN)
		return false;
	for (size_t i = 0; i < n; i++)
	{
		char		c = id[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == '-' || c == '_'))
			return false;
	}
	return true;
}

BwApiResult
bw_api_classify(long http_status, BwTransportError terr, const BwApiOrder *parsed)
{
	if (terr != BW_TRANSPORT_OK || http_status == 0)
		return BW_API_NETWORK_ERROR;

	/* Biteship's own codes first: they say more than the status */
	if (parsed != NULL && parsed->have_code && parsed->success != 1)
	{
		switch (parsed->code)
		{
			case 40002057:
				return BW_API_NOT_FOUND;
			case 40000001:
				return BW_API_KEY_REFUSED;
			case 40101001:
				return BW_API_NO_KEY;
			default:
				break;
		}
	}
	if (http_status == 429)
		return BW_API_RATE_LIMITED;
	/* 408 timeout, 409 conflict, 425 too early: try again later */
	if (http_status >= 500 || http_status == 408 || http_status == 409 || http_status == 425)
		return BW_API_SERVER_ERROR;
	if (http_status == 404)
		return BW_API_NOT_FOUND;
	if (http_status == 401 || http_status == 403)
		return BW_API_NO_KEY;
	if (http_status >= 400)
		return BW_API_CLIENT_ERROR;
	if (http_status >= 200 && http_status < 300)
	{
		if (parsed == NULL || parsed->success == 0 ||
			(parsed->object != NULL && strcmp(parsed->object, "order") != 0) ||
			(parsed->id == NULL && parsed->status == NULL && parsed->nhistory == 0))
			return BW_API_BAD_ANSWER;
		return BW_API_OK;
	}
	/* 1xx and 3xx: redirects are never followed */
	return BW_API_CLIENT_ERROR;
}

const char *
bw_api_result_name(BwApiResult r)
{
	static const char *const names[BW_API_NRESULTS] = {
		"ok", "not_found", "key_refused", "no_key", "rate_limited",
		"server_error", "network_error", "bad_answer", "client_error"
	};

	if ((int) r < 0 || r >= BW_API_NRESULTS)
		return "unknown";
	return names[r];
}

bool
bw_api_result_refuses_order(BwApiResult r)
{
	return r == BW_API_NOT_FOUND;
}

bool
bw_api_result_refuses_key(BwApiResult r)
{
	return r == BW_API_KEY_REFUSED || r == BW_API_NO_KEY;
}

bool
bw_api_key_prefix_matches(const char *environment, const char *key)
{
	const char *want;

	if (environment == NULL || key == NULL)
		return false;
	if (strcmp(environment, "live") == 0)
		want = "biteship_live.";
	else if (strcmp(environment, "test") == 0)
		want = "biteship_test.";
	else
		return false;
	return strncmp(key, want, strlen(want)) == 0;
}

int64_t
bw_api_pace_interval(int per_second)
{
	if (per_second <= 0)
		per_second = 1;
	/*
	 * 3% over the exact spacing: a request can reach the server a few ms
	 * later or sooner than it was started (connections, schedulers), and
	 * ten gaps of 103 ms still span more than a second.
	 */
	return (int64_t) (1030000 / per_second);
}

int64_t
bw_api_pace_take(int64_t *next_slot, int64_t now, int64_t interval)
{
	int64_t		slot = *next_slot > now ? *next_slot : now;

	*next_slot = slot + interval;
	return slot;
}
