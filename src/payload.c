/*-------------------------------------------------------------------------
 *
 * payload.c
 *	  Pure C helpers for Biteship payload values.
 *
 * This file owns the small, input-facing conversions of the payload mapper:
 * recognising installation checks, normalising statuses, parsing the
 * timestamps and numbers Biteship sends.  It makes no backend calls and
 * allocates nothing, so it can be unit-tested and fuzzed without a server.
 *
 *-------------------------------------------------------------------------
 */
#include <string.h>

#include "payload.h"

typedef struct StatusInfo
{
	const char *name;
	bool		final;
} StatusInfo;

/* The documented statuses, and whether each one ends the shipment. */
static const StatusInfo known_statuses[] = {
	{"confirmed", false},
	{"scheduled", false},
	{"allocated", false},
	{"picking_up", false},
	{"picked", false},
	{"dropping_off", false},
	{"on_hold", false},
	{"return_in_transit", false},
	{"delivered", true},
	{"returned", true},
	{"cancelled", true},
	{"rejected", true},
	{"courier_not_found", true},
	{"disposed", true},
	/* draft orders */
	{"placed", false},
	{"ready", false},
};

#define N_KNOWN_STATUSES (sizeof(known_statuses) / sizeof(known_statuses[0]))

static inline bool
is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static inline bool
is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* Skip JSON whitespace forward from *pos. */
static void
skip_space(const char *s, size_t len, size_t *pos)
{
	while (*pos < len && is_space(s[*pos]))
		(*pos)++;
}

bool
bw_body_is_ping(const char *body, size_t len)
{
	size_t		pos = 0;

	skip_space(body, len, &pos);
	if (pos == len)
		return true;
	if (body[pos] != '{')
		return false;
	pos++;
	skip_space(body, len, &pos);
	if (pos == len || body[pos] != '}')
		return false;
	pos++;
	skip_space(body, len, &pos);
	return pos == len;
}

bool
bw_body_looks_like_object(const char *body, size_t len)
{
	size_t		pos = 0;

	/* a UTF-8 byte order mark is tolerated */
	if (len >= 3 && (unsigned char) body[0] == 0xEF &&
		(unsigned char) body[1] == 0xBB && (unsigned char) body[2] == 0xBF)
		pos = 3;
	skip_space(body, len, &pos);
	return pos < len && body[pos] == '{';
}

static const StatusInfo *
lookup_status(const char *s)
{
	for (size_t i = 0; i < N_KNOWN_STATUSES; i++)
	{
		if (strcmp(known_statuses[i].name, s) == 0)
			return &known_statuses[i];
	}
	return NULL;
}

bool
bw_normalize_status(const char *in, size_t len, char *out, size_t outsize)
{
	char		snake[BW_STATUS_MAXLEN * 2 + 1];
	size_t		n = 0;
	size_t		start = 0;
	size_t		end = len;

	if (outsize == 0)
		return false;

	while (start < end && is_space(in[start]))
		start++;
	while (end > start && is_space(in[end - 1]))
		end--;

	/* Build the snake_case spelling: "droppingOff" -> "dropping_off". */
	if (end - start <= BW_STATUS_MAXLEN)
	{
		for (size_t i = start; i < end; i++)
		{
			char		c = in[i];

			if (c >= 'A' && c <= 'Z')
			{
				bool		prev_lower = i > start &&
				((in[i - 1] >= 'a' && in[i - 1] <= 'z') || is_digit(in[i - 1]));

				if (prev_lower)
					snake[n++] = '_';
				c = (char) (c - 'A' + 'a');
			}
			else if (c == '-' || c == ' ')
				c = '_';
			snake[n++] = c;
		}
		snake[n] = '\0';

		if (lookup_status(snake) != NULL && n < outsize)
		{
			memcpy(out, snake, n + 1);
			return true;
		}
	}

	/* Unknown: keep it verbatim (trimmed, bounded). */
	n = end - start;
	if (n > outsize - 1)
		n = outsize - 1;
	memcpy(out, in + start, n);
	out[n] = '\0';
	return false;
}

bool
bw_status_is_final(const char *status)
{
	const StatusInfo *info = lookup_status(status);

	return info != NULL && info->final;
}

/* Read exactly ndigits decimal digits at *pos into *value. */
static bool
read_digits(const char *s, size_t len, size_t *pos, int ndigits, int *value)
{
	int			v = 0;

	if (*pos + ndigits > len)
		return false;
	for (int i = 0; i < ndigits; i++)
	{
		char		c = s[*pos + i];

		if (!is_digit(c))
			return false;
		v = v * 10 + (c - '0');
	}
	*pos += ndigits;
	*value = v;
	return true;
}

