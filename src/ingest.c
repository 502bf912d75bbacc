/*-------------------------------------------------------------------------
 *
 * ingest.c
 *	  The ingest core: verify a delivery, log it durably, deduplicate it and
 *	  apply it to the orders and status history tables.
 *
 * The HTTP listener, the dispatcher and the SQL functions all come through
 * here, inside a transaction their caller controls.  Deliveries are logged
 * in the caller's transaction, a listener's batch with one statement.
 * A batch is applied set-based, in one subtransaction; if that raises, it
 * is applied again event by event, each in a subtransaction of its own, so
 * that a mapping error or an application trigger that raises marks only
 * that event failed.  Nothing in this file commits.
 *
 * Statements are prepared once per process, with generic plans, and kept
 * (SPI_keepplan); a batch costs a few cached-plan executions and no catalog
 * look-ups.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/evp.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "commands/async.h"
#include "commands/sequence.h"
#include "catalog/namespace.h"
#include "utils/lsyscache.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/formatting.h"
#include "utils/inet.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/resowner.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

#include "biteship_api.h"
#include "biteship_webhook.h"
#include "payload.h"
#include "route.h"
#include "stats.h"

/* most body bytes a batch logs with one set-based statement */
#define SET_INSERT_MAX_BYTES (64 * 1024 * 1024)

/* longest order_id we accept; Biteship's are 24 characters */
#define BW_ORDER_ID_MAXLEN 128

/* the events Biteship documents */
static const char *const known_events[] = {
	"order.status", "order.waybill_id", "order.price"
};

typedef enum BwEventKind
{
	BW_EVENT_STATUS,
	BW_EVENT_WAYBILL,
	BW_EVENT_PRICE,
	BW_EVENT_UNKNOWN
} BwEventKind;

/* the set-based statements' columns, one array parameter each */
#define UNNEST17 \
	"pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3), " \
	"pg_catalog.unnest($4), pg_catalog.unnest($5), pg_catalog.unnest($6), " \
	"pg_catalog.unnest($7), pg_catalog.unnest($8), pg_catalog.unnest($9), " \
	"pg_catalog.unnest($10), pg_catalog.unnest($11), pg_catalog.unnest($12), " \
	"pg_catalog.unnest($13), pg_catalog.unnest($14), pg_catalog.unnest($15), " \
	"pg_catalog.unnest($16), pg_catalog.unnest($17)"

/* prepared statements, kept for the life of the process */
static SPIPlanPtr plan_webhook_by_name = NULL;
static SPIPlanPtr plan_webhook_by_path = NULL;
static SPIPlanPtr plan_insert_event = NULL;
static SPIPlanPtr plan_redelivery = NULL;
static SPIPlanPtr plan_event_outcome = NULL;
static SPIPlanPtr plan_event_defer = NULL;
static SPIPlanPtr plan_load_event = NULL;
static SPIPlanPtr plan_upsert_status = NULL;
static SPIPlanPtr plan_upsert_waybill = NULL;
static SPIPlanPtr plan_upsert_price = NULL;
static SPIPlanPtr plan_order_text = NULL;
static SPIPlanPtr plan_history_known = NULL;
static SPIPlanPtr plan_insert_api_event = NULL;
static SPIPlanPtr plan_insert_events = NULL;	/* a batch's, set-based */
static SPIPlanPtr plan_upsert_statuses = NULL;	/* a batch's, set-based */

/* element types of the arrays of plan_insert_events, in column order */
static const Oid event_column_types[17] = {INT4OID, TEXTOID, TIMESTAMPTZOID,
	TEXTOID, TEXTOID, JSONBOID, BYTEAOID, BYTEAOID, INT4OID, JSONBOID,
INETOID, INT4OID, INT2OID, TEXTOID, TEXTOID, INT4OID, INT8OID};

/* element types of the arrays of plan_upsert_statuses, in column order */
static const Oid status_column_types[18] = {TEXTOID, TEXTOID, TEXTOID,
	TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
TEXTOID, NUMERICOID, TIMESTAMPTZOID, BOOLOID, INT8OID, TEXTOID, TEXTOID};

#define WEBHOOK_SELECT \
	"SELECT w.id, w.name, w.path, w.environment, w.events, " \
	"       pg_catalog.lower(w.signature_key), s.id, s.secret_sha256 " \
	"  FROM biteship_webhook.webhooks w " \
	"  LEFT JOIN biteship_webhook.webhook_secrets s " \
	"    ON s.webhook_id = w.id " \
	"   AND (s.expires_at IS NULL OR s.expires_at > pg_catalog.now()) "

/* called after each successful apply, in its subtransaction (forwarding) */
bw_after_apply_hook_type bw_after_apply_hook = NULL;

/* the timeout that ends an apply running past biteship_webhook.apply_timeout */
static TimeoutId apply_timeout_id = MAX_TIMEOUTS;
static volatile sig_atomic_t apply_deadline_passed = false;

/*
 * Prepare one statement.  It lives in SPI's procedure memory until
 * prepare_plans() keeps every plan at once: if a later statement fails to
 * prepare, nothing has been kept, and nothing leaks.
 */
static SPIPlanPtr
prepare_kept(const char *sql, int nargs, Oid *argtypes)
{
	/*
	 * Generic from the first execution: the parameters never change the
	 * best plan of these statements, and a custom-plan phase would plan
	 * each of them five times per process, and the set-based ones again
	 * whenever a batch's size changed the estimates.
	 */
	SPIPlanPtr	plan = SPI_prepare_cursor(sql, nargs, argtypes,
										  CURSOR_OPT_GENERIC_PLAN);

	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s",
			 sql, SPI_result_code_string(SPI_result));
	return plan;
}

/*
 * Prepare every statement the core runs, once per process.  Must be called
 * with SPI connected and outside any subtransaction of ours.
 */
