/*-------------------------------------------------------------------------
 *
 * listener.c
 *	  The HTTP listener background worker.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"

#include "biteship_webhook.h"

void
bw_listener_main(Datum main_arg)
{
	proc_exit(0);
}