/* Days since 1970-01-01 of a proleptic Gregorian date. */
static int64_t
days_from_civil(int y, int m, int d)
{
	int64_t		era;
	int			yoe;
	int			doy;
	int			doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = (int) (y - era * 400);
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static bool
is_leap(int y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

bool
bw_parse_timestamp(const char *in, size_t len, int64_t *usec)
{
	static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	size_t		pos = 0;
	int			year,
				mon,
				day,
				hour,
				min,
				sec = 0;
	int64_t		frac = 0;
	int			offset_sec = 0;
	int64_t		result;

	while (len > 0 && is_space(in[len - 1]))
		len--;
	skip_space(in, len, &pos);

	if (!read_digits(in, len, &pos, 4, &year) ||
		pos >= len || in[pos++] != '-' ||
		!read_digits(in, len, &pos, 2, &mon) ||
		pos >= len || in[pos++] != '-' ||
		!read_digits(in, len, &pos, 2, &day))
		return false;
	if (pos >= len || (in[pos] != 'T' && in[pos] != 't' && in[pos] != ' '))
		return false;
	pos++;
	if (!read_digits(in, len, &pos, 2, &hour) ||
		pos >= len || in[pos++] != ':' ||
		!read_digits(in, len, &pos, 2, &min))
		return false;
	if (pos < len && in[pos] == ':')
	{
		pos++;
		if (!read_digits(in, len, &pos, 2, &sec))
			return false;
		if (pos < len && (in[pos] == '.' || in[pos] == ','))
		{
			int			ndigits = 0;

			pos++;
			while (pos < len && is_digit(in[pos]))
			{
				if (ndigits < 6)
				{
					frac = frac * 10 + (in[pos] - '0');
					ndigits++;
				}
				pos++;
			}
			if (ndigits == 0)
				return false;
			while (ndigits++ < 6)
				frac *= 10;
		}
	}

	if (pos < len)
	{
		char		c = in[pos];

		if (c == 'Z' || c == 'z')
			pos++;
		else if (c == '+' || c == '-')
		{
			int			oh,
						om = 0;

			pos++;
			if (!read_digits(in, len, &pos, 2, &oh))
				return false;
			if (pos < len && in[pos] == ':')
				pos++;
			if (pos < len && !read_digits(in, len, &pos, 2, &om))
				return false;
			if (oh > 18 || om > 59)
				return false;
			offset_sec = (oh * 3600 + om * 60) * (c == '-' ? -1 : 1);
		}
		else
			return false;
	}
	if (pos != len)
		return false;

	if (year < 1970 || year > 9999 || mon < 1 || mon > 12 || day < 1 ||
		hour > 23 || min > 59 || sec > 60)
		return false;
	if (day > mdays[mon - 1] + (mon == 2 && is_leap(year) ? 1 : 0))
		return false;
	if (sec == 60)
		sec = 59;				/* a leap second: clamp, as PostgreSQL does */

	result = days_from_civil(year, mon, day) * 86400 +
		hour * 3600 + min * 60 + sec - offset_sec;
	*usec = result * INT64_C(1000000) + frac;
	return true;
}

bool
bw_parse_decimal(const char *in, size_t len, char *out, size_t outsize)
{
	size_t		start = 0;
	size_t		end = len;
	size_t		pos;
	size_t		ndigits = 0;
	bool		seen_point = false;

	while (start < end && is_space(in[start]))
		start++;
	while (end > start && is_space(in[end - 1]))
		end--;
	if (start == end || end - start > 40 || end - start + 1 > outsize)
		return false;

	pos = start;
	if (in[pos] == '-' || in[pos] == '+')
		pos++;
	for (; pos < end; pos++)
	{
		if (is_digit(in[pos]))
			ndigits++;
		else if (in[pos] == '.' && !seen_point && ndigits > 0)
			seen_point = true;
		else
			return false;
	}
	if (ndigits == 0 || in[end - 1] == '.')
		return false;

	memcpy(out, in + start, end - start);
	out[end - start] = '\0';
	return true;
}

bool
bw_timingsafe_equal(const unsigned char *a, const unsigned char *b, size_t len)
{
	volatile unsigned char diff = 0;

	for (size_t i = 0; i < len; i++)
		diff |= a[i] ^ b[i];
	return diff == 0;
}