static void
prepare_plans(void)
{
	SPIPlanPtr	p_by_name,
				p_by_path,
				p_insert,
				p_redelivery,
				p_outcome,
				p_defer,
				p_load,
				p_status,
				p_waybill,
				p_price,
				p_order_text,
				p_history_known,
				p_insert_api,
				p_insert_set,
				p_status_set;

	if (plan_upsert_price != NULL)
		return;				/* all are kept together, at the end */

	{
		Oid			types[1] = {TEXTOID};

		p_by_name = prepare_kept(WEBHOOK_SELECT
											"WHERE w.name = $1 ORDER BY s.id",
											1, types);
		p_by_path = prepare_kept(WEBHOOK_SELECT
											"WHERE w.path = $1 ORDER BY s.id",
											1, types);
	}
	{
		Oid			types[17] = {INT4OID, TEXTOID, TIMESTAMPTZOID, TEXTOID,
			TEXTOID, JSONBOID, BYTEAOID, BYTEAOID, INT4OID, JSONBOID,
			INETOID, INT4OID, INT2OID, TEXTOID, TEXTOID, INT4OID, INT8OID};

		/*
		 * The id is taken beforehand (bw_delivery_reserve_id), in request
		 * order, because a batch inserts in digest order.
		 */
#define EVENT_COLUMNS \
	" (id, webhook_id, environment, received_at, event, order_id, " \
	"  payload, body_sha256, raw_body, body_size, headers, " \
	"  remote_addr, secret_id, http_status, state, last_error, " \
	"  attempts, applied_at, last_delivery_at, next_attempt_at) "
		p_insert = prepare_kept(
								"INSERT INTO biteship_webhook.events AS e "
								EVENT_COLUMNS
								"OVERRIDING SYSTEM VALUE "
								"VALUES ($17, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, "
								"        $13, $14, $15, $16, "
								"        CASE WHEN $14 = 'applied' THEN $3 END, $3, "
								"        CASE WHEN $14 = 'pending' THEN $3 END) "
								"ON CONFLICT DO NOTHING RETURNING id",
								17, types);
	}
	{
		Oid			types[17];

		for (int i = 0; i < 17; i++)
			types[i] = get_array_type(event_column_types[i]);

		/*
		 * The same, for a whole batch at once: one row per element of the
		 * arrays, inserted in the arrays' order (the batch's log order).
		 * The ids of the rows it inserted come back; what it did not insert
		 * is a redelivery, which insert_event() then records.
		 */
		p_insert_set = prepare_kept(
									"INSERT INTO biteship_webhook.events AS e "
									EVENT_COLUMNS
									"OVERRIDING SYSTEM VALUE "
									"SELECT u.id, u.webhook_id, u.environment, u.received_at, u.event, "
									"       u.order_id, u.payload, u.body_sha256, u.raw_body, u.body_size, "
									"       u.headers, u.remote_addr, u.secret_id, u.http_status, u.state, "
									"       u.last_error, u.attempts, "
									"       CASE WHEN u.state OPERATOR(pg_catalog.=) 'applied'::pg_catalog.text "
									"            THEN u.received_at END, "
									"       u.received_at, "
									"       CASE WHEN u.state OPERATOR(pg_catalog.=) 'pending'::pg_catalog.text "
									"            THEN u.received_at END "
									"  FROM ROWS FROM (" UNNEST17 ") WITH ORDINALITY "
									"       AS u(webhook_id, environment, received_at, event, order_id, "
									"            payload, body_sha256, raw_body, body_size, headers, "
									"            remote_addr, secret_id, http_status, state, last_error, "
									"            attempts, id, ord) "
									" ORDER BY u.ord "
									"ON CONFLICT DO NOTHING RETURNING id",
									17, types);
#undef EVENT_COLUMNS
	}
	{
		Oid			types[4] = {INT4OID, BYTEAOID, TIMESTAMPTZOID, TEXTOID};

		/*
		 * The original of a redelivery, found by the whole dedup key: the
		 * webhook, the first 8 characters of the order id and the digest
		 * (see events_dedup_idx).  On a 0.3.0 schema, whose index has no
		 * order column, the same condition is a filter on the index's hit.
		 */
		p_redelivery = prepare_kept(
									   "UPDATE biteship_webhook.events "
									   "   SET delivery_count = delivery_count + 1, "
									   "       last_delivery_at = GREATEST(last_delivery_at, $3) "
									   " WHERE webhook_id = $1 "
									   "   AND pg_catalog.substr(COALESCE(order_id, ''), 1, 8) COLLATE \"C\" "
									   "       OPERATOR(pg_catalog.=) pg_catalog.substr(COALESCE($4, ''), 1, 8) "
									   "   AND body_sha256 = $2 "
									   "   AND state <> 'rejected' "
									   "RETURNING id, state",
									   4, types);
	}
	{
		Oid			types[7] = {INT8OID, TEXTOID, TEXTOID, TEXTOID, INT4OID,
		INT4OID, FLOAT8OID};

		/*
		 * Record the outcome of an apply attempt.  $6 is 1 when this call
		 * made an attempt the row does not count yet.  A failed event below
		 * $5 attempts is scheduled for a retry after $7 * 2^(attempts - 1)
		 * seconds, at most an hour.  Only an applied event has applied_at.
		 * Every mixed-type expression is cast explicitly, so that no
		 * operator outside pg_catalog can ever match it better.
		 */
		p_outcome = prepare_kept(
								 "UPDATE biteship_webhook.events SET "
								 "  state = $2, last_error = $3, notes = $4, "
								 "  attempts = attempts + $6, "
								 "  applied_at = CASE WHEN $2 = 'applied' THEN pg_catalog.now() END, "
								 "  next_attempt_at = CASE WHEN $2 = 'failed' AND attempts + $6 < $5 "
								 "    THEN pg_catalog.clock_timestamp() + "
								 "         pg_catalog.make_interval(secs => "
								 "           LEAST(3600.0::pg_catalog.float8, "
								 "                 $7 * pg_catalog.power(2.0::pg_catalog.float8, "
								 "                      (attempts + $6 - 1)::pg_catalog.float8))) "
								 "    END "
								 "WHERE id = $1",
								 7, types);
	}
	{
		Oid			types[1] = {INT8OID};

		p_load = prepare_kept(
									   "SELECT e.payload, e.environment, e.state, e.received_at, "
									   "       w.name, w.events, e.event, e.order_id "
									   "  FROM biteship_webhook.events e "
									   "  LEFT JOIN biteship_webhook.webhooks w ON w.id = e.webhook_id "
									   " WHERE e.id = $1 FOR UPDATE OF e",
									   1, types);
	}
#define KEEP(col) "COALESCE(EXCLUDED." col ", o." col ")"
#define STATUS_COLUMNS \
	" (environment, order_id, status, courier_company, courier_type, " \
	"  courier_tracking_id, courier_waybill_id, courier_link, " \
	"  courier_driver_name, courier_driver_phone, " \
	"  courier_driver_photo_url, courier_driver_plate_number, " \
	"  order_price, status_updated_at, is_final, last_event_id) "
#define STATUS_UPSERT \
	"ON CONFLICT (environment, order_id) DO UPDATE SET " \
	"  status = " KEEP("status") ", " \
	"  courier_company = " KEEP("courier_company") ", " \
	"  courier_type = " KEEP("courier_type") ", " \
	"  courier_tracking_id = " KEEP("courier_tracking_id") ", " \
	"  courier_waybill_id = " KEEP("courier_waybill_id") ", " \
	"  courier_link = " KEEP("courier_link") ", " \
	"  courier_driver_name = " KEEP("courier_driver_name") ", " \
	"  courier_driver_phone = " KEEP("courier_driver_phone") ", " \
	"  courier_driver_photo_url = " KEEP("courier_driver_photo_url") ", " \
	"  courier_driver_plate_number = " KEEP("courier_driver_plate_number") ", " \
	"  order_price = " KEEP("order_price") ", " \
	"  status_updated_at = EXCLUDED.status_updated_at, " \
	"  is_final = CASE WHEN EXCLUDED.status IS NULL THEN o.is_final " \
	"                  ELSE EXCLUDED.is_final END, " \
	"  last_event_id = EXCLUDED.last_event_id, " \
	"  updated_at = pg_catalog.now() " \
	"WHERE (o.status_updated_at IS NULL " \
	"       OR o.status_updated_at <= EXCLUDED.status_updated_at) " \
	"  AND ROW(o.status, o.courier_company, o.courier_type, " \
	"          o.courier_tracking_id, o.courier_waybill_id, o.courier_link, " \
	"          o.courier_driver_name, o.courier_driver_phone, " \
	"          o.courier_driver_photo_url, o.courier_driver_plate_number, " \
	"          o.order_price) " \
	"      IS DISTINCT FROM " \
	"      ROW(" KEEP("status") ", " KEEP("courier_company") ", " \
	KEEP("courier_type") ", " KEEP("courier_tracking_id") ", " \
	KEEP("courier_waybill_id") ", " KEEP("courier_link") ", " \
	KEEP("courier_driver_name") ", " KEEP("courier_driver_phone") ", " \
	KEEP("courier_driver_photo_url") ", " \
	KEEP("courier_driver_plate_number") ", " KEEP("order_price") ")"
#define HISTORY_COLUMNS \
	" (environment, order_id, status, occurred_at, event_id, source, note) "
	{
		Oid			types[18];

		memcpy(types, status_column_types, sizeof(types));

		/*
		 * A status event: upsert the order, unless the stored state is
		 * newer, and record the status in the history either way.  One
		 * statement saves an executor start-up per event.
		 */
		p_status = prepare_kept(
								"WITH upsert AS ("
								"INSERT INTO biteship_webhook.orders AS o "
								STATUS_COLUMNS
								"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, "
								"        $13, $14, $15, $16) "
								STATUS_UPSERT
								") "
								"INSERT INTO biteship_webhook.order_status_history "
								HISTORY_COLUMNS
								"SELECT $1, $2, $3, $14, $16, $17, $18 WHERE $3 IS NOT NULL "
								"ON CONFLICT DO NOTHING",
								18, types);

		/*
		 * The same for many status events of distinct orders at once, one
		 * per element of the arrays.  The history rows are inserted first
		 * and the orders' upserts run when the statement finishes, so that
		 * for each order its history trigger fires before its orders
		 * trigger, as with the statement above.
		 */
		for (int i = 0; i < 18; i++)
			types[i] = get_array_type(status_column_types[i]);
		p_status_set = prepare_kept(
									"WITH v AS MATERIALIZED ("
									"  SELECT * FROM ROWS FROM (" UNNEST17 ", pg_catalog.unnest($18)) "
									"       WITH ORDINALITY AS v(environment, order_id, status, "
									"         courier_company, courier_type, courier_tracking_id, "
									"         courier_waybill_id, courier_link, courier_driver_name, "
									"         courier_driver_phone, courier_driver_photo_url, "
									"         courier_driver_plate_number, order_price, "
									"         status_updated_at, is_final, last_event_id, source, note, ord)), "
									"upsert AS ("
									"INSERT INTO biteship_webhook.orders AS o "
									STATUS_COLUMNS
									"SELECT v.environment, v.order_id, v.status, v.courier_company, "
									"       v.courier_type, v.courier_tracking_id, v.courier_waybill_id, "
									"       v.courier_link, v.courier_driver_name, v.courier_driver_phone, "
									"       v.courier_driver_photo_url, v.courier_driver_plate_number, "
									"       v.order_price, v.status_updated_at, v.is_final, v.last_event_id "
									"  FROM v ORDER BY v.ord "
									STATUS_UPSERT
									") "
									"INSERT INTO biteship_webhook.order_status_history "
									HISTORY_COLUMNS
									"SELECT v.environment, v.order_id, v.status, v.status_updated_at, "
									"       v.last_event_id, v.source, v.note "
									"  FROM v WHERE v.status IS NOT NULL ORDER BY v.ord "
									"ON CONFLICT DO NOTHING",
									18, types);
#undef STATUS_COLUMNS
#undef STATUS_UPSERT
#undef HISTORY_COLUMNS
	}
	{
		Oid			types[5] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, INT8OID};

		p_waybill = prepare_kept(
										   "INSERT INTO biteship_webhook.orders AS o "
										   " (environment, order_id, courier_tracking_id, courier_waybill_id, "
										   "  last_event_id) "
										   "VALUES ($1, $2, $3, $4, $5) "
										   "ON CONFLICT (environment, order_id) DO UPDATE SET "
										   "  courier_tracking_id = " KEEP("courier_tracking_id") ", "
										   "  courier_waybill_id = " KEEP("courier_waybill_id") ", "
										   "  last_event_id = EXCLUDED.last_event_id, "
										   "  updated_at = pg_catalog.now() "
										   "WHERE ROW(o.courier_tracking_id, o.courier_waybill_id) "
										   "      IS DISTINCT FROM "
										   "      ROW(" KEEP("courier_tracking_id") ", "
										   KEEP("courier_waybill_id") ")",
										   5, types);
	}
	{
		Oid			types[7] = {TEXTOID, TEXTOID, NUMERICOID, NUMERICOID,
		NUMERICOID, NUMERICOID, INT8OID};

		p_price = prepare_kept(
										 "INSERT INTO biteship_webhook.orders AS o "
										 " (environment, order_id, price, shipment_fee, "
										 "  cash_on_delivery_fee, proof_of_delivery_fee, last_event_id) "
										 "VALUES ($1, $2, $3, $4, $5, $6, $7) "
										 "ON CONFLICT (environment, order_id) DO UPDATE SET "
										 "  price = " KEEP("price") ", "
										 "  shipment_fee = " KEEP("shipment_fee") ", "
										 "  cash_on_delivery_fee = " KEEP("cash_on_delivery_fee") ", "
										 "  proof_of_delivery_fee = " KEEP("proof_of_delivery_fee") ", "
										 "  last_event_id = EXCLUDED.last_event_id, "
										 "  updated_at = pg_catalog.now() "
										 "WHERE ROW(o.price, o.shipment_fee, o.cash_on_delivery_fee, "
										 "          o.proof_of_delivery_fee) "
										 "      IS DISTINCT FROM "
										 "      ROW(" KEEP("price") ", " KEEP("shipment_fee") ", "
										 KEEP("cash_on_delivery_fee") ", "
										 KEEP("proof_of_delivery_fee") ")",
										 7, types);
#undef KEEP
	}
	{
		Oid			types[2] = {INT8OID, TEXTOID};

		/* an apply left for the dispatcher (the batch ran out of time or room) */
		p_defer = prepare_kept(
							   "UPDATE biteship_webhook.events SET "
							   "  state = 'pending', attempts = 0, applied_at = NULL, "
							   "  last_error = $2, "
							   "  next_attempt_at = pg_catalog.clock_timestamp() "
							   "WHERE id = $1",
							   2, types);
	}

	/* answers of Biteship's API (reconciliation) */
	{
		Oid			types[2] = {TEXTOID, TEXTOID};

		p_order_text = prepare_kept(
									"SELECT o::pg_catalog.text, o.status, o.updated_at "
									"  FROM biteship_webhook.orders o "
									" WHERE o.environment = $1 AND o.order_id = $2",
									2, types);
	}
	{
		Oid			types[4] = {TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID};

		/*
		 * Is a status already in the history at about this time?  The API
		 * gives whole seconds where webhooks give milliseconds.
		 */
		p_history_known = prepare_kept(
									   "SELECT 1 FROM biteship_webhook.order_status_history h "
									   " WHERE h.environment = $1 AND h.order_id = $2 AND h.status = $3 "
									   "   AND ($4 IS NULL OR "
									   "        (h.occurred_at > $4 OPERATOR(pg_catalog.-) '1 second'::pg_catalog.interval "
									   "         AND h.occurred_at < $4 OPERATOR(pg_catalog.+) '1 second'::pg_catalog.interval)) "
									   " LIMIT 1",
									   4, types);
	}
	{
		Oid			types[11] = {TEXTOID, TIMESTAMPTZOID, TEXTOID, JSONBOID,
			BYTEAOID, BYTEAOID, INT4OID, JSONBOID, INT2OID, TEXTOID, TEXTOID};

		/*
		 * An API answer, logged like a delivery of webhook 0.  The digest
		 * covers the environment, the order, the status and the body, so
		 * that fetching an unchanged order again only counts a delivery.
		 */
		p_insert_api = prepare_kept(
									"INSERT INTO biteship_webhook.events AS e "
									" (webhook_id, environment, received_at, event, order_id, "
									"  payload, body_sha256, raw_body, body_size, headers, "
									"  http_status, state, last_error, attempts, last_delivery_at) "
									"VALUES (0, $1, $2, 'api.order', $3, $4, $5, $6, $7, $8, $9, "
									"        $10, $11, 0, $2) "
									"ON CONFLICT DO NOTHING RETURNING id",
									11, types);
	}

	/* everything prepared: keep it all for the life of the process */
	if (SPI_keepplan(p_order_text) != 0 || SPI_keepplan(p_history_known) != 0 ||
		SPI_keepplan(p_insert_api) != 0 || SPI_keepplan(p_insert_set) != 0 ||
		SPI_keepplan(p_status_set) != 0)
		elog(ERROR, "SPI_keepplan failed");
	plan_insert_events = p_insert_set;
	plan_upsert_statuses = p_status_set;
	plan_order_text = p_order_text;
	plan_history_known = p_history_known;
	plan_insert_api_event = p_insert_api;
	if (SPI_keepplan(p_by_name) != 0 || SPI_keepplan(p_by_path) != 0 ||
		SPI_keepplan(p_insert) != 0 || SPI_keepplan(p_redelivery) != 0 ||
		SPI_keepplan(p_outcome) != 0 || SPI_keepplan(p_defer) != 0 ||
		SPI_keepplan(p_load) != 0 || SPI_keepplan(p_status) != 0 ||
		SPI_keepplan(p_waybill) != 0 || SPI_keepplan(p_price) != 0)
		elog(ERROR, "SPI_keepplan failed");
	plan_webhook_by_name = p_by_name;
	plan_webhook_by_path = p_by_path;
	plan_insert_event = p_insert;
	plan_redelivery = p_redelivery;
	plan_event_outcome = p_outcome;
	plan_event_defer = p_defer;
	plan_load_event = p_load;
	plan_upsert_status = p_status;
	plan_upsert_waybill = p_waybill;
	plan_upsert_price = p_price;
}

/*
 * SHA-256 of a byte string.
 */
void
bw_sha256(const void *data, size_t len, uint8 *digest)
{
	unsigned int dlen = BW_SHA256_LEN;

	if (EVP_Digest(data, len, digest, &dlen, EVP_sha256(), NULL) != 1 ||
		dlen != BW_SHA256_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not compute SHA-256 digest")));
}

/* Build a bytea datum from raw bytes. */
static Datum
bytes_datum(const void *data, size_t len)
{
	bytea	   *b = (bytea *) palloc(VARHDRSZ + len);

	SET_VARSIZE(b, VARHDRSZ + len);
	if (len > 0)
		memcpy(VARDATA(b), data, len);
	return PointerGetDatum(b);
}

/* Copy a text datum of an SPI result into a C string in context cxt. */
static char *
spi_text(HeapTuple tup, TupleDesc desc, int col, MemoryContext cxt)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);
	char	   *s;

	if (isnull)
		return NULL;
	s = TextDatumGetCString(d);
	return MemoryContextStrdup(cxt, s);
}

/*
 * Look up a webhook by name or by path, with its unexpired secrets.  The
 * result is allocated in the caller's memory context; NULL when there is no
 * such webhook.
 */
