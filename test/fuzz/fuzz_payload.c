/*-------------------------------------------------------------------------
 *
 * fuzz_payload.c
 *	  libFuzzer target for the pure C payload helpers (src/payload.c) and
 *	  the address helpers (src/netaddr.c): arbitrary bytes as bodies,
 *	  statuses, timestamps, numbers, CIDR lists and X-Forwarded-For values.
 *
 * Build and run:
 *	  clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
 *		  test/fuzz/fuzz_payload.c src/payload.c src/netaddr.c -o test/fuzz/fuzz_payload
 *	  test/fuzz/fuzz_payload -max_total_time=60
 *
 *-------------------------------------------------------------------------
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "netaddr.h"
#include "payload.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *) data;
	char		status[BW_STATUS_MAXLEN + 1];
	char		num[64];
	int64_t		usec;
	char	   *cstr;
	BwCidrList	list;
	const char *bad;
	char		out[BW_ADDRSTRLEN];

	(void) bw_body_is_ping(s, size);
	(void) bw_body_looks_like_object(s, size);
	if (bw_normalize_status(s, size, status, sizeof(status)))
		(void) bw_status_is_final(status);
	(void) bw_parse_timestamp(s, size, &usec);
	(void) bw_parse_decimal(s, size, num, sizeof(num));

	/* the address helpers take C strings */
	cstr = malloc(size + 1);
	if (cstr == NULL)
		return 0;
	memcpy(cstr, data, size);
	cstr[size] = '\0';
	if (bw_cidr_parse(cstr, &list, &bad))
	{
		(void) bw_cidr_match(&list, "127.0.0.1");
		(void) bw_cidr_match(&list, "::1");
		bw_forwarded_client(&list, "127.0.0.1", cstr, out, sizeof(out));
	}
	(void) bw_cidr_match(&list, cstr);
	free(cstr);
	return 0;
}
