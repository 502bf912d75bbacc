/*-------------------------------------------------------------------------
 *
 * biteship_webhook.h
 *	  Declarations shared by the backend side of biteship_webhook: settings,
 *	  the ingest core, shared-memory statistics and the background workers.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BITESHIP_WEBHOOK_H
#define BITESHIP_WEBHOOK_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "fmgr.h"
#include "utils/jsonb.h"

#include "biteship_api.h"

/*
 * Portability.  The extension is built and tested against PostgreSQL 15
 * (Debian 12's); it uses APIs that 15 introduced (InitMaterializedSRF,
 * shmem_request_hook, MarkGUCPrefixReserved), so 15 is the oldest release
 * it supports.  17 changed CreateWaitEventSet to take a resource owner.
 */
#if PG_VERSION_NUM < 150000
#error "biteship_webhook requires PostgreSQL 15 or later"
#endif
#if PG_VERSION_NUM >= 170000
#define BW_CREATE_WAIT_EVENT_SET(nevents) CreateWaitEventSet(NULL, (nevents))
#else
#define BW_CREATE_WAIT_EVENT_SET(nevents) CreateWaitEventSet(TopMemoryContext, (nevents))
#endif

#define BW_VERSION			"0.4.0"
#define BW_SCHEMA			"biteship_webhook"
#define BW_NOTIFY_CHANNEL	"biteship_webhook"
#define BW_SHA256_LEN		32

/* apply modes */
typedef enum BwApplyMode
{
	BW_APPLY_INLINE,
	BW_APPLY_DEFERRED
} BwApplyMode;

/* settings (module.c) */
extern char *bw_database;
extern char *bw_role;
extern char *bw_listen_addresses;
extern int	bw_port;
extern int	bw_listener_workers;
extern int	bw_max_connections;
extern int	bw_max_body_size;
extern int	bw_max_header_size;
extern int	bw_request_timeout;
extern int	bw_keepalive_timeout;
extern int	bw_apply_mode;
extern int	bw_max_apply_attempts;
extern int	bw_retry_base_delay;
extern int	bw_event_retention;
extern int	bw_rejected_body_limit;
extern int	bw_max_batch_size;
extern int	bw_apply_timeout;
extern char *bw_apply_role;
extern int	bw_unverified_log_rate;
extern int	bw_body_memory_limit;
extern bool bw_outbound;
extern int	bw_outbox_max_concurrency;
extern int	bw_outbox_max_per_endpoint;
extern char *bw_outbox_retry_schedule;
extern int	bw_outbox_max_retry_after;
extern int	bw_outbox_response_body_limit;
extern int	bw_outbox_response_headers_limit;
extern int	bw_outbox_retention;
extern char *bw_outbound_ca_file;
extern int	bw_endpoint_disable_after;
extern char *bw_api_base_url;
extern int	bw_api_timeout;
extern int	bw_reconcile_after;
extern int	bw_api_rate_limit;
extern char *bw_trusted_proxies;
extern char *bw_metrics_allow;
extern bool bw_ssl;
extern char *bw_ssl_cert_file;
extern char *bw_ssl_key_file;
extern char *bw_ssl_ca_file;
extern int	bw_ssl_min_protocol_version;
extern char *bw_ssl_ciphers;

extern bool bw_preloaded;

/* One header of a delivery, as received. */
typedef struct BwHeader
{
	const char *name;
	const char *value;
} BwHeader;

/* A webhook's configuration, as the ingest core needs it. */
typedef struct BwWebhook
{
	int32		id;
	char	   *name;
	char	   *path;
	char	   *environment;
	char	  **events;
	int			nevents;
	char	   *signature_key;	/* lower-cased header name, or NULL */
	int			nsecrets;		/* unexpired secrets */
	int32	   *secret_ids;
	uint8	   *secret_digests; /* nsecrets * BW_SHA256_LEN bytes */
} BwWebhook;

/*
 * One delivery handed to the ingest core, and its outcome.  The listener
 * fills the input half for every request of a batch; the core fills the
 * output half.
 */