BwWebhook *
bw_lookup_webhook(const char *name, const char *path)
{
	MemoryContext callercxt = CurrentMemoryContext;
	BwWebhook  *wh = NULL;
	Datum		arg;
	int			ret;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	prepare_plans();

	arg = CStringGetTextDatum(name != NULL ? name : path);
	ret = SPI_execute_plan(name != NULL ? plan_webhook_by_name : plan_webhook_by_path,
						   &arg, NULL, true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "webhook look-up failed: %s", SPI_result_code_string(ret));

	if (SPI_processed > 0)
	{
		TupleDesc	desc = SPI_tuptable->tupdesc;
		HeapTuple	first = SPI_tuptable->vals[0];
		bool		isnull;
		ArrayType  *events;
		Datum	   *elems;
		bool	   *elemnulls;
		int			nelems;

		wh = MemoryContextAllocZero(callercxt, sizeof(BwWebhook));
		wh->id = DatumGetInt32(SPI_getbinval(first, desc, 1, &isnull));
		wh->name = spi_text(first, desc, 2, callercxt);
		wh->path = spi_text(first, desc, 3, callercxt);
		wh->environment = spi_text(first, desc, 4, callercxt);
		wh->signature_key = spi_text(first, desc, 6, callercxt);

		events = DatumGetArrayTypeP(SPI_getbinval(first, desc, 5, &isnull));
		deconstruct_array(events, TEXTOID, -1, false, TYPALIGN_INT,
						  &elems, &elemnulls, &nelems);
		wh->events = MemoryContextAlloc(callercxt, sizeof(char *) * Max(nelems, 1));
		for (int i = 0; i < nelems; i++)
		{
			if (elemnulls[i])
				continue;
			wh->events[wh->nevents++] =
				MemoryContextStrdup(callercxt, TextDatumGetCString(elems[i]));
		}

		wh->secret_ids = MemoryContextAlloc(callercxt, sizeof(int32) * SPI_processed);
		wh->secret_digests = MemoryContextAlloc(callercxt, BW_SHA256_LEN * SPI_processed);
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			Datum		id = SPI_getbinval(tup, desc, 7, &isnull);
			bytea	   *digest;

			if (isnull)
				continue;
			digest = DatumGetByteaPP(SPI_getbinval(tup, desc, 8, &isnull));
			if (VARSIZE_ANY_EXHDR(digest) != BW_SHA256_LEN)
				continue;
			wh->secret_ids[wh->nsecrets] = DatumGetInt32(id);
			memcpy(wh->secret_digests + BW_SHA256_LEN * wh->nsecrets,
				   VARDATA_ANY(digest), BW_SHA256_LEN);
			wh->nsecrets++;
		}
	}

	SPI_finish();
	return wh;
}

/*
 * Verify the signature header of a delivery against the webhook's secrets.
 * Every secret is compared, in constant time on SHA-256 digests, so that
 * neither the secret nor which one matched leaks through timing.  Returns
 * the matching secret's id, 0 when the webhook needs no signature, or -1
 * with *reason set when the delivery must be rejected.
 */
static int32
verify_signature(const BwDelivery *d, const char **reason)
{
	const BwWebhook *wh = d->webhook;
	const char *value = NULL;
	int			matched;

	if (wh->signature_key == NULL)
		return 0;

	for (int i = 0; i < d->nheaders; i++)
	{
		if (pg_strcasecmp(d->headers[i].name, wh->signature_key) == 0)
		{
			value = d->headers[i].value;
			break;
		}
	}
	if (value == NULL)
	{
		*reason = "signature header is missing";
		return -1;
	}

	matched = bw_verify_secret(value, wh->secret_digests, wh->nsecrets);
	if (matched < 0)
	{
		*reason = wh->nsecrets == 0 ?
			"webhook has a signature key but no valid secret" :
			"signature does not match";
		return -1;
	}
	return wh->secret_ids[matched];
}

/*
 * The request headers as a jsonb object with lower-cased names, the
 * signature header and credentials redacted.
 */
static Datum
headers_jsonb(const BwDelivery *d)
{
	JsonbParseState *state = NULL;
	JsonbValue *res;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	for (int i = 0; i < d->nheaders; i++)
	{
		JsonbValue	k,
					v;
		char	   *lname = asc_tolower(d->headers[i].name, strlen(d->headers[i].name));
		const char *value = bw_header_is_secret(lname, d->webhook->signature_key) ?
			"[redacted]" : d->headers[i].value;

		/* keep the log valid text even if a client sent raw bytes */
		if (!pg_verifymbstr(lname, strlen(lname), true) ||
			!pg_verifymbstr(value, strlen(value), true))
			continue;
		k.type = jbvString;
		k.val.string.val = lname;
		k.val.string.len = strlen(lname);
		v.type = jbvString;
		v.val.string.val = (char *) value;
		v.val.string.len = strlen(value);
		pushJsonbValue(&state, WJB_KEY, &k);
		pushJsonbValue(&state, WJB_VALUE, &v);
	}
	res = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	return JsonbPGetDatum(JsonbValueToJsonb(res));
}

/* Look up a top-level key of a jsonb object. */
static JsonbValue *
jb_get(Jsonb *jb, const char *key, JsonbValue *buf)
{
	if (jb == NULL || !JB_ROOT_IS_OBJECT(jb))
		return NULL;
	return getKeyJsonValueFromContainer(&jb->root, key, strlen(key), buf);
}

/*
 * A scalar field as a C string: strings as they are, numbers and booleans
 * in their text form.  NULL for null or missing; objects and arrays are
 * noted and become NULL.
 */
static char *
jb_text(Jsonb *jb, const char *key, StringInfo notes)
{
	JsonbValue	buf;
	JsonbValue *v = jb_get(jb, key, &buf);

	if (v == NULL)
		return NULL;
	switch (v->type)
	{
		case jbvString:
			return pnstrdup(v->val.string.val, v->val.string.len);
		case jbvNumeric:
			return DatumGetCString(DirectFunctionCall1(numeric_out,
													   NumericGetDatum(v->val.numeric)));
		case jbvBool:
			return pstrdup(v->val.boolean ? "true" : "false");
		case jbvNull:
			return NULL;
		default:
			appendStringInfo(notes, "%s%s: not a scalar, ignored",
							 notes->len > 0 ? "; " : "", key);
			return NULL;
	}
}

/*
 * A money field as a numeric datum.  Numbers sent as strings are accepted;
 * anything that does not parse becomes NULL with a note.
 */
static bool
jb_numeric(Jsonb *jb, const char *key, StringInfo notes, Datum *result)
{
	JsonbValue	buf;
	JsonbValue *v = jb_get(jb, key, &buf);
	char		num[64];

	if (v == NULL || v->type == jbvNull)
		return false;
	if (v->type == jbvNumeric)
	{
		*result = NumericGetDatum(v->val.numeric);
		return true;
	}
	if (v->type == jbvString &&
		bw_parse_decimal(v->val.string.val, v->val.string.len, num, sizeof(num)))
	{
		*result = DirectFunctionCall3(numeric_in, CStringGetDatum(num),
									  ObjectIdGetDatum(InvalidOid),
									  Int32GetDatum(-1));
		return true;
	}
	appendStringInfo(notes, "%s%s: not a number, stored as NULL",
					 notes->len > 0 ? "; " : "", key);
	return false;
}

/*
 * A timestamp field.  ISO-8601 with Z, an offset, or none (UTC), and any
 * fraction of a second.  Anything else becomes NULL with a note.
 */
static bool
jb_timestamp(Jsonb *jb, const char *key, StringInfo notes, TimestampTz *result)
{
	JsonbValue	buf;
	JsonbValue *v = jb_get(jb, key, &buf);
	int64		usec;

	if (v == NULL || v->type == jbvNull)
		return false;
	if (v->type == jbvString &&
		bw_parse_timestamp(v->val.string.val, v->val.string.len, &usec))
	{
		*result = usec -
			((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY);
		return true;
	}
	appendStringInfo(notes, "%s%s: not an ISO-8601 timestamp, ignored",
					 notes->len > 0 ? "; " : "", key);
	return false;
}

static BwEventKind
event_kind(const char *event)
{
	if (event == NULL)
		return BW_EVENT_UNKNOWN;
	for (int i = 0; i < lengthof(known_events); i++)
	{
		if (strcmp(event, known_events[i]) == 0)
			return (BwEventKind) i;
	}
	return BW_EVENT_UNKNOWN;
}

static bool
webhook_subscribes(char **events, int nevents, const char *event)
{
	for (int i = 0; i < nevents; i++)
	{
		if (strcmp(events[i], event) == 0)
			return true;
	}
	return false;
}

/*
 * Why an event is ignored, or NULL when it is to be applied.
 */
static const char *
ignore_reason(const char *event, char **events, int nevents)
{
	if (event == NULL)
		return "payload has no event name";
	if (event_kind(event) == BW_EVENT_UNKNOWN)
		return psprintf("unknown event \"%s\"", event);
	if (!webhook_subscribes(events, nevents, event))
		return psprintf("webhook is not subscribed to \"%s\"", event);
	return NULL;
}

/* Run a kept plan and insist on the expected result code. */
static void
exec_plan(SPIPlanPtr plan, Datum *values, const char *nulls, int expected)
{
	int			ret = SPI_execute_plan(plan, values, nulls, false, 0);

	if (ret != expected)
		elog(ERROR, "statement failed: %s", SPI_result_code_string(ret));
}

static inline Datum
text_or_null(const char *s, char *nullflag)
{
	if (s == NULL)
	{
		*nullflag = 'n';
		return (Datum) 0;
	}
	*nullflag = ' ';
	return CStringGetTextDatum(s);
}

/*
 * The notifications of a listener's batch, sent after its commit in a
 * transaction of their own (bw_notify_defer_*): the lock on the database
 * that NOTIFY takes when a transaction commits would otherwise be held by
 * one listener worker through its commit's WAL flush, and the workers
 * would commit one after another instead of together.
 */
static MemoryContext deferred_notify_cxt = NULL;
static List *deferred_notifies = NIL;
static bool notify_deferring = false;

/* Collect the notifications of the transaction that starts now. */
void
bw_notify_defer_begin(void)
{
	if (deferred_notify_cxt == NULL)
		deferred_notify_cxt = AllocSetContextCreate(TopMemoryContext,
													"biteship_webhook notifications",
													ALLOCSET_SMALL_SIZES);
	deferred_notifies = NIL;
	notify_deferring = true;
}

/* Forget what was collected: the transaction did not commit. */
void
bw_notify_defer_discard(void)
{
	notify_deferring = false;
	deferred_notifies = NIL;
	if (deferred_notify_cxt != NULL)
		MemoryContextReset(deferred_notify_cxt);
}

/*
 * Send what was collected, once the transaction committed, in a short
 * transaction of its own.  Must be called outside any transaction.  A
 * failure (the notification queue is full) is logged: the events are
 * committed and answered whatever happens to their notifications.
 *
 * That transaction commits without waiting for its WAL flush.  It writes
 * nothing but the notification queue, which a crash empties anyway, and
 * NOTIFY takes an XID, so with synchronous_commit on its commit record
 * would cost the worker a second flush per batch, with the next batch's
 * requests waiting behind it.
 */
void
bw_notify_defer_send(void)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	List	   *todo = deferred_notifies;

	notify_deferring = false;
	if (todo != NIL)
	{
		PG_TRY();
		{
			ListCell   *lc;

			StartTransactionCommand();
			(void) set_config_option("synchronous_commit", "off",
									 PGC_SUSET, PGC_S_SESSION,
									 GUC_ACTION_LOCAL, true, 0, false);
			foreach(lc, todo)
				Async_Notify(BW_NOTIFY_CHANNEL, (const char *) lfirst(lc));
			CommitTransactionCommand();
		}
		PG_CATCH();
		{
			MemoryContextSwitchTo(oldcxt);
			EmitErrorReport();
			FlushErrorState();
			AbortCurrentTransaction();
		}
		PG_END_TRY();
		MemoryContextSwitchTo(oldcxt);
	}
	bw_notify_defer_discard();
}

/* How many notifications are collected: a subtransaction's start mark. */
static int
notify_mark(void)
{
	return list_length(deferred_notifies);
}

/* A subtransaction rolled back: forget what it collected. */
static void
notify_rollback_to(int mark)
{
	if (list_length(deferred_notifies) > mark)
		deferred_notifies = list_truncate(deferred_notifies, mark);
}

/*
 * Send the NOTIFY that tells listening applications an event was applied,
 * or collect it for after the commit.
 */
static void
notify_applied(int64 event_id, const char *webhook, const char *environment,
			   const char *event, const char *order_id, const char *status)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"event_id\":" INT64_FORMAT ",\"webhook\":", event_id);
	escape_json(&buf, webhook != NULL ? webhook : "");
	appendStringInfoString(&buf, ",\"environment\":");
	escape_json(&buf, environment);
	appendStringInfoString(&buf, ",\"event\":");
	escape_json(&buf, event);
	appendStringInfoString(&buf, ",\"order_id\":");
	escape_json(&buf, order_id);
	appendStringInfoString(&buf, ",\"status\":");
	if (status != NULL)
		escape_json(&buf, status);
	else
		appendStringInfoString(&buf, "null");
	appendStringInfoChar(&buf, '}');
	if (notify_deferring)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(deferred_notify_cxt);

		deferred_notifies = lappend(deferred_notifies, pstrdup(buf.data));
		MemoryContextSwitchTo(oldcxt);
	}
	else
		Async_Notify(BW_NOTIFY_CHANNEL, buf.data);
}

/*
 * Lock an order for the rest of the transaction, before anything of it is
 * written.  Every apply path takes these locks, and a batch takes them in
 * its (environment, order id) order, so that two workers cannot deadlock
 * on an order's rows: a set-based statement writes the history rows of its
 * orders before their orders rows.  An advisory lock of our own space
 * (field 4 of the tag is 3, which SQL's advisory lock functions never use)
 * on a 64-bit hash of the order's key; pg_locks shows it as an advisory
 * lock with objsubid 3.
 */
