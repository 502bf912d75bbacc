/*-------------------------------------------------------------------------
 *
 * outbound_policy.c
 *	  Classification of outbound answers, the retry schedule, Retry-After,
 *	  and the redaction of credentials from answers.
 *
 * See outbound_policy.h.
 *
 *-------------------------------------------------------------------------
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "outbound_policy.h"

#define WEEK_MS ((int64_t) 7 * 24 * 3600 * 1000)

BwOutcome
bw_outcome_classify(long http_status, BwTransportError terr)
{
	if (terr == BW_TRANSPORT_FATAL)
		return BW_OUTCOME_DEAD;
	if (terr != BW_TRANSPORT_OK)
		return BW_OUTCOME_RETRY;
	if (http_status >= 200 && http_status <= 299)
		return BW_OUTCOME_DELIVERED;
	if (http_status == 410)
		return BW_OUTCOME_DISABLE;
	if (http_status == 408 || http_status == 425 || http_status == 429)
		return BW_OUTCOME_RETRY;
	if (http_status >= 400 && http_status <= 499)
		return BW_OUTCOME_DEAD;
	/* 3xx (never followed), 5xx, and anything odd */
	return BW_OUTCOME_RETRY;
}

const char *
bw_status_class(long http_status)
{
	if (http_status >= 200 && http_status <= 299)
		return "2xx";
	if (http_status >= 300 && http_status <= 399)
		return "3xx";
	if (http_status >= 400 && http_status <= 499)
		return "4xx";
	if (http_status >= 500 && http_status <= 599)
		return "5xx";
	return "error";
}

/* Parse one "<number><unit>" item; false when it is not one. */
static bool
parse_delay(const char *s, int64_t *ms)
{
	char	   *end;
	double		v;
	double		mult;

	while (*s == ' ' || *s == '\t')
		s++;
	if (!isdigit((unsigned char) *s))
		return false;
	v = strtod(s, &end);
	while (*end == ' ' || *end == '\t')
		end++;
	if (strncmp(end, "ms", 2) == 0)
		mult = 1, end += 2;
	else if (strncmp(end, "min", 3) == 0)
		mult = 60 * 1000, end += 3;
	else if (*end == 's')
		mult = 1000, end += 1;
	else if (*end == 'h')
		mult = 3600 * 1000, end += 1;
	else if (*end == 'd')
		mult = 24 * 3600 * 1000, end += 1;
	else if (*end == '\0' && v == 0)
		mult = 0;				/* a bare 0 needs no unit */
	else
		return false;
	while (*end == ' ' || *end == '\t')
		end++;
	if (*end != '\0' || v < 0 || v * mult > (double) WEEK_MS)
		return false;
	*ms = (int64_t) (v * mult);
	return true;
}

bool
bw_retry_schedule_parse(const char *spec, int64_t *delays_ms, int *n,
						const char **bad)
{
	static char badbuf[64];
	const char *p = spec;

	*n = 0;
	if (spec == NULL)
	{
		*bad = "";
		return false;
	}
	while (*p != '\0')
	{
		const char *comma = strchr(p, ',');
		size_t		len = comma ? (size_t) (comma - p) : strlen(p);
		char		item[64];

		if (len >= sizeof(item) || *n >= BW_MAX_RETRY_STEPS)
		{
			snprintf(badbuf, sizeof(badbuf), "%.*s", (int) (len < 60 ? len : 60), p);
			*bad = badbuf;
			return false;
		}
		memcpy(item, p, len);
		item[len] = '\0';
		if (!parse_delay(item, &delays_ms[*n]))
		{
			const char *t = item;

			while (*t == ' ' || *t == '\t')
				t++;
			snprintf(badbuf, sizeof(badbuf), "%s", t);
			*bad = badbuf;
			return false;
		}
		(*n)++;
		if (comma == NULL)
			break;
		p = comma + 1;
	}
	if (*n == 0)
	{
		*bad = "";
		return false;
	}
	return true;
}

int64_t
bw_retry_delay_ms(const int64_t *delays_ms, int n, int attempts, double jitter)
{
	int64_t		base;

	if (n <= 0)
		return 0;
	if (attempts < 0)
		attempts = 0;
	base = delays_ms[attempts < n ? attempts : n - 1];
	if (jitter < 0)
		jitter = 0;
	if (jitter >= 1)
		jitter = 0.999999;
	return (int64_t) ((double) base * (0.8 + 0.4 * jitter));
}

