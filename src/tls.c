/*-------------------------------------------------------------------------
 *
 * tls.c
 *	  TLS for the listener with OpenSSL.  (Not implemented yet: contexts
 *	  cannot be created, so biteship_webhook.ssl = on refuses to start.)
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>

#include "tls.h"

BwTlsContext *
bw_tls_context_new(const BwTlsConfig *cfg, char *err, size_t errsize)
{
	snprintf(err, errsize, "TLS support is not available in this build");
	return NULL;
}

void
bw_tls_context_release(BwTlsContext *ctx)
{
}

BwTransport *
bw_transport_tls_new(int fd, BwTlsContext *ctx)
{
	return NULL;
}

int
bw_tls_failure(const BwTransport *t)
{
	return BW_TLS_FAILURE_NONE;
}

bool
bw_transport_is_tls(const BwTransport *t)
{
	return false;
}