static void
lock_order(const char *environment, const char *order_id)
{
	size_t		el = strlen(environment);
	size_t		ol = strlen(order_id);
	char	   *key = palloc(el + ol + 1);
	uint64		h;
	LOCKTAG		tag;

	memcpy(key, environment, el);
	key[el] = '\0';
	memcpy(key + el + 1, order_id, ol);
	h = hash_bytes_extended((const unsigned char *) key, el + 1 + ol, 0);
	pfree(key);
	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) (h >> 32), (uint32) h, 3);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
}

/*
 * A payload mapped onto the parameters of its apply statement.
 */
typedef struct MappedEvent
{
	BwEventKind kind;
	char	   *event;
	char	   *order_id;
	bool		have_status;
	char		status[BW_STATUS_MAXLEN + 1];
	Datum		values[18];
	char		nulls[18];
} MappedEvent;

/*
 * Map one verified, parsed payload onto the parameters of the statement
 * that applies it to orders and the status history.  Raises an ERROR when
 * the payload cannot be applied.  Notes about values that could not be
 * parsed are appended to notes.
 */
static void
map_payload(int64 event_id, const char *environment, Jsonb *payload,
			TimestampTz received_at, const char *source, StringInfo notes,
			MappedEvent *m)
{
	char	   *raw_status;
	Datum	   *values = m->values;
	char	   *nulls = m->nulls;
	int			i;

	m->event = jb_text(payload, "event", notes);
	m->order_id = jb_text(payload, "order_id", notes);
	raw_status = jb_text(payload, "status", notes);
	m->have_status = false;
	m->kind = event_kind(m->event);

	if (m->order_id == NULL || m->order_id[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_NOT_NULL_VIOLATION),
				 errmsg("payload has no order_id")));
	if (strlen(m->order_id) > BW_ORDER_ID_MAXLEN)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("order_id is longer than %d characters", BW_ORDER_ID_MAXLEN)));

	if (raw_status != NULL && raw_status[0] != '\0')
	{
		bw_normalize_status(raw_status, strlen(raw_status), m->status, sizeof(m->status));
		m->have_status = true;
	}

	memset(nulls, ' ', sizeof(m->nulls));
	values[0] = CStringGetTextDatum(environment);
	values[1] = CStringGetTextDatum(m->order_id);

	switch (m->kind)
	{
		case BW_EVENT_STATUS:
			{
				static const char *const fields[] = {
					"courier_company", "courier_type", "courier_tracking_id",
					"courier_waybill_id", "courier_link", "courier_driver_name",
					"courier_driver_phone", "courier_driver_photo_url",
					"courier_driver_plate_number"
				};
				TimestampTz occurred_at;

				if (!jb_timestamp(payload, "updated_at", notes, &occurred_at))
					occurred_at = received_at;

				values[2] = text_or_null(m->have_status ? m->status : NULL, &nulls[2]);
				for (i = 0; i < lengthof(fields); i++)
					values[3 + i] = text_or_null(jb_text(payload, fields[i], notes),
												 &nulls[3 + i]);
				if (!jb_numeric(payload, "order_price", notes, &values[12]))
					nulls[12] = 'n';
				values[13] = TimestampTzGetDatum(occurred_at);
				values[14] = BoolGetDatum(m->have_status && bw_status_is_final(m->status));
				values[15] = Int64GetDatum(event_id);
				values[16] = CStringGetTextDatum(source);
				values[17] = text_or_null(notes->len > 0 ? notes->data : NULL,
										  &nulls[17]);

				if (!m->have_status)
					appendStringInfo(notes, "%sstatus: missing, order status unchanged",
									 notes->len > 0 ? "; " : "");
				break;
			}
		case BW_EVENT_WAYBILL:
			values[2] = text_or_null(jb_text(payload, "courier_tracking_id", notes), &nulls[2]);
			values[3] = text_or_null(jb_text(payload, "courier_waybill_id", notes), &nulls[3]);
			values[4] = Int64GetDatum(event_id);
			break;
		case BW_EVENT_PRICE:
			{
				static const char *const fields[] = {
					"price", "shippment_fee", "cash_on_delivery_fee",
					"proof_of_delivery_fee"
				};

				for (i = 0; i < lengthof(fields); i++)
				{
					if (!jb_numeric(payload, fields[i], notes, &values[2 + i]))
						nulls[2 + i] = 'n';
				}
				/* tolerate the correct spelling too */
				if (nulls[3] == 'n' &&
					jb_numeric(payload, "shipment_fee", notes, &values[3]))
					nulls[3] = ' ';
				values[6] = Int64GetDatum(event_id);
				break;
			}
		case BW_EVENT_UNKNOWN:
			/* callers filter these out first */
			elog(ERROR, "cannot apply unknown event \"%s\"", m->event ? m->event : "");
	}
}

/* Apply one mapped event with its own statement. */
static void
exec_mapped(MappedEvent *m)
{
	switch (m->kind)
	{
		case BW_EVENT_STATUS:
			/* one statement: the orders upsert and the history row */
			exec_plan(plan_upsert_status, m->values, m->nulls, SPI_OK_INSERT);
			break;
		case BW_EVENT_WAYBILL:
			exec_plan(plan_upsert_waybill, m->values, m->nulls, SPI_OK_INSERT);
			break;
		case BW_EVENT_PRICE:
			exec_plan(plan_upsert_price, m->values, m->nulls, SPI_OK_INSERT);
			break;
		case BW_EVENT_UNKNOWN:
			elog(ERROR, "cannot apply unknown event");
	}
}

/*
 * Map one verified, parsed payload onto orders and the status history.
 * Raises an ERROR when the payload cannot be applied; the caller runs this
 * in a subtransaction.  Notes about values that could not be parsed are
 * appended to notes.
 */
static void
apply_payload(int64 event_id, const char *webhook, const char *environment,
			  Jsonb *payload, TimestampTz received_at, const char *source,
			  StringInfo notes, char **event_out, char **order_id_out)
{
	MappedEvent m;

	map_payload(event_id, environment, payload, received_at, source, notes, &m);
	lock_order(environment, m.order_id);
	exec_mapped(&m);
	*event_out = m.event;
	*order_id_out = m.order_id;
	notify_applied(event_id, webhook, environment, m.event, m.order_id,
				   m.have_status ? m.status : NULL);
}

/*
 * What applying an API answer did, for the caller and the metrics.
 */
typedef struct ApiApplyResult
{
	bool		existed;		/* the order was known before */
	bool		changed;		/* orders changed, or history grew */
	int			history_added;
	char	   *status;			/* the order's status after the apply */
} ApiApplyResult;

/* A numeric datum from an API number lexeme, or false (with a note). */
static bool
api_numeric(const char *lexeme, const char *field, StringInfo notes, Datum *result)
{
	char		num[64];

	if (lexeme == NULL)
		return false;
	if (bw_parse_decimal(lexeme, strlen(lexeme), num, sizeof(num)))
	{
		*result = DirectFunctionCall3(numeric_in, CStringGetDatum(num),
									  ObjectIdGetDatum(InvalidOid),
									  Int32GetDatum(-1));
		return true;
	}
	appendStringInfo(notes, "%s%s: not a number, ignored",
					 notes->len > 0 ? "; " : "", field);
	return false;
}

static bool
api_timestamp(const char *s, TimestampTz *result)
{
	int64		usec;

	if (s == NULL || !bw_parse_timestamp(s, strlen(s), &usec))
		return false;
	*result = usec -
		((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY);
	return true;
}

/* A string of an API answer (UTF-8) in the server's encoding, or NULL. */
static char *
api_str(const char *s)
{
	if (s == NULL)
		return NULL;
	return pg_any_to_server(s, strlen(s), PG_UTF8);
}

/* The order as it is: its text (to compare), status and times. */
typedef struct OrderNow
{
	char	   *text;			/* NULL: no row */
	char	   *status;
	TimestampTz updated_at;
} OrderNow;

static void
order_now(const char *environment, const char *order_id, OrderNow *now)
{
	Datum		values[2];
	bool		isnull;
	HeapTuple	t;
	TupleDesc	d;

	memset(now, 0, sizeof(*now));
	values[0] = CStringGetTextDatum(environment);
	values[1] = CStringGetTextDatum(order_id);
	exec_plan(plan_order_text, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return;
	t = SPI_tuptable->vals[0];
	d = SPI_tuptable->tupdesc;
	now->text = TextDatumGetCString(SPI_getbinval(t, d, 1, &isnull));
	now->status = SPI_getvalue(t, d, 2);
	now->updated_at = DatumGetTimestampTz(SPI_getbinval(t, d, 3, &isnull));
}

/* Is the status in the order's history (at about t, or ever when t = 0)? */
static bool
history_has(const char *environment, const char *order_id, const char *status,
			TimestampTz t)
{
	Datum		kv[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};

	kv[0] = CStringGetTextDatum(environment);
	kv[1] = CStringGetTextDatum(order_id);
	kv[2] = CStringGetTextDatum(status);
	if (t != 0)
		kv[3] = TimestampTzGetDatum(t);
	else
	{
		kv[3] = (Datum) 0;
		nulls[3] = 'n';
	}
	exec_plan(plan_history_known, kv, nulls, SPI_OK_SELECT);
	return SPI_processed > 0;
}

/* One status of the API's answer through the webhooks' status upsert. */
static int
api_upsert_status(int64 event_id, const char *environment, const char *order_id,
				  const BwApiOrder *o, const char *status, TimestampTz occurred_at,
				  const char *note, bool with_fields, StringInfo notes)
{
	const char *fields[9] = {NULL};
	Datum		values[18];
	char		nulls[18];

	memset(nulls, ' ', sizeof(nulls));
	if (with_fields)
	{
		fields[0] = o->courier_company;
		fields[1] = o->courier_type;
		fields[2] = o->courier_tracking_id;
		fields[3] = o->courier_waybill_id;
		fields[4] = o->courier_link;
		fields[5] = o->courier_driver_name;
		fields[6] = o->courier_driver_phone;
		fields[7] = o->courier_driver_photo_url;
		fields[8] = o->courier_driver_plate_number;
	}
	values[0] = CStringGetTextDatum(environment);
	values[1] = CStringGetTextDatum(order_id);
	values[2] = CStringGetTextDatum(status);
	for (int i = 0; i < 9; i++)
		values[3 + i] = text_or_null(api_str(fields[i]), &nulls[3 + i]);
	nulls[12] = 'n';			/* order_price: webhooks only */
	values[12] = (Datum) 0;
	values[13] = TimestampTzGetDatum(occurred_at);
	values[14] = BoolGetDatum(bw_status_is_final(status));
	values[15] = Int64GetDatum(event_id);
	values[16] = CStringGetTextDatum("api");
	values[17] = text_or_null(api_str(note), &nulls[17]);
	exec_plan(plan_upsert_status, values, nulls, SPI_OK_INSERT);
	return (int) SPI_processed;
}

/*
 * Map an answer of GET /v1/orders/{id} onto orders and the history, with
 * the statements webhooks use and under the same ordering rules:
 *
 *	- every courier.history[] entry, oldest first, that the history does not
 *	  have yet (same status within a second), goes through the status
 *	  upsert, as the order.status webhook it stands for would have: a late
 *	  one lands only in the history, a newer one moves the order, and
 *	  application triggers fire once per real change, in order;
 *	- the top-level status, when neither the order nor its history has it:
 *	  just after the newest entry, or (without a usable history) only for
 *	  an order that has no status yet, so that a lagging answer can never
 *	  move an order back;
 *	- the waybill and tracking ids, and the prices, as the order.waybill_id
 *	  and order.price webhooks would, unless the order changed after the
 *	  answer was fetched (a late retry must not undo newer webhooks).
 *
 * Runs in the apply's subtransaction, as the apply role.
 */
static void
apply_api_order(int64 event_id, const char *environment, const char *order_id,
				const BwApiOrder *o, TimestampTz fetched_at, StringInfo notes,
				ApiApplyResult *res)
{
	OrderNow	before;
	OrderNow	after;
	char		status[BW_STATUS_MAXLEN + 1];
	char		top[BW_STATUS_MAXLEN + 1];
	bool		have_top = false;
	int			last = -1;
	TimestampTz *times = palloc0(sizeof(TimestampTz) * Max(o->nhistory, 1));
	int		   *order = palloc(sizeof(int) * Max(o->nhistory, 1));
	int			nusable = 0;
	bool		fresh;

	lock_order(environment, order_id);
	order_now(environment, order_id, &before);
	res->existed = before.text != NULL;
	res->history_added = 0;
	/* the answer is at least as new as what the order has */
	fresh = before.text == NULL || before.updated_at <= fetched_at;

	if (o->status != NULL && o->status[0] != '\0')
	{
		bw_normalize_status(o->status, strlen(o->status), top, sizeof(top));
		have_top = true;
	}

	/* the usable entries, by time (a stable insertion sort: they are few) */
	for (int i = 0; i < o->nhistory; i++)
	{
		const BwApiHistory *h = &o->history[i];

		if (h->status == NULL || h->status[0] == '\0')
		{
			appendStringInfo(notes, "%shistory[%d]: no status, ignored",
							 notes->len > 0 ? "; " : "", i);
			continue;
		}
		if (!api_timestamp(h->updated_at, &times[i]))
		{
			appendStringInfo(notes, "%shistory[%d]: no ISO-8601 updated_at, ignored",
							 notes->len > 0 ? "; " : "", i);
			continue;
		}
		{
			int			j = nusable++;

			while (j > 0 && times[order[j - 1]] > times[i])
			{
				order[j] = order[j - 1];
				j--;
			}
			order[j] = i;
		}
	}
	if (nusable > 0)
		last = order[nusable - 1];

	for (int k = 0; k < nusable; k++)
	{
		int			i = order[k];
		const BwApiHistory *h = &o->history[i];
		char	   *st;

		bw_normalize_status(h->status, strlen(h->status), status, sizeof(status));
		st = api_str(status);
		if (history_has(environment, order_id, st, times[i]))
			continue;			/* a webhook (or an earlier sync) had it */
		res->history_added +=
			api_upsert_status(event_id, environment, order_id, o, st, times[i],
							  h->note, i == last && fresh, notes);
	}

	/* the top-level status, when nothing has it yet */
	if (have_top)
	{
		char	   *st = api_str(top);
		char		last_norm[BW_STATUS_MAXLEN + 1] = "";

		if (last >= 0)
			bw_normalize_status(o->history[last].status, strlen(o->history[last].status),
								last_norm, sizeof(last_norm));
		if (last >= 0 && strcmp(last_norm, top) == 0)
			;					/* the newest entry is it */
		else if (before.status != NULL && strcmp(before.status, st) == 0)
			;
		else if (history_has(environment, order_id, st, 0))
			;
		else if (last >= 0)
			res->history_added +=
				api_upsert_status(event_id, environment, order_id, o, st,
								  times[last] + 1000, NULL, fresh, notes);
		else if (before.status == NULL)
			res->history_added +=
				api_upsert_status(event_id, environment, order_id, o, st, fetched_at,
								  NULL, fresh, notes);
		else
			appendStringInfo(notes, "%sstatus \"%s\": no time to order it by, order status unchanged",
							 notes->len > 0 ? "; " : "", top);
	}

	if (!fresh)
		appendStringInfo(notes, "%sthe order changed after this answer was fetched: waybill and prices not applied",
						 notes->len > 0 ? "; " : "");

	/* the waybill and tracking ids, as order.waybill_id would */
	if (fresh && (o->courier_tracking_id != NULL || o->courier_waybill_id != NULL))
	{
		Datum		values[5];
		char		nulls[5] = {' ', ' ', ' ', ' ', ' '};

		values[0] = CStringGetTextDatum(environment);
		values[1] = CStringGetTextDatum(order_id);
		values[2] = text_or_null(api_str(o->courier_tracking_id), &nulls[2]);
		values[3] = text_or_null(api_str(o->courier_waybill_id), &nulls[3]);
		values[4] = Int64GetDatum(event_id);
		exec_plan(plan_upsert_waybill, values, nulls, SPI_OK_INSERT);
	}

	/* the prices, as order.price would */
	if (fresh)
	{
		Datum		values[7];
		char		nulls[7] = {' ', ' ', 'n', 'n', 'n', 'n', ' '};
		bool		any = false;

		values[0] = CStringGetTextDatum(environment);
		values[1] = CStringGetTextDatum(order_id);
		if (api_numeric(o->price, "price", notes, &values[2]))
			nulls[2] = ' ', any = true;
		if (api_numeric(o->shipment_fee, "courier.shipment_fee", notes, &values[3]))
			nulls[3] = ' ', any = true;
		if (api_numeric(o->cash_on_delivery_fee, "destination.cash_on_delivery.fee", notes, &values[4]))
			nulls[4] = ' ', any = true;
		if (api_numeric(o->proof_of_delivery_fee, "destination.proof_of_delivery.fee", notes, &values[5]))
			nulls[5] = ' ', any = true;
		values[6] = Int64GetDatum(event_id);
		if (any)
			exec_plan(plan_upsert_price, values, nulls, SPI_OK_INSERT);
	}

	if (o->nbad > 0)
		appendStringInfo(notes, "%s%d field(s) of an unexpected type, ignored",
						 notes->len > 0 ? "; " : "", o->nbad);

	order_now(environment, order_id, &after);
	res->changed = res->history_added > 0 ||
		(after.text != NULL && (before.text == NULL || strcmp(before.text, after.text) != 0));
	res->status = after.status;
	if (res->changed)
		notify_applied(event_id, NULL, environment, "order.status", order_id,
					   res->status);
}

/*
 * The payload forwarded for an API answer that changed an order: the shape
 * of an order.status webhook, built from the answer, marked "source": "api".
 */
static Jsonb *
api_forward_payload(const char *order_id, const BwApiOrder *o, const char *status)
{
	StringInfoData b;
	const struct
	{
		const char *key;
		const char *value;
	}			f[] = {
		{"courier_tracking_id", o->courier_tracking_id},
		{"courier_waybill_id", o->courier_waybill_id},
		{"courier_company", o->courier_company},
		{"courier_type", o->courier_type},
		{"courier_driver_name", o->courier_driver_name},
		{"courier_driver_phone", o->courier_driver_phone},
		{"courier_driver_photo_url", o->courier_driver_photo_url},
		{"courier_driver_plate_number", o->courier_driver_plate_number},
		{"courier_link", o->courier_link},
		{"status", status},
	};

	initStringInfo(&b);
	appendStringInfoString(&b, "{\"event\": \"order.status\", \"source\": \"api\", \"order_id\": ");
	escape_json(&b, order_id);
	for (int i = 0; i < lengthof(f); i++)
	{
		appendStringInfo(&b, ", \"%s\": ", f[i].key);
		if (f[i].value != NULL)
			escape_json(&b, f[i].key[0] == 's' ? f[i].value : api_str(f[i].value));
		else
			appendStringInfoString(&b, "null");
	}
	appendStringInfoChar(&b, '}');
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(b.data)));
}