typedef struct BwDelivery
{
	/* input */
	BwWebhook  *webhook;
	const char *body;
	size_t		body_len;
	const BwHeader *headers;
	int			nheaders;
	const char *remote_addr;	/* NULL when unknown */
	TimestampTz received_at;
	bool		deferred;		/* store as pending; the dispatcher applies */
	bool		body_discarded; /* the listener did not keep the body */
	bool		digest_done;	/* digest holds the body's SHA-256 */
	uint8		digest[BW_SHA256_LEN];
	int64		reserved_id;	/* the event's id if it is logged; 0 = none
								 * taken yet */

	/* output */
	int			http_status;
	int64		event_id;		/* 0 when nothing was stored */
	const char *state;			/* applied, ignored, ping, failed, rejected,
								 * pending, duplicate */
	char	   *error;			/* message for the client, or NULL */

	/* between the two phases of ingest */
	Jsonb	   *apply_payload;	/* set when the event still has to be applied */
	char	   *order_key;		/* order_id, to order the applies of a batch */
} BwDelivery;

/*
 * Called after each event is applied, in the apply's subtransaction and
 * with the workers' own rights: the outbox forwards the event from here.
 * An ERROR fails the event like any apply error.
 */
typedef void (*bw_after_apply_hook_type) (int64 event_id, const char *webhook,
										  const char *environment,
										  const char *event,
										  const char *order_id,
										  Jsonb *payload);
extern PGDLLIMPORT bw_after_apply_hook_type bw_after_apply_hook;

/*
 * An answer of Biteship's API handed to the ingest core, and its outcome.
 */
typedef struct BwApiAnswer
{
	/* input */
	const char *environment;
	const char *order_id;
	long		http_status;	/* > 0: an HTTP answer was received */
	const char *body;			/* the API key already redacted */
	size_t		body_len;
	bool		body_truncated;
	TimestampTz fetched_at;

	/* output */
	BwApiResult result;
	int64		event_id;
	const char *state;			/* applied, failed, ignored or duplicate */
	bool		changed;		/* state the webhooks had not delivered */
	bool		created;		/* the order was new to us */
	int			history_added;
	char	   *error;			/* Biteship's error, or the apply's */
	bool		have_code;
	int64		code;			/* Biteship's error code */
	char		parse_error[128];	/* why the body is not an answer */
} BwApiAnswer;

/* module.c */
extern void bw_worker_session_settings(void);
extern void bw_worker_sigterm(SIGNAL_ARGS);
extern void bw_worker_set_cancel_on_term(bool on);

/* ingest.c */
extern BwWebhook *bw_lookup_webhook(const char *name, const char *path);
extern void bw_delivery_digest(BwDelivery *d);
extern void bw_delivery_reserve_id(BwDelivery *d);
extern int	bw_delivery_log_cmp(const BwDelivery *a, const BwDelivery *b);
extern int	bw_delivery_apply_cmp(const BwDelivery *a, const BwDelivery *b);
extern void bw_ingest_one(BwDelivery *d);
extern void bw_ingest_log_batch(BwDelivery **ds, int n);
extern void bw_ingest_apply_batch(BwDelivery **ds, int n);
extern void bw_notify_defer_begin(void);
extern void bw_notify_defer_discard(void);
extern void bw_notify_defer_send(void);
extern void bw_ingest_apply(BwDelivery *d);
extern void bw_ingest_defer(BwDelivery *d, const char *why);
extern bool bw_apply_room(void);
extern void bw_apply_deadline_arm(void);
extern void bw_apply_deadline_disarm(void);
extern bool bw_apply_deadline_passed(void);
extern const char *bw_apply_stored_event(int64 event_id, const char *source,
										 bool only_if_due, char **error);
extern void bw_sha256(const void *data, size_t len, uint8 *digest);
extern Oid	bw_apply_role_oid(bool missing_ok);
extern void bw_ingest_api_answer(BwApiAnswer *a);

/* ingest_sql.c: argument helpers of the SQL-callable functions */
extern char *bw_required_text(FunctionCallInfo fcinfo, int argno, const char *argname);
extern char *bw_optional_text(FunctionCallInfo fcinfo, int argno);

/* stats.c */
extern void bw_shmem_request(void);
extern void bw_shmem_startup(void);
extern void bw_stats_count_event(const char *state);
extern void bw_config_changed_at_commit(void);
extern uint64 bw_config_generation(void);
extern bool bw_unverified_allowed(int32 webhook_id, const char *webhook,
								  const char *state, int per_minute);

/* listener.c, dispatcher.c */
extern PGDLLEXPORT void bw_listener_main(Datum main_arg);
extern PGDLLEXPORT void bw_dispatcher_main(Datum main_arg);
extern PGDLLEXPORT void bw_reconciler_main(Datum main_arg);
extern void bw_wake_dispatcher(void);

#endif							/* BITESHIP_WEBHOOK_H */
