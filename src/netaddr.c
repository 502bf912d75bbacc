/*-------------------------------------------------------------------------
 *
 * netaddr.c
 *	  Pure C address helpers of the listener: CIDR lists and
 *	  X-Forwarded-For.  No backend calls, so they are unit-tested alone.
 *
 *-------------------------------------------------------------------------
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "netaddr.h"

/* Parse a bare address into family/bytes; IPv4-mapped IPv6 becomes IPv4. */
static bool
parse_addr(const char *s, int *family, unsigned char *bytes)
{
	struct in_addr a4;
	struct in6_addr a6;

	if (inet_pton(AF_INET, s, &a4) == 1)
	{
		*family = AF_INET;
		memcpy(bytes, &a4, 4);
		return true;
	}
	if (inet_pton(AF_INET6, s, &a6) == 1)
	{
		static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

		if (memcmp(&a6, mapped, 12) == 0)
		{
			*family = AF_INET;
			memcpy(bytes, ((unsigned char *) &a6) + 12, 4);
			return true;
		}
		*family = AF_INET6;
		memcpy(bytes, &a6, 16);
		return true;
	}
	return false;
}

/* Trim blanks in place; returns the start. */
static char *
trim(char *s)
{
	char	   *end;

	while (*s == ' ' || *s == '\t')
		s++;
	end = s + strlen(s);
	while (end > s && (end[-1] == ' ' || end[-1] == '\t'))
		*--end = '\0';
	return s;
}

bool
bw_cidr_parse(const char *spec, BwCidrList *list, const char **bad)
{
	static char badbuf[128];
	char	   *copy;
	char	   *save = NULL;
	char	   *tok;

	list->n = 0;
	if (spec == NULL)
		return true;
	copy = strdup(spec);
	if (copy == NULL)
	{
		*bad = "out of memory";
		return false;
	}

	for (tok = strtok_r(copy, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save))
	{
		char	   *item = trim(tok);
		char	   *slash;
		BwCidr		c;
		int			maxprefix;

		if (*item == '\0')
			continue;
		slash = strchr(item, '/');
		if (slash)
			*slash = '\0';
		if (list->n >= BW_MAX_CIDRS || !parse_addr(item, &c.family, c.addr))
			goto fail;
		maxprefix = c.family == AF_INET ? 32 : 128;
		c.prefix = maxprefix;
		if (slash)
		{
			char	   *end;
			long		p = strtol(slash + 1, &end, 10);

			if (end == slash + 1 || *end != '\0' || p < 0 || p > maxprefix)
				goto fail;
			c.prefix = (int) p;
		}
		list->items[list->n++] = c;
		continue;

fail:
		if (slash)
			*slash = '/';
		snprintf(badbuf, sizeof(badbuf), "%s", item);
		*bad = badbuf;
		free(copy);
		return false;
	}
	free(copy);
	return true;
}

bool
bw_cidr_match(const BwCidrList *list, const char *addr)
{
	int			family;
	unsigned char bytes[16];

	if (addr == NULL || !parse_addr(addr, &family, bytes))
		return false;
	for (int i = 0; i < list->n; i++)
	{
		const BwCidr *c = &list->items[i];
		int			full = c->prefix / 8;
		int			rest = c->prefix % 8;

		if (c->family != family)
			continue;
		if (memcmp(c->addr, bytes, full) != 0)
			continue;
		if (rest != 0)
		{
			unsigned char mask = (unsigned char) (0xff << (8 - rest));

			if ((c->addr[full] & mask) != (bytes[full] & mask))
				continue;
		}
		return true;
	}
	return false;
}

void
bw_sockaddr_text(const struct sockaddr *sa, char *out, size_t outsize)
{
	char		buf[INET6_ADDRSTRLEN];

	out[0] = '\0';
	if (sa->sa_family == AF_INET)
	{
		const struct sockaddr_in *s4 = (const struct sockaddr_in *) sa;

		if (inet_ntop(AF_INET, &s4->sin_addr, buf, sizeof(buf)))
			snprintf(out, outsize, "%s", buf);
	}
	else if (sa->sa_family == AF_INET6)
	{
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *) sa;

		if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr))
		{
			if (inet_ntop(AF_INET, ((const unsigned char *) &s6->sin6_addr) + 12,
						  buf, sizeof(buf)))
				snprintf(out, outsize, "%s", buf);
		}
		else if (inet_ntop(AF_INET6, &s6->sin6_addr, buf, sizeof(buf)))
			snprintf(out, outsize, "%s", buf);
	}
}

/*
 * Walk X-Forwarded-For from the right, over every hop however many there
 * are: each trusted hop passes the question on to the one before it, and
 * the first untrusted hop is the client.  When every hop is trusted, the
 * leftmost one is.  An entry that is not an address ends the walk, and the
 * last good hop stands.
 */
void
bw_forwarded_client(const BwCidrList *trusted, const char *peer,
					const char *xff, char *out, size_t outsize)
{
	const char *end;

	snprintf(out, outsize, "%s", peer);
	if (xff == NULL || trusted->n == 0 || !bw_cidr_match(trusted, peer))
		return;

	end = xff + strlen(xff);
	while (end > xff)
	{
		const char *start = end;
		const char *a;
		const char *b;
		char		hop[BW_ADDRSTRLEN];
		int			family;
		unsigned char bytes[16];

		while (start > xff && start[-1] != ',')
			start--;
		a = start;
		b = end;
		while (a < b && (*a == ' ' || *a == '\t'))
			a++;
		while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
			b--;
		if (b == a || (size_t) (b - a) >= sizeof(hop))
			break;
		memcpy(hop, a, (size_t) (b - a));
		hop[b - a] = '\0';
		if (!parse_addr(hop, &family, bytes))
			break;				/* garbage: stop at the last good hop */
		snprintf(out, outsize, "%s", hop);
		if (!bw_cidr_match(trusted, hop))
			break;
		if (start == xff)
			break;
		end = start - 1;		/* before the comma */
	}
}