/*
 * The role that application code runs as: biteship_webhook.apply_role, or
 * the current user when the setting is empty.  InvalidOid (or an ERROR,
 * unless missing_ok) when the named role does not exist.
 */
Oid
bw_apply_role_oid(bool missing_ok)
{
	Oid			role;

	if (bw_apply_role == NULL || bw_apply_role[0] == '\0')
		return GetUserId();
	role = get_role_oid(bw_apply_role, true);
	if (!OidIsValid(role) && !missing_ok)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("apply role \"%s\" does not exist", bw_apply_role),
				 errdetail("biteship_webhook.apply_role names the role that applies events and runs application triggers."),
				 errhint("Create the role, or point biteship_webhook.apply_role at an existing non-superuser role.")));
	return role;
}

/* Handler of the apply timeout: cancel whatever runs, and say why. */
static void
apply_timeout_handler(void)
{
	apply_deadline_passed = true;
	InterruptPending = true;
	QueryCancelPending = true;
	SetLatch(MyLatch);
}

/*
 * Arm the apply deadline of a batch: biteship_webhook.apply_timeout, or the
 * session's statement_timeout (from the database or role) when that is
 * shorter.  When it passes, the apply in progress is cancelled and marked
 * failed, and the batch applies nothing more (see bw_apply_room).
 */
void
bw_apply_deadline_arm(void)
{
	int			ms = bw_apply_timeout;

	if (StatementTimeout > 0 && (ms <= 0 || StatementTimeout < ms))
		ms = StatementTimeout;
	apply_deadline_passed = false;
	if (ms <= 0)
		return;
	if (apply_timeout_id == MAX_TIMEOUTS)
		apply_timeout_id = RegisterTimeout(USER_TIMEOUT, apply_timeout_handler);
	enable_timeout_after(apply_timeout_id, ms);
}

void
bw_apply_deadline_disarm(void)
{
	if (apply_timeout_id != MAX_TIMEOUTS)
		disable_timeout(apply_timeout_id, false);
}

bool
bw_apply_deadline_passed(void)
{
	return apply_deadline_passed;
}

/*
 * Is there room in this transaction for one more apply?  Not once the
 * deadline has passed, nor when another subtransaction with an xid could
 * overflow the backend's cache of subtransaction ids: from then on every
 * snapshot in the cluster would have to look in pg_subtrans.  What is left
 * goes to the dispatcher (bw_ingest_defer), which has room of its own.
 */
bool
bw_apply_room(void)
{
	if (apply_deadline_passed)
	{
		/* a cancel still pending is the deadline's: it has been honoured */
		QueryCancelPending = false;
		return false;
	}
	return !MyProc->subxidStatus.overflowed &&
		MyProc->subxidStatus.count < PGPROC_MAX_CACHED_SUBXIDS - 1;
}

/*
 * Is this error a cancel the process was asked for: a signal (the worker's
 * shutdown, pg_cancel_backend()) or the apply deadline?  Those are raised
 * by ProcessInterrupts().  Application code that raises SQLSTATE 57014
 * itself (RAISE ... USING ERRCODE = 'query_canceled') is not one: its
 * error fails its event like any other, and must not abort the batch.
 */
static bool
is_interrupt_cancel(const ErrorData *edata)
{
	return edata->sqlerrcode == ERRCODE_QUERY_CANCELED &&
		edata->funcname != NULL &&
		strcmp(edata->funcname, "ProcessInterrupts") == 0;
}

/*
 * In the PG_CATCH of an apply's subtransaction: take the error, roll the
 * subtransaction back (and the notifications it collected, from mark on),
 * and restore the caller's memory context, resource owner and interrupt
 * holdoff (an ERROR resets the count; a listener holding interrupts for its
 * batch keeps them held).  A query cancel that is not the apply deadline is
 * re-thrown; anything else is returned, in the caller's context.
 */
static ErrorData *
rollback_apply(MemoryContext oldcontext, ResourceOwner oldowner,
			   uint32 save_holdoff, int mark)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(oldcontext);
	edata = CopyErrorData();
	FlushErrorState();
	RollbackAndReleaseCurrentSubTransaction();
	notify_rollback_to(mark);
	MemoryContextSwitchTo(oldcontext);
	CurrentResourceOwner = oldowner;
	InterruptHoldoffCount = save_holdoff;

	if (is_interrupt_cancel(edata) && !apply_deadline_passed)
		ReThrowError(edata);
	return edata;
}

/*
 * Apply a payload in a subtransaction of its own.  Returns NULL on success,
 * or the error message (in the caller's context) after rolling back only
 * the subtransaction.  A query cancel is not swallowed, it is re-thrown,
 * unless it is the apply deadline: that fails only this event.
 *
 * Application code (triggers on orders and the history, and whatever they
 * call) runs here, so the apply runs as the apply role in a
 * security-restricted operation, the way PostgreSQL runs maintenance
 * commands as the table owner: it can neither change roles nor leave
 * anything behind in the session.  Abort restores the user and security
 * context of the subtransaction's start.
 */
static char *
apply_in_subxact(int64 event_id, const char *webhook, const char *environment,
				 Jsonb *payload, TimestampTz received_at, const char *source,
				 StringInfo notes, const BwApiOrder *api, const char *api_order_id,
				 ApiApplyResult *ares)
{
	MemoryContext oldcontext = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	uint32		save_holdoff = InterruptHoldoffCount;
	char	   *volatile error = NULL;
	int			mark = notify_mark();

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcontext);

	PG_TRY();
	{
		Oid			save_userid;
		int			save_sec_context;
		int			save_nestlevel;
		char	   *event = NULL;
		char	   *order_id = NULL;
		Jsonb	   *forward;

		GetUserIdAndSecContext(&save_userid, &save_sec_context);
		SetUserIdAndSecContext(bw_apply_role_oid(false),
							   save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
							   SECURITY_RESTRICTED_OPERATION);
		save_nestlevel = NewGUCNestLevel();
		forward = payload;
		if (api != NULL)
		{
			apply_api_order(event_id, environment, api_order_id, api,
							received_at, notes, ares);
			if (ares->changed && ares->status != NULL)
			{
				event = "order.status";
				order_id = (char *) api_order_id;
				forward = api_forward_payload(api_order_id, api, ares->status);
			}
		}
		else
			apply_payload(event_id, webhook, environment, payload, received_at,
						  source, notes, &event, &order_id);
		AtEOXact_GUC(false, save_nestlevel);
		SetUserIdAndSecContext(save_userid, save_sec_context);

		/* in the same subtransaction, with our own rights: forwarding */
		if (bw_after_apply_hook != NULL && event != NULL)
			bw_after_apply_hook(event_id, webhook, environment, event,
								order_id, forward);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData  *edata = rollback_apply(oldcontext, oldowner, save_holdoff, mark);

		if (is_interrupt_cancel(edata))
			error = psprintf("apply did not finish within the apply timeout (%d ms)",
							 bw_apply_timeout > 0 && (StatementTimeout <= 0 ||
													  bw_apply_timeout < StatementTimeout) ?
							 bw_apply_timeout : StatementTimeout);
		else if (edata->detail != NULL)
			error = psprintf("%s (%s)", edata->message, edata->detail);
		else
			error = pstrdup(edata->message);
		FreeErrorData(edata);
	}
	PG_END_TRY();

	return error;
}

/*
 * Parse the body into jsonb, in a subtransaction, so that no input can do
 * more than produce an error message.  Returns NULL and sets *error when
 * the body is not valid JSON in a valid encoding.
 */