static int
month_index(const char *m)
{
	static const char *const months[] = {
		"Jan", "Feb", "Mar", "Apr", "May", "Jun",
		"Jul", "Aug", "Sep", "Oct", "Nov", "Dec"
	};

	for (int i = 0; i < 12; i++)
	{
		if (strncmp(m, months[i], 3) == 0)
			return i;
	}
	return -1;
}

/* Parse an HTTP-date into Unix seconds; false when it is none. */
static bool
parse_http_date(const char *s, int64_t *t)
{
	struct tm	tm;
	char		wday[16];
	char		mon[4];
	int			d,
				y,
				hh,
				mm,
				ss;
	char		tail[8];
	time_t		v;

	memset(&tm, 0, sizeof(tm));
	/* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */
	if (sscanf(s, "%3[A-Za-z], %2d %3s %4d %2d:%2d:%2d %3s",
			   wday, &d, mon, &y, &hh, &mm, &ss, tail) == 8 &&
		strcmp(tail, "GMT") == 0)
		;
	/* RFC 850: Sunday, 06-Nov-94 08:49:37 GMT */
	else if (sscanf(s, "%15[A-Za-z], %2d-%3s-%2d %2d:%2d:%2d %3s",
					wday, &d, mon, &y, &hh, &mm, &ss, tail) == 8 &&
			 strcmp(tail, "GMT") == 0)
		y += y < 70 ? 2000 : 1900;
	/* asctime: Sun Nov  6 08:49:37 1994 */
	else if (sscanf(s, "%3[A-Za-z] %3s %2d %2d:%2d:%2d %4d",
					wday, mon, &d, &hh, &mm, &ss, &y) == 7)
		;
	else
		return false;
	tm.tm_mon = month_index(mon);
	if (tm.tm_mon < 0 || d < 1 || d > 31 || hh > 23 || mm > 59 || ss > 60 ||
		y < 1970 || y > 9999)
		return false;
	tm.tm_mday = d;
	tm.tm_year = y - 1900;
	tm.tm_hour = hh;
	tm.tm_min = mm;
	tm.tm_sec = ss;
	v = timegm(&tm);
	if (v == (time_t) -1)
		return false;
	*t = (int64_t) v;
	return true;
}

bool
bw_parse_retry_after(const char *value, int64_t now_unix, int64_t *delay_s)
{
	const char *p = value;
	int64_t		t;

	if (value == NULL)
		return false;
	while (*p == ' ' || *p == '\t')
		p++;
	if (isdigit((unsigned char) *p))
	{
		char	   *end;
		long long	v = strtoll(p, &end, 10);

		while (*end == ' ' || *end == '\t')
			end++;
		if (*end != '\0' || v < 0)
			return false;
		*delay_s = v;
		return true;
	}
	if (!parse_http_date(p, &t))
		return false;
	*delay_s = t > now_unix ? t - now_unix : 0;
	return true;
}

char *
bw_redact(const char *text, size_t len, const char *const *secrets,
		  int nsecrets, size_t *outlen)
{
	static const char mark[] = "[redacted]";
	size_t		cap = len + 1;
	size_t		o = 0;
	size_t		i = 0;
	char	   *out;

	/* room for the worst case: a short secret at every byte */
	for (int k = 0; k < nsecrets; k++)
	{
		if (secrets[k] != NULL && secrets[k][0] != '\0' &&
			strlen(secrets[k]) < sizeof(mark) - 1)
		{
			cap = len * (sizeof(mark) - 1) + 1;
			break;
		}
	}
	if (len > (SIZE_MAX - 1) / (sizeof(mark) - 1))
		return NULL;
	out = malloc(cap);
	if (out == NULL)
		return NULL;
	while (i < len)
	{
		size_t		best = 0;

		for (int k = 0; k < nsecrets; k++)
		{
			size_t		sl;

			if (secrets[k] == NULL || secrets[k][0] == '\0' ||
				text[i] != secrets[k][0])
				continue;
			sl = strlen(secrets[k]);
			if (sl > best && len - i >= sl && memcmp(text + i, secrets[k], sl) == 0)
				best = sl;
		}
		if (best > 0)
		{
			memcpy(out + o, mark, sizeof(mark) - 1);
			o += sizeof(mark) - 1;
			i += best;
		}
		else
			out[o++] = text[i++];
	}
	out[o] = '\0';
	*outlen = o;
	return out;
}
