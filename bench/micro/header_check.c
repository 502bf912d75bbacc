/*
 * header_check.c
 *		Time bw_header_is_secret() over the headers of a typical delivery.
 *
 * The listener asks it for every header of every delivery it stores, to
 * keep credentials out of events.headers.  This times 8 headers (what
 * Biteship and a proxy in front send) a few million times and prints the
 * cost per delivery.  Pure code: no server needed.
 *
 *	cc -O2 -Isrc -o /tmp/header_check bench/micro/header_check.c \
 *		src/route.c src/payload.c -lcrypto && /tmp/header_check
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "route.h"

int
main(int argc, char **argv)
{
	static const char *const headers[] = {
		"Host", "User-Agent", "Content-Type", "Content-Length",
		"Accept-Encoding", "X-Forwarded-For", "X-Request-Id",
		"X-Biteship-Signature"
	};
	long		iterations = argc > 1 ? atol(argv[1]) : 2000000;
	volatile int secret = 0;
	struct timespec start,
				end;
	double		ns;

	if (iterations <= 0)
		iterations = 2000000;
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (long i = 0; i < iterations; i++)
		for (int j = 0; j < 8; j++)
			secret += bw_header_is_secret(headers[j], "x-biteship-signature");
	clock_gettime(CLOCK_MONOTONIC, &end);
	ns = (end.tv_sec - start.tv_sec) * 1e9 + (end.tv_nsec - start.tv_nsec);
	printf("%.1f ns per delivery of 8 headers (%ld deliveries, %d secret)\n",
		   ns / iterations, iterations, secret / (int) iterations);
	return 0;
}