static Jsonb *
parse_body(const char *body, size_t len, char **error)
{
	MemoryContext oldcontext = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	uint32		save_holdoff = InterruptHoldoffCount;
	Jsonb	   *volatile result = NULL;

	if (memchr(body, '\0', len) != NULL)
	{
		*error = pstrdup("body contains a NUL byte");
		return NULL;
	}
	if (!pg_verify_mbstr(PG_UTF8, body, len, true))
	{
		*error = pstrdup("body is not valid UTF-8");
		return NULL;
	}

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcontext);

	PG_TRY();
	{
		char	   *text = pg_any_to_server(body, len, PG_UTF8);

		if (text == body)
			text = pnstrdup(body, len);
		result = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text)));
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcontext);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;

		/*
		 * An ERROR resets the interrupt holdoff count; restore the caller's,
		 * so that a listener holding interrupts for its batch keeps them held.
		 */
		InterruptHoldoffCount = save_holdoff;

		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
			ReThrowError(edata);
		*error = psprintf("body is not valid JSON: %s", edata->message);
		FreeErrorData(edata);
		result = NULL;
	}
	PG_END_TRY();

	return result;
}

/*
 * What the log phase stores for one delivery, between its classification
 * and its answer.
 */
typedef struct LogRow
{
	BwDelivery *d;
	bool		store;			/* false: answered, but not logged */
	char	   *event;
	char	   *order_id;
	Jsonb	   *payload;
	bool		keep_raw;		/* keep (a bounded prefix of) the raw body */
	int32		secret_id;
	const char *state;
	const char *last_error;		/* events.last_error */
	char	   *error;			/* the answer's error, or NULL */
	int			attempts;
	int64		id;				/* > 0 logged; < 0 a redelivery of -id */
	const char *existing_state; /* a redelivery's original's state */
} LogRow;

/* The parameters of plan_insert_event for one row. */
static void
event_values(const LogRow *r, Datum *values, char *nulls)
{
	const BwDelivery *d = r->d;
	size_t		raw_len = d->body_len;

	memset(nulls, ' ', 17);
	values[0] = Int32GetDatum(d->webhook->id);
	values[1] = CStringGetTextDatum(d->webhook->environment);
	values[2] = TimestampTzGetDatum(d->received_at);
	values[3] = text_or_null(r->event, &nulls[3]);
	values[4] = text_or_null(r->order_id, &nulls[4]);
	if (r->payload != NULL)
		values[5] = JsonbPGetDatum(r->payload);
	else
		nulls[5] = 'n';
	values[6] = bytes_datum(d->digest, BW_SHA256_LEN);
	if (r->keep_raw)
	{
		if (raw_len > (size_t) bw_rejected_body_limit)
			raw_len = bw_rejected_body_limit;
		values[7] = bytes_datum(d->body, raw_len);
	}
	else
		nulls[7] = 'n';
	values[8] = Int32GetDatum((int32) Min(d->body_len, PG_INT32_MAX));
	values[9] = headers_jsonb(d);
	if (d->remote_addr != NULL)
		values[10] = DirectFunctionCall1(inet_in, CStringGetDatum(d->remote_addr));
	else
		nulls[10] = 'n';
	if (r->secret_id > 0)
		values[11] = Int32GetDatum(r->secret_id);
	else
		nulls[11] = 'n';
	values[12] = Int16GetDatum((int16) d->http_status);
	values[13] = CStringGetTextDatum(r->state);
	values[14] = text_or_null(r->last_error, &nulls[14]);
	values[15] = Int32GetDatum(r->attempts);
	values[16] = Int64GetDatum(d->reserved_id);
}

/*
 * Insert one event row: r->id becomes its id, or minus the id of the event
 * with the same body for this webhook (then r->existing_state describes it
 * and its delivery count has been bumped).
 */
static void
insert_event(LogRow *r)
{
	Datum		values[17];
	char		nulls[17];
	int			ret;

	event_values(r, values, nulls);

	/*
	 * Insert, or bump the original of a redelivery.  The original can vanish
	 * between the two statements (the retention purge deleted it): then the
	 * body is new again and the insert is retried.  Each statement takes a
	 * fresh snapshot, so the loop ends within a round or two.
	 */
	for (int round = 0;; round++)
	{
		Datum		uv[4];
		bool		isnull;

		ret = SPI_execute_plan(plan_insert_event, values, nulls, false, 0);
		if (ret != SPI_OK_INSERT_RETURNING)
			elog(ERROR, "could not insert event: %s", SPI_result_code_string(ret));
		if (SPI_processed == 1)
		{
			r->id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
												SPI_tuptable->tupdesc, 1, &isnull));
			return;
		}

		uv[0] = values[0];
		uv[1] = values[6];
		uv[2] = values[2];
		uv[3] = values[4];
		ret = SPI_execute_plan(plan_redelivery, uv, nulls[4] == 'n' ? "   n" : NULL,
							   false, 0);
		if (ret != SPI_OK_UPDATE_RETURNING)
			elog(ERROR, "could not record redelivery: %s", SPI_result_code_string(ret));
		if (SPI_processed == 1)
		{
			r->id = -DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
												 SPI_tuptable->tupdesc, 1, &isnull));
			r->existing_state = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0],
																  SPI_tuptable->tupdesc, 2, &isnull));
			return;
		}
		if (round >= 10)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("could not record a redelivery: its original keeps disappearing")));
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * The columns of a set-based statement, gathered row by row and passed as
 * one array per column.
 */
typedef struct ColumnSet
{
	int			ncols;
	int			nrows;
	int			maxrows;
	const Oid  *types;			/* element types */
	Datum	   *values;			/* [col * maxrows + row] */
	bool	   *nulls;
} ColumnSet;

static void
colset_init(ColumnSet *cs, const Oid *types, int ncols, int maxrows)
{
	cs->ncols = ncols;
	cs->nrows = 0;
	cs->maxrows = maxrows;
	cs->types = types;
	cs->values = palloc(sizeof(Datum) * ncols * maxrows);
	cs->nulls = palloc(sizeof(bool) * ncols * maxrows);
}

/* Add a row, given as SPI-style parameters (nulls[i] == 'n': null). */
static void
colset_add(ColumnSet *cs, const Datum *values, const char *nulls)
{
	Assert(cs->nrows < cs->maxrows);
	for (int c = 0; c < cs->ncols; c++)
	{
		cs->values[c * cs->maxrows + cs->nrows] = values[c];
		cs->nulls[c * cs->maxrows + cs->nrows] = nulls[c] == 'n';
	}
	cs->nrows++;
}

/* The statement's parameters: one array per column. */
static void
colset_params(const ColumnSet *cs, Datum *params)
{
	int			dims[1] = {cs->nrows};
	int			lbs[1] = {1};

	for (int c = 0; c < cs->ncols; c++)
	{
		int16		typlen;
		bool		typbyval;
		char		typalign;

		get_typlenbyvalalign(cs->types[c], &typlen, &typbyval, &typalign);
		params[c] = PointerGetDatum(construct_md_array(&cs->values[c * cs->maxrows],
													   &cs->nulls[c * cs->maxrows],
													   1, dims, lbs, cs->types[c],
													   typlen, typbyval, typalign));
	}
}

/*
 * Insert the rows of a batch to be stored with one statement.  Sets the id
 * of each row it inserted; a row left at 0 is a redelivery (of an event
 * already in the log, or of one earlier in the same batch), for
 * insert_event() to record.
 */
static void
insert_events_set(LogRow *rows, int n, int nstore)
{
	ColumnSet	cs;
	Datum		params[17];
	int			ret;

	colset_init(&cs, event_column_types, 17, nstore);
	for (int i = 0; i < n; i++)
	{
		Datum		values[17];
		char		nulls[17];

		if (!rows[i].store)
			continue;
		event_values(&rows[i], values, nulls);
		colset_add(&cs, values, nulls);
	}
	colset_params(&cs, params);

	ret = SPI_execute_plan(plan_insert_events, params, NULL, false, 0);
	if (ret != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not insert events: %s", SPI_result_code_string(ret));
	for (uint64 k = 0; k < SPI_processed; k++)
	{
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[k],
													 SPI_tuptable->tupdesc, 1, &isnull));

		for (int i = 0; i < n; i++)
		{
			if (rows[i].store && rows[i].d->reserved_id == id)
			{
				rows[i].id = id;
				break;
			}
		}
	}
}

/* Record an apply outcome on an event row. */
static void
record_outcome(int64 event_id, const char *state, const char *error,
			   const char *notes, bool new_attempt)
{
	Datum		values[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};

	values[0] = Int64GetDatum(event_id);
	values[1] = CStringGetTextDatum(state);
	values[2] = text_or_null(error, &nulls[2]);
	values[3] = text_or_null(notes, &nulls[3]);
	values[4] = Int32GetDatum(bw_max_apply_attempts);
	values[5] = Int32GetDatum(new_attempt ? 1 : 0);
	values[6] = Float8GetDatum(bw_retry_base_delay / 1000.0);
	exec_plan(plan_event_outcome, values, nulls, SPI_OK_UPDATE);
}

/*
 * Take the id a delivery's event will have, if it is logged.  A batch takes
 * them in request order and then logs in digest order (see
 * bw_delivery_log_cmp), so that events.id stays the order of arrival.  An
 * id a duplicate does not use is a gap, as an identity default would leave.
 */
void
bw_delivery_reserve_id(BwDelivery *d)
{
	Oid			nsp;
	Oid			seq;

	if (d->reserved_id != 0)
		return;
	nsp = get_namespace_oid(BW_SCHEMA, false);
	seq = get_relname_relid("events_id_seq", nsp);
	if (!OidIsValid(seq))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("sequence %s.events_id_seq does not exist", BW_SCHEMA)));
	d->reserved_id = nextval_internal(seq, false);
}

/* Compute the SHA-256 of a delivery's body, once. */
void
bw_delivery_digest(BwDelivery *d)
{
	if (!d->digest_done)
	{
		bw_sha256(d->body, d->body_len, d->digest);
		d->digest_done = true;
	}
}

/*
 * Order of the log phase of a batch: by webhook, then body digest, the key
 * of the dedup index.  Concurrent batches that insert the same new bodies
 * then take their speculative insertion locks in the same order, and two
 * workers receiving one redelivery on two connections cannot deadlock.
 */
int
bw_delivery_log_cmp(const BwDelivery *a, const BwDelivery *b)
{
	if (a->webhook->id != b->webhook->id)
		return a->webhook->id < b->webhook->id ? -1 : 1;
	return memcmp(a->digest, b->digest, BW_SHA256_LEN);
}

/*
 * Order of the apply phase: by environment, then order id, so that
 * concurrent batches lock the rows of orders in the same order.
 */
int
bw_delivery_apply_cmp(const BwDelivery *a, const BwDelivery *b)
{
	int			c = strcmp(a->webhook->environment, b->webhook->environment);

	if (c != 0)
		return c;
	return strcmp(a->order_key ? a->order_key : "", b->order_key ? b->order_key : "");
}

/*
 * Classify one delivery of the log phase: verify it, parse it, and decide
 * what to store and answer.  Fills r; stores nothing.
 */
static void
classify_delivery(LogRow *r, StringInfo notes)
{
	BwDelivery *d = r->d;
	const char *reason = NULL;
	int32		secret_id;
	const char *ignored;

	r->store = true;

	/*
	 * The installation check comes first: Biteship refuses to save a webhook
	 * unless its empty request is answered 200, with or without the
	 * signature header.
	 */
	if (bw_body_is_ping(d->body, d->body_len))
	{
		secret_id = verify_signature(d, &reason);
		d->http_status = 200;
		r->state = "ping";
		r->secret_id = secret_id > 0 ? secret_id : 0;
		/* anyone can send an unsigned one: log those at a bounded rate */
		if (secret_id <= 0 &&
			!bw_unverified_allowed(d->webhook->id, d->webhook->name, r->state,
								   bw_unverified_log_rate))
			r->store = false;
		else if (d->body_len > 0 && bw_body_looks_like_object(d->body, d->body_len))
			r->payload = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
		return;
	}

	secret_id = verify_signature(d, &reason);
	if (secret_id < 0)
	{
		d->http_status = 401;
		r->state = "rejected";
		r->error = pstrdup(reason);
		r->last_error = r->error;
		r->keep_raw = true;
		r->store = bw_unverified_allowed(d->webhook->id, d->webhook->name,
										 r->state, bw_unverified_log_rate);
		return;
	}
	r->secret_id = secret_id;

	if (!bw_body_looks_like_object(d->body, d->body_len))
		r->error = pstrdup("body is not a JSON object");
	else
		r->payload = parse_body(d->body, d->body_len, &r->error);
	if (r->payload != NULL && !JB_ROOT_IS_OBJECT(r->payload))
	{
		r->payload = NULL;
		r->error = pstrdup("body is not a JSON object");
	}
	if (r->payload == NULL)
	{
		d->http_status = 400;
		r->state = "rejected";
		r->last_error = r->error;
		r->keep_raw = true;
		r->store = bw_unverified_allowed(d->webhook->id, d->webhook->name,
										 r->state, bw_unverified_log_rate);
		return;
	}

	/* A verified, well-formed delivery is accepted from here on. */
	d->http_status = 200;
	r->event = jb_text(r->payload, "event", notes);
	r->order_id = jb_text(r->payload, "order_id", notes);
	/* bounded, and never cut inside a multibyte character */
	if (r->order_id != NULL && strlen(r->order_id) > BW_ORDER_ID_MAXLEN)
		r->order_id[pg_mbcliplen(r->order_id, strlen(r->order_id),
								 BW_ORDER_ID_MAXLEN)] = '\0';
	if (r->event != NULL && strlen(r->event) > 128)
		r->event[pg_mbcliplen(r->event, strlen(r->event), 128)] = '\0';
	ignored = ignore_reason(r->event, d->webhook->events, d->webhook->nevents);

	if (ignored != NULL)
		r->state = "ignored";
	else if (d->deferred)
		r->state = "pending";
	else
		r->state = "applied";
	r->last_error = ignored;
	r->attempts = strcmp(r->state, "applied") == 0 ? 1 : 0;
}

