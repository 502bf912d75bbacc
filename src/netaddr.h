/*-------------------------------------------------------------------------
 *
 * netaddr.h
 *	  Pure C address helpers of the listener: CIDR lists (trusted proxies,
 *	  who may read /metrics) and X-Forwarded-For.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BW_NETADDR_H
#define BW_NETADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#define BW_MAX_CIDRS 64
#define BW_ADDRSTRLEN 64

typedef struct BwCidr
{
	int			family;			/* AF_INET or AF_INET6 */
	unsigned char addr[16];
	int			prefix;
} BwCidr;

typedef struct BwCidrList
{
	int			n;
	BwCidr		items[BW_MAX_CIDRS];
} BwCidrList;

/*
 * Parse "10.0.0.0/8, ::1, 192.168.1.5" into list.  Returns false and points
 * *bad at the offending item (a static copy) on error.
 */
extern bool bw_cidr_parse(const char *spec, BwCidrList *list, const char **bad);

/* Is the textual address in the list? */
extern bool bw_cidr_match(const BwCidrList *list, const char *addr);

/* Format a socket address as text (IPv4-mapped IPv6 shown as IPv4). */
extern void bw_sockaddr_text(const struct sockaddr *sa, char *out, size_t outsize);

/*
 * The client address behind trusted proxies: walk X-Forwarded-For from the
 * right, skipping trusted hops; the first untrusted one is the client.  Writes
 * peer itself when the peer is not trusted or the header is absent or bad.
 */
extern void bw_forwarded_client(const BwCidrList *trusted, const char *peer,
								const char *xff, char *out, size_t outsize);

#endif							/* BW_NETADDR_H */
