/*-------------------------------------------------------------------------
 *
 * dispatcher.c
 *	  The dispatcher background worker.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"

#include "biteship_webhook.h"

void
bw_dispatcher_main(Datum main_arg)
{
	proc_exit(0);
}