/*
 * Report what the log phase did with one delivery through its output
 * fields, and keep what the apply phase needs in the caller's context.
 */
static void
finish_delivery(LogRow *r, MemoryContext callercxt)
{
	BwDelivery *d = r->d;

	if (r->id > 0 && strcmp(r->state, "applied") == 0)
	{
		d->apply_payload = MemoryContextAlloc(callercxt, VARSIZE(r->payload));
		memcpy(d->apply_payload, r->payload, VARSIZE(r->payload));
		d->order_key = r->order_id ? MemoryContextStrdup(callercxt, r->order_id) : NULL;
	}

	if (r->id < 0)
	{
		/* a redelivery of an event we already have */
		d->event_id = -r->id;
		d->state = "duplicate";
		d->http_status = 200;
		d->error = NULL;
		bw_stats_count_event("duplicate");
	}
	else
	{
		d->event_id = r->id;
		d->state = r->state;
		if (strcmp(r->state, "pending") == 0)
			bw_wake_at_commit(BW_LATCH_DISPATCHER);
		d->error = r->error ? MemoryContextStrdup(callercxt, r->error) : NULL;
		/* id 0: answered, but not logged (the unverified rate limit) */
		if (d->apply_payload == NULL && r->id > 0)
			bw_stats_count_event(r->state);
	}
}

/*
 * Ingest the deliveries of a batch, first phase: verify each and log it.
 * Deliveries to be applied are left for the apply phase
 * (bw_ingest_apply_batch).  The caller orders the batch by
 * bw_delivery_log_cmp.  Must run inside a transaction; never commits.
 * Every outcome is reported through each delivery's output fields; only
 * trouble with the database itself raises an ERROR, which the caller
 * turns into a 503 for the whole batch.
 *
 * What is to be stored goes in with one statement for the whole batch; a
 * redelivery, which that statement leaves out, is then recorded on its
 * original row.
 */
void
bw_ingest_log_batch(BwDelivery **ds, int n)
{
	MemoryContext callercxt = CurrentMemoryContext;
	LogRow	   *rows;
	int			nstore = 0;
	StringInfoData scratch;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	prepare_plans();

	rows = palloc0(sizeof(LogRow) * n);
	initStringInfo(&scratch);
	for (int i = 0; i < n; i++)
	{
		BwDelivery *d = ds[i];

		d->event_id = 0;
		d->error = NULL;
		bw_delivery_digest(d);
		bw_delivery_reserve_id(d);
		rows[i].d = d;
		classify_delivery(&rows[i], &scratch);
		resetStringInfo(&scratch);
		if (rows[i].store)
			nstore++;
	}

	/*
	 * One statement, unless the batch's bodies are too big for one array
	 * (an array is at most 1 GB); then a statement per row.
	 */
	if (nstore > 1)
	{
		uint64		bytes = 0;

		for (int i = 0; i < n; i++)
			if (rows[i].store)
				bytes += (rows[i].payload ? VARSIZE(rows[i].payload) : 0) +
					(rows[i].keep_raw ? Min(rows[i].d->body_len, (size_t) bw_rejected_body_limit) : 0);
		if (bytes < SET_INSERT_MAX_BYTES)
			insert_events_set(rows, n, nstore);
	}
	for (int i = 0; i < n; i++)
	{
		if (rows[i].store && rows[i].id == 0)
			insert_event(&rows[i]);
	}
	for (int i = 0; i < n; i++)
		finish_delivery(&rows[i], callercxt);

	SPI_finish();
}

/* The log phase of a single delivery. */
void
bw_ingest_one(BwDelivery *d)
{
	bw_ingest_log_batch(&d, 1);
}

/*
 * Second phase of ingest: apply a logged delivery to orders and history, in
 * a subtransaction of its own.  Does nothing for deliveries that were not
 * logged as "applied" (rejected, ignored, pending, duplicates).  Callers
 * with a batch apply in bw_delivery_apply_cmp order (stably), so that
 * concurrent batches lock order rows in the same order and cannot
 * deadlock, and check bw_apply_room() before each apply.
 */
void
bw_ingest_apply(BwDelivery *d)
{
	MemoryContext callercxt = CurrentMemoryContext;
	StringInfoData notes;
	char	   *error;

	if (d->apply_payload == NULL)
		return;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	prepare_plans();
	initStringInfo(&notes);

	error = apply_in_subxact(d->event_id, d->webhook->name,
							 d->webhook->environment, d->apply_payload,
							 d->received_at, "webhook", &notes, NULL, NULL, NULL);
	if (error != NULL)
	{
		/* attempts was set to 1 by the insert */
		record_outcome(d->event_id, "failed", error,
					   notes.len > 0 ? notes.data : NULL, false);
		d->state = "failed";
		d->error = MemoryContextStrdup(callercxt, error);
		bw_wake_at_commit(BW_LATCH_DISPATCHER);
	}
	else if (notes.len > 0)
		record_outcome(d->event_id, "applied", NULL, notes.data, false);
	bw_stats_count_event(d->state);
	d->apply_payload = NULL;

	SPI_finish();
}

/*
 * Leave a logged delivery that was to be applied now for the dispatcher
 * instead: it becomes pending, due at once.  The answer says "pending".
 */
void
bw_ingest_defer(BwDelivery *d, const char *why)
{
	Datum		values[2];
	char		nulls[2] = {' ', ' '};

	if (d->apply_payload == NULL)
		return;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	prepare_plans();
	values[0] = Int64GetDatum(d->event_id);
	values[1] = text_or_null(why, &nulls[1]);
	exec_plan(plan_event_defer, values, nulls, SPI_OK_UPDATE);
	d->state = "pending";
	d->apply_payload = NULL;
	bw_stats_count_event("pending");
	bw_wake_at_commit(BW_LATCH_DISPATCHER);
	SPI_finish();
}

/*
 * Apply the events of a batch with set-based statements, in one
 * subtransaction, as the apply role.  The deliveries are in
 * bw_delivery_apply_cmp order.  Each statement takes a run of consecutive
 * status events of distinct orders; a waybill or price event, or a second
 * event of the same order, starts the next one.  The statements then touch
 * orders in the same ascending order as applying the events one by one
 * would, which keeps concurrent batches from deadlocking, and each order's
 * events apply in arrival order.  Returns false, with nothing applied,
 * when any of it raised: the caller then applies each event on its own, so
 * that the one that failed fails alone.  A cancel that is not the apply
 * deadline is re-thrown.
 */
static bool
apply_set_based(BwDelivery **ds, int n)
{
	MemoryContext oldcontext = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	uint32		save_holdoff = InterruptHoldoffCount;
	StringInfoData *notes = palloc(sizeof(StringInfoData) * n);
	MappedEvent *mapped = palloc(sizeof(MappedEvent) * n);
	volatile bool ok = false;
	int			mark = notify_mark();

	for (int i = 0; i < n; i++)
		initStringInfo(&notes[i]);

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcontext);

	PG_TRY();
	{
		Oid			save_userid;
		int			save_sec_context;
		int			save_nestlevel;
		ColumnSet	cs;

		Oid			apply_userid = bw_apply_role_oid(false);
		int			apply_sec_context;

		GetUserIdAndSecContext(&save_userid, &save_sec_context);
		apply_sec_context = save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
			SECURITY_RESTRICTED_OPERATION;
		SetUserIdAndSecContext(apply_userid, apply_sec_context);
		save_nestlevel = NewGUCNestLevel();

		for (int i = 0; i < n; i++)
		{
			map_payload(ds[i]->event_id, ds[i]->webhook->environment,
						ds[i]->apply_payload, ds[i]->received_at, "webhook",
						&notes[i], &mapped[i]);
			/* the batch is in order-id order: each order is locked once */
			if (i == 0 || bw_delivery_apply_cmp(ds[i - 1], ds[i]) != 0)
				lock_order(ds[i]->webhook->environment, mapped[i].order_id);
		}

		colset_init(&cs, status_column_types, 18, n);
		for (int i = 0; i < n;)
		{
			int			end = i + 1;

			if (mapped[i].kind == BW_EVENT_STATUS)
			{
				while (end < n && mapped[end].kind == BW_EVENT_STATUS &&
					   bw_delivery_apply_cmp(ds[end - 1], ds[end]) != 0)
					end++;
			}
			if (end - i == 1)
				exec_mapped(&mapped[i]);	/* the single plan is cheaper */
			else
			{
				Datum		params[18];

				cs.nrows = 0;
				for (int k = i; k < end; k++)
					colset_add(&cs, mapped[k].values, mapped[k].nulls);
				colset_params(&cs, params);
				exec_plan(plan_upsert_statuses, params, NULL, SPI_OK_INSERT);
			}

			for (int k = i; k < end; k++)
				notify_applied(ds[k]->event_id, ds[k]->webhook->name,
							   ds[k]->webhook->environment, mapped[k].event,
							   mapped[k].order_id,
							   mapped[k].have_status ? mapped[k].status : NULL);

			/*
			 * Forwarding, with our own rights and settings, right after the
			 * statement: what it reads of each order is the state after that
			 * event, as when events apply one by one (a run has each order
			 * once).
			 */
			if (bw_after_apply_hook != NULL)
			{
				AtEOXact_GUC(false, save_nestlevel);
				SetUserIdAndSecContext(save_userid, save_sec_context);
				for (int k = i; k < end; k++)
					bw_after_apply_hook(ds[k]->event_id, ds[k]->webhook->name,
										ds[k]->webhook->environment, mapped[k].event,
										mapped[k].order_id, ds[k]->apply_payload);
				SetUserIdAndSecContext(apply_userid, apply_sec_context);
				save_nestlevel = NewGUCNestLevel();
			}
			i = end;
		}
		AtEOXact_GUC(false, save_nestlevel);
		SetUserIdAndSecContext(save_userid, save_sec_context);

		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
		ok = true;
	}
	PG_CATCH();
	{
		ErrorData  *edata = rollback_apply(oldcontext, oldowner, save_holdoff, mark);

		ereport(DEBUG1,
				(errmsg_internal("set-based apply of %d events failed, applying them one by one: %s",
								 n, edata->message)));
		FreeErrorData(edata);
	}
	PG_END_TRY();

	if (ok)
	{
		for (int i = 0; i < n; i++)
		{
			if (notes[i].len > 0)
				record_outcome(ds[i]->event_id, "applied", NULL, notes[i].data, false);
			bw_stats_count_event(ds[i]->state);
			ds[i]->apply_payload = NULL;
		}
	}
	return ok;
}

/*
 * Apply phase of a batch: apply the logged deliveries that are to be
 * applied now.  The caller orders them by bw_delivery_apply_cmp (stably),
 * so that concurrent batches lock order rows in the same order and cannot
 * deadlock, and arms the apply deadline.  Set-based first; if that raises,
 * each on its own, in a subtransaction of its own, so that a mapping error
 * or an application trigger that raises fails only its event.  What the
 * batch has no time or subtransactions left for is left to the dispatcher.
 */
void
bw_ingest_apply_batch(BwDelivery **ds, int n)
{
	BwDelivery **todo = palloc(sizeof(BwDelivery *) * Max(n, 1));
	int			m = 0;

	for (int i = 0; i < n; i++)
	{
		if (ds[i]->apply_payload != NULL)
			todo[m++] = ds[i];
	}
	if (m == 0)
		return;

	if (m > 1 && bw_apply_room())
	{
		bool		done;

		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		prepare_plans();
		done = apply_set_based(todo, m);
		SPI_finish();
		if (done)
			return;

		/*
		 * The set-based attempt ran out of time: it cannot tell which event
		 * was slow.  The events get a deadline of their own again, so that
		 * the slow one fails alone, as it would have without the attempt.
		 */
		if (bw_apply_deadline_passed())
		{
			QueryCancelPending = false;
			bw_apply_deadline_arm();
		}
	}

	for (int i = 0; i < m; i++)
	{
		if (bw_apply_room())
			bw_ingest_apply(todo[i]);
		else
			bw_ingest_defer(todo[i],
							bw_apply_deadline_passed() ?
							"the batch ran past biteship_webhook.apply_timeout; left for the dispatcher" :
							"the batch ran out of subtransactions; left for the dispatcher");
	}
}

/*
 * apply_in_subxact for a parsed API answer, which is freed whatever
 * happens (a cancel is re-thrown).
 */
static char *
apply_api_in_subxact(int64 event_id, const char *environment,
					 TimestampTz fetched_at, const char *source, StringInfo notes,
					 BwApiOrder *api, const char *order_id, ApiApplyResult *ares)
{
	char	   *err;

	PG_TRY();
	{
		err = apply_in_subxact(event_id, NULL, environment, NULL, fetched_at,
							   source, notes, api, order_id, ares);
	}
	PG_CATCH();
	{
		bw_api_order_free(api);
		PG_RE_THROW();
	}
	PG_END_TRY();
	bw_api_order_free(api);
	return err;
}

/*
 * Apply a stored event again (replay, retries, deferred mode).  Returns the
 * event's new state; *error receives the failure message, if any.  Rejected
 * events cannot be replayed: they were never verified.
 *
 * only_if_due is for callers that chose the event because it was failed or
 * pending, without holding its row lock (replay_failed()): the row is
 * locked here, and if by then someone else has applied it, it is left alone
 * and NULL is returned, so that an event is never applied twice.
 */
const char *
bw_apply_stored_event(int64 event_id, const char *source, bool only_if_due,
					  char **error)
{
	MemoryContext callercxt = CurrentMemoryContext;
	Datum		arg = Int64GetDatum(event_id);
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	Jsonb	   *payload;
	char	   *environment;
	char	   *state;
	char	   *webhook;
	char	  **events = NULL;
	int			nevents = 0;
	TimestampTz received_at;
	const char *ignored;
	const char *newstate;
	char	   *err = NULL;
	StringInfoData notes;
	int			ret;

	*error = NULL;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	prepare_plans();
	initStringInfo(&notes);

	ret = SPI_execute_plan(plan_load_event, &arg, NULL, false, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not load event: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("event " INT64_FORMAT " does not exist", event_id)));

	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	environment = TextDatumGetCString(SPI_getbinval(tup, desc, 2, &isnull));
	state = TextDatumGetCString(SPI_getbinval(tup, desc, 3, &isnull));
	received_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 4, &isnull));
	webhook = SPI_getvalue(tup, desc, 5);

	if (only_if_due &&
		strcmp(state, "failed") != 0 && strcmp(state, "pending") != 0)
	{
		SPI_finish();
		return NULL;
	}
	if (strcmp(state, "rejected") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot replay event " INT64_FORMAT, event_id),
				 errdetail("The event was rejected and was never verified."),
				 errhint("Resend it from Biteship's dashboard once the webhook is configured correctly.")));
	if (strcmp(state, "ping") == 0)
	{
		SPI_finish();
		return "ping";
	}

	{
		Datum		d = SPI_getbinval(tup, desc, 1, &isnull);

		if (isnull)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("event " INT64_FORMAT " has no payload to replay", event_id)));
		payload = DatumGetJsonbPCopy(d);
	}

	/* an answer of Biteship's API: parsed again, applied the same way */
	{
		char	   *ev = SPI_getvalue(tup, desc, 7);
		char	   *oid = SPI_getvalue(tup, desc, 8);

		if (ev != NULL && strcmp(ev, "api.order") == 0 && oid != NULL)
		{
			char	   *stored = JsonbToCString(NULL, &payload->root, VARSIZE(payload));
			char	   *text = pg_server_to_any(stored, strlen(stored), PG_UTF8);
			BwApiOrder	api;
			char		perr[128];
			ApiApplyResult ares;

			memset(&ares, 0, sizeof(ares));
			if (!bw_api_parse_order(text, strlen(text), &api, perr, sizeof(perr)))
				err = psprintf("stored API answer cannot be parsed: %s", perr);
			else
				err = apply_api_in_subxact(event_id, environment, received_at,
										   source, &notes, &api, oid, &ares);
			newstate = err != NULL ? "failed" : "applied";
			record_outcome(event_id, newstate, err,
						   notes.len > 0 ? notes.data : NULL, true);
			bw_stats_count_event(newstate);
			if (err != NULL)
				*error = MemoryContextStrdup(callercxt, err);
			SPI_finish();
			return newstate;
		}
	}

	if (webhook != NULL)
	{
		ArrayType  *arr = DatumGetArrayTypeP(SPI_getbinval(tup, desc, 6, &isnull));
		Datum	   *elems;
		bool	   *elemnulls;
		int			nelems;

		deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT,
						  &elems, &elemnulls, &nelems);
		events = palloc(sizeof(char *) * Max(nelems, 1));
		for (int i = 0; i < nelems; i++)
		{
			if (!elemnulls[i])
				events[nevents++] = TextDatumGetCString(elems[i]);
		}
	}
	else
	{
		/* the webhook is gone: apply whatever we know how to */
		static char *all[] = {"order.status", "order.waybill_id", "order.price"};

		events = all;
		nevents = lengthof(all);
	}

	{
		char	   *event = jb_text(payload, "event", &notes);

		ignored = ignore_reason(event, events, nevents);
	}
	resetStringInfo(&notes);

	if (ignored != NULL)
	{
		newstate = "ignored";
		err = (char *) ignored;
	}
	else
	{
		err = apply_in_subxact(event_id, webhook, environment, payload,
							   received_at, source, &notes, NULL, NULL, NULL);
		newstate = err != NULL ? "failed" : "applied";
	}
	record_outcome(event_id, newstate, err, notes.len > 0 ? notes.data : NULL,
				   ignored == NULL);
	bw_stats_count_event(newstate);

	if (err != NULL)
		*error = MemoryContextStrdup(callercxt, err);
	SPI_finish();
	return newstate;
}

/*
 * Log an answer of Biteship's API (GET /v1/orders/{id}) in the events log,
 * as a delivery of webhook 0 with event "api.order", and apply it when it
 * is an order: the same statements, ordering rules, apply role and
 * triggers as webhooks.  Runs in the caller's transaction; never commits.
 * The body must already have the API key redacted from it.
 *
 * An answer identical to one already logged for this order (same status
 * and body) only counts a delivery: nothing has changed since.  Error
 * answers are logged "ignored", with Biteship's message in last_error.
 */
static void
ingest_api_answer(BwApiAnswer *a, BwApiOrder *apip, bool parsed)
{
	MemoryContext callercxt = CurrentMemoryContext;
	BwApiOrder *api_ = apip;
	char	   *jerr = NULL;
	Jsonb	   *payload = NULL;
	uint8		digest[BW_SHA256_LEN];
	StringInfoData notes;
	StringInfoData hdr;
	char	   *logged_error = NULL;
	const char *state;
	Datum		values[11];
	char		nulls[11];
	bool		isnull;
	bool		inserted;

	ApiApplyResult ares;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	prepare_plans();
	initStringInfo(&notes);
	{

		a->result = bw_api_classify(a->http_status, BW_TRANSPORT_OK, parsed ? api_ : NULL);
		if (parsed && api_->have_code)
		{
			a->have_code = true;
			a->code = api_->code;
		}
		if (parsed)
			payload = parse_body(a->body, a->body_len, &jerr);
		/* what cannot be stored as jsonb is not applied either */
		if (a->result == BW_API_OK && payload == NULL)
		{
			a->result = BW_API_BAD_ANSWER;
			snprintf(a->parse_error, sizeof(a->parse_error), "%s",
					 jerr != NULL ? jerr : "not storable as jsonb");
			parsed = false;
		}
		/* an answer about another order is not this order's */
		if (a->result == BW_API_OK && api_->id != NULL &&
			strcmp(api_->id, a->order_id) != 0)
		{
			a->result = BW_API_BAD_ANSWER;
			snprintf(a->parse_error, sizeof(a->parse_error),
					 "the answer is about another order");
		}

		/* the digest: environment, order, status and body */
		{
			StringInfoData k;

			initStringInfo(&k);
			appendStringInfo(&k, "api\n%s\n%s\n%ld\n", a->environment, a->order_id,
							 a->http_status);
			appendBinaryStringInfo(&k, a->body, (int) a->body_len);
			bw_sha256(k.data, k.len, digest);
		}

		if (a->result == BW_API_OK)
			state = "applied";	/* for now: the apply below decides */
		else
		{
			state = "ignored";
			if (parsed && api_->error != NULL && a->result != BW_API_BAD_ANSWER)
				logged_error = psprintf("Biteship API answered %ld%s%s: %s", a->http_status,
										api_->have_code ? " with code " : "",
										api_->have_code ? psprintf(INT64_FORMAT, api_->code) : "",
										api_->error);
			else if (a->result == BW_API_BAD_ANSWER && a->parse_error[0] != '\0')
				logged_error = psprintf("Biteship API answered %ld with something that is not an order: %s",
										a->http_status, a->parse_error);
			else if (a->body_truncated)
				logged_error = psprintf("Biteship API answered %ld with a body over the limit",
										a->http_status);
			else if (a->body_len > 0 && !parsed)
				logged_error = psprintf("Biteship API answered %ld with a body that is not JSON: %s",
										a->http_status, a->parse_error);
			else
				logged_error = psprintf("Biteship API answered %ld (%s)", a->http_status,
										bw_api_result_name(a->result));
		}

		initStringInfo(&hdr);
		appendStringInfoString(&hdr, "{\"source\": \"api\", \"request\": ");
		escape_json(&hdr, psprintf("GET /v1/orders/%s", a->order_id));
		appendStringInfoChar(&hdr, '}');

		memset(nulls, ' ', sizeof(nulls));
		values[0] = CStringGetTextDatum(a->environment);
		values[1] = TimestampTzGetDatum(a->fetched_at);
		values[2] = CStringGetTextDatum(a->order_id);
		if (payload != NULL)
			values[3] = JsonbPGetDatum(payload);
		else
			nulls[3] = 'n';
		values[4] = bytes_datum(digest, BW_SHA256_LEN);
		/* the raw body of what was not applied, bounded */
		if (payload == NULL || a->result != BW_API_OK)
			values[5] = bytes_datum(a->body, Min(a->body_len, (size_t) bw_rejected_body_limit));
		else
			nulls[5] = 'n';
		values[6] = Int32GetDatum((int32) Min(a->body_len, (size_t) PG_INT32_MAX));
		values[7] = DirectFunctionCall1(jsonb_in, CStringGetDatum(hdr.data));
		values[8] = Int16GetDatum((int16) Max(Min(a->http_status, 999), 0));
		values[9] = CStringGetTextDatum(state);
		values[10] = text_or_null(logged_error, &nulls[10]);

		/*
		 * Insert, or count one more delivery of the same answer, as
		 * insert_event() does for webhook deliveries (and with its loop, for
		 * an original the retention purge deletes in between).
		 */
		for (int round = 0;; round++)
		{
			Datum		uv[4];

			exec_plan(plan_insert_api_event, values, nulls, SPI_OK_INSERT_RETURNING);
			inserted = SPI_processed == 1;
			if (inserted)
				break;
			uv[0] = Int32GetDatum(0);
			uv[1] = values[4];
			uv[2] = values[1];
			uv[3] = values[2];
			exec_plan(plan_redelivery, uv, NULL, SPI_OK_UPDATE_RETURNING);
			if (SPI_processed == 1)
				break;
			if (round >= 10)
				ereport(ERROR,
						(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
						 errmsg("could not record an API answer: its original keeps disappearing")));
			CHECK_FOR_INTERRUPTS();
		}
		a->event_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
												  SPI_tuptable->tupdesc, 1, &isnull));
		if (!inserted)
		{
			/* the same answer as last time: nothing has changed since */
			a->state = "duplicate";
			if (logged_error != NULL)
				a->error = MemoryContextStrdup(callercxt, logged_error);
		}
		else if (a->result != BW_API_OK)
		{
			a->state = "ignored";
			a->error = MemoryContextStrdup(callercxt, logged_error);
		}
		else
		{
			char	   *err;

			memset(&ares, 0, sizeof(ares));
			err = apply_in_subxact(a->event_id, NULL, a->environment, NULL,
								   a->fetched_at, "api", &notes, api_, a->order_id,
								   &ares);
			if (err != NULL)
			{
				record_outcome(a->event_id, "failed", err,
							   notes.len > 0 ? notes.data : NULL, true);
				a->state = "failed";
				a->error = MemoryContextStrdup(callercxt, err);
				bw_wake_at_commit(BW_LATCH_DISPATCHER);
			}
			else
			{
				record_outcome(a->event_id, "applied", NULL,
							   notes.len > 0 ? notes.data : NULL, true);
				a->state = "applied";
				a->changed = ares.changed;
				a->created = ares.changed && !ares.existed;
				a->history_added = ares.history_added;
			}
			bw_stats_count_event(a->state);
		}
	}
	SPI_finish();
}

void
bw_ingest_api_answer(BwApiAnswer *a)
{
	BwApiOrder	api;
	char		perr[128] = "";
	bool		parsed;

	a->event_id = 0;
	a->changed = false;
	a->created = false;
	a->history_added = 0;
	a->error = NULL;
	a->have_code = false;
	a->parse_error[0] = '\0';

	parsed = a->body_len > 0 && !a->body_truncated &&
		bw_api_parse_order(a->body, a->body_len, &api, perr, sizeof(perr));
	if (!parsed)
	{
		memset(&api, 0, sizeof(api));
		strlcpy(a->parse_error, perr, sizeof(a->parse_error));
	}
	PG_TRY();
	{
		ingest_api_answer(a, &api, parsed);
	}
	PG_FINALLY();
	{
		if (parsed)
			bw_api_order_free(&api);
	}
	PG_END_TRY();
}
