/*-------------------------------------------------------------------------
 *
 * outbox.c
 *	  The outbox room: the SQL-facing functions (endpoints, send, retries,
 *	  purging), the forwarding of applied Biteship events, and the
 *	  statements with which the sender loads endpoints, claims due
 *	  messages and records outcomes.
 *
 * Messages are rows of biteship_webhook.outbox, written in the caller's
 * transaction: a message is sent only if that transaction commits, and a
 * committed message is never lost (the table is logged; a crash before its
 * outcome is recorded sends it again, with the same webhook-id).  send() is
 * SECURITY DEFINER, owned by the non-superuser role biteship_webhook_outbox,
 * so that an application role needs no right on the tables and can never
 * choose a URL: endpoints are registered by an administrator.
 *
 * The sender (outbound.c) claims messages in short read-only statements and
 * keeps what is in flight in its own memory; outcomes are recorded in one
 * set-based statement per turn.  Every statement here uses qualified names
 * and runs with the workers' pinned search_path, or the function's.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/formatting.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "biteship_webhook.h"
#include "curl_engine.h"
#include "outbox.h"
#include "route.h"
#include "signing.h"
#include "stats.h"

PG_FUNCTION_INFO_V1(bw_create_endpoint);
PG_FUNCTION_INFO_V1(bw_drop_endpoint);
PG_FUNCTION_INFO_V1(bw_set_endpoint_enabled);
PG_FUNCTION_INFO_V1(bw_set_endpoint_secret);
PG_FUNCTION_INFO_V1(bw_generate_signing_secret);
PG_FUNCTION_INFO_V1(bw_send_jsonb);
PG_FUNCTION_INFO_V1(bw_send_text);
PG_FUNCTION_INFO_V1(bw_retry_message);
PG_FUNCTION_INFO_V1(bw_retry_dead);
PG_FUNCTION_INFO_V1(bw_purge_outbox);

#define MAX_KEY_LEN		1024
#define MAX_HEADERS		64

/* events that can be forwarded */
static const char *const forwardable_events[] = {
	"order.status", "order.waybill_id", "order.price"
};

/*
 * Request headers that neither an endpoint nor a message may set: HTTP
 * framing, what the sender sets itself, and the signature headers.
 */
static const char *const reserved_headers[] = {
	"host", "content-length", "transfer-encoding", "connection", "keep-alive",
	"upgrade", "te", "trailer", "expect", "proxy-connection", "content-type",
	"user-agent", "webhook-id", "webhook-timestamp", "webhook-signature"
};


/* ----------------------------------------------------------------
 *		helpers
 * ----------------------------------------------------------------
 */

/* Run a statement with arguments, insisting on the expected result code. */
static void
run(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls,
	bool read_only, int expected)
{
	int			ret = SPI_execute_with_args(sql, nargs, types, values, nulls,
											read_only, 0);

	if (ret != expected)
		elog(ERROR, "statement failed: %s", SPI_result_code_string(ret));
}

/* RFC 9110 token characters */
static bool
is_token(const char *s)
{
	if (*s == '\0')
		return false;
	for (const unsigned char *p = (const unsigned char *) s; *p; p++)
	{
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			  (*p >= '0' && *p <= '9') || strchr("!#$%&'*+-.^_`|~", *p) != NULL))
			return false;
	}
	return true;
}

/*
 * Turn a jsonb object of headers into "Name: value" lines, validated: names
 * are tokens and not reserved, values are strings without control
 * characters.  what names the argument in errors (never the values: they
 * may be tokens).
 */
static int
header_lines(Jsonb *headers, const char *what, char ***lines_out,
			 char ***names_out)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	  **lines;
	char	  **names;
	int			n = 0;
	char	   *key = NULL;

	*lines_out = NULL;
	*names_out = NULL;
	if (headers == NULL)
		return 0;
	if (!JB_ROOT_IS_OBJECT(headers))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a JSON object of header names and values", what),
				 errhint("For example '{\"Authorization\": \"Bearer ...\"}'.")));
	lines = palloc(sizeof(char *) * MAX_HEADERS);
	names = palloc(sizeof(char *) * MAX_HEADERS);
	it = JsonbIteratorInit(&headers->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
		{
			key = pnstrdup(v.val.string.val, v.val.string.len);
			if (!is_token(key) || strlen(key) > 128)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("%s has an invalid header name \"%s\"", what, key),
						 errdetail("A header name is a token: letters, digits and !#$%%&'*+-.^_`|~.")));
			for (int i = 0; i < lengthof(reserved_headers); i++)
			{
				if (pg_strcasecmp(key, reserved_headers[i]) == 0)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("%s cannot set the header \"%s\"", what, key),
							 errdetail("HTTP framing, Content-Type, User-Agent and the webhook-* signature headers are set by the sender.")));
			}
		}
		else if (tok == WJB_VALUE)
		{
			char	   *val;

			if (v.type != jbvString)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("%s: the value of header \"%s\" must be a string", what, key)));
			val = pnstrdup(v.val.string.val, v.val.string.len);
			for (const unsigned char *p = (const unsigned char *) val; *p; p++)
			{
				if (*p < 0x20 && *p != '\t')
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("%s: the value of header \"%s\" has a control character", what, key)));
			}
			if (n >= MAX_HEADERS)
				ereport(ERROR,
						(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
						 errmsg("%s has more than %d headers", what, MAX_HEADERS)));
			lines[n] = psprintf("%s: %s", key, val);
			names[n] = asc_tolower(key, strlen(key));
			n++;
		}
	}
	*lines_out = lines;
	*names_out = names;
	return n;
}

/* Refuse a signing secret that is not "whsec_" + base64 of 24-64 bytes. */
static void
check_signing_secret(const char *secret)
{
	BwSigningKey key;
	const char *err;

	if (secret != NULL && !bw_signing_key_parse(secret, &key, &err))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid signing secret: %s", err),
				 errhint("Generate one with biteship_webhook.generate_signing_secret().")));
}

/* The id of an endpoint by name, or an error naming it. */
static int32
endpoint_id(const char *name, bool *enabled)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	bool		isnull;

	values[0] = CStringGetTextDatum(name);
	run("SELECT id, enabled FROM biteship_webhook.endpoints WHERE name = $1",
		1, types, values, NULL, true, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("endpoint \"%s\" does not exist", name),
				 errhint("An administrator registers endpoints with biteship_webhook.create_endpoint().")));
	if (enabled != NULL)
		*enabled = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
											  SPI_tuptable->tupdesc, 2, &isnull));
	return DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
									   SPI_tuptable->tupdesc, 1, &isnull));
}

static void
check_key(const char *key, const char *what)
{
	if (key != NULL && (strlen(key) == 0 || strlen(key) > MAX_KEY_LEN))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be 1 to %d bytes long", what, MAX_KEY_LEN)));
}


/* ----------------------------------------------------------------
 *		endpoints
 * ----------------------------------------------------------------
 */

/*
 * create_endpoint(name, url, headers, signing_secret, forward_events,
 *				   environment, timeout, max_attempts, description)
 */
Datum
bw_create_endpoint(PG_FUNCTION_ARGS)
{
	char	   *name = bw_required_text(fcinfo, 0, "name");
	char	   *url = bw_required_text(fcinfo, 1, "url");
	Jsonb	   *headers = PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2);
	char	   *secret = bw_optional_text(fcinfo, 3);
	ArrayType  *forward = PG_ARGISNULL(4) ? NULL : PG_GETARG_ARRAYTYPE_P(4);
	char	   *environment = bw_optional_text(fcinfo, 5);
	Interval   *timeout = PG_ARGISNULL(6) ? NULL : PG_GETARG_INTERVAL_P(6);
	int32		max_attempts = PG_ARGISNULL(7) ? 10 : PG_GETARG_INT32(7);
	char	   *description = bw_optional_text(fcinfo, 8);
	char	  **lines;
	char	  **names;
	char		err[256];
	Oid			types[9] = {TEXTOID, TEXTOID, JSONBOID, TEXTOID, TEXTARRAYOID,
	TEXTOID, INTERVALOID, INT4OID, TEXTOID};
	Datum		values[9];
	char		nulls[9];
	bool		isnull;
	int32		id;

	if (strlen(name) == 0 || strlen(name) > 63 ||
		strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") != strlen(name))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid endpoint name \"%s\"", name),
				 errdetail("An endpoint name is 1 to 63 letters, digits, '_', '.' or '-'.")));
	if (!bw_url_check(url, err, sizeof(err)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid endpoint URL: %s", err),
				 errhint("Use an http:// or https:// URL; put credentials in headers, not in the URL.")));
	header_lines(headers, "headers", &lines, &names);
	check_signing_secret(secret);
	if (forward != NULL)
	{
		Datum	   *elems;
		bool	   *elemnulls;
		int			nelems;

		deconstruct_array(forward, TEXTOID, -1, false, TYPALIGN_INT,
						  &elems, &elemnulls, &nelems);
		for (int i = 0; i < nelems; i++)
		{
			char	   *ev;
			bool		known = false;

			if (elemnulls[i])
				ereport(ERROR,
						(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						 errmsg("forward_events must not contain nulls")));
			ev = TextDatumGetCString(elems[i]);
			for (int j = 0; j < lengthof(forwardable_events); j++)
				known |= strcmp(ev, forwardable_events[j]) == 0;
			if (!known)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("cannot forward unknown event \"%s\"", ev),
						 errhint("Events that can be forwarded: order.status, order.waybill_id, order.price.")));
		}
	}
	if (environment != NULL && strcmp(environment, "live") != 0 &&
		strcmp(environment, "test") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("environment must be 'live' or 'test'")));
	if (environment != NULL && forward == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("environment applies only with forward_events"),
				 errhint("It chooses which environment's events the endpoint receives.")));
	if (max_attempts < 1 || max_attempts > 1000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_attempts must be between 1 and 1000")));
	if (timeout != NULL)
	{
		Interval	zero;
		Interval	ten_min;

		memset(&zero, 0, sizeof(zero));
		memset(&ten_min, 0, sizeof(ten_min));
		ten_min.time = 10 * 60 * USECS_PER_SEC;
		if (DatumGetBool(DirectFunctionCall2(interval_le, IntervalPGetDatum(timeout),
											 IntervalPGetDatum(&zero))) ||
			DatumGetBool(DirectFunctionCall2(interval_gt, IntervalPGetDatum(timeout),
											 IntervalPGetDatum(&ten_min))))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("timeout must be more than 0 and at most 10 minutes")));
	}
	if (description != NULL && strlen(description) > 1024)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("description must be at most 1024 bytes")));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	{
		Oid			t[1] = {TEXTOID};
		Datum		v[1] = {CStringGetTextDatum(name)};

		run("SELECT 1 FROM biteship_webhook.endpoints WHERE name = $1",
			1, t, v, NULL, true, SPI_OK_SELECT);
		if (SPI_processed > 0)
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_OBJECT),
					 errmsg("endpoint \"%s\" already exists", name)));
	}
	memset(nulls, ' ', sizeof(nulls));
	values[0] = CStringGetTextDatum(name);
	values[1] = CStringGetTextDatum(url);
	if (headers != NULL)
		values[2] = JsonbPGetDatum(headers);
	else
		nulls[2] = 'n';
	if (secret != NULL)
		values[3] = CStringGetTextDatum(secret);
	else
		nulls[3] = 'n';
	if (forward != NULL)
		values[4] = PointerGetDatum(forward);
	else
		nulls[4] = 'n';
	if (environment != NULL)
		values[5] = CStringGetTextDatum(environment);
	else
		nulls[5] = 'n';
	if (timeout != NULL)
		values[6] = IntervalPGetDatum(timeout);
	else
		nulls[6] = 'n';
	values[7] = Int32GetDatum(max_attempts);
	if (description != NULL)
		values[8] = CStringGetTextDatum(description);
	else
		nulls[8] = 'n';
	run("INSERT INTO biteship_webhook.endpoints "
		" (name, url, headers, signing_secret, forward_events, environment, "
		"  timeout, max_attempts, description) "
		"VALUES ($1, $2, COALESCE($3, '{}'), $4, $5, $6, COALESCE($7, '15s'), $8, $9) "
		"RETURNING id",
		9, types, values, nulls, false, SPI_OK_INSERT_RETURNING);
	id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
									 SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	PG_RETURN_INT32(id);
}

/*
 * drop_endpoint(name): its pending messages are cancelled; the messages and
 * their attempts stay until purged.
 */
Datum
bw_drop_endpoint(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Oid			types[1] = {INT4OID};
	Datum		values[1];
	int32		id;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	id = endpoint_id(name, NULL);
	values[0] = Int32GetDatum(id);
	run("UPDATE biteship_webhook.outbox SET state = 'cancelled', "
		"  last_error = 'endpoint dropped' "
		"WHERE endpoint_id = $1 AND state = 'pending'",
		1, types, values, NULL, false, SPI_OK_UPDATE);
	if (SPI_processed > 0)
		ereport(NOTICE,
				(errmsg("%llu pending messages of endpoint \"%s\" were cancelled",
						(unsigned long long) SPI_processed, name)));
	run("DELETE FROM biteship_webhook.endpoints WHERE id = $1",
		1, types, values, NULL, false, SPI_OK_DELETE);
	SPI_finish();
	PG_RETURN_VOID();
}

/* set_endpoint_enabled(name, enabled) */
Datum
bw_set_endpoint_enabled(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	bool		enabled = PG_GETARG_BOOL(1);
	Oid			types[2] = {INT4OID, BOOLOID};
	Datum		values[2];

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	values[0] = Int32GetDatum(endpoint_id(name, NULL));
	values[1] = BoolGetDatum(enabled);
	run("UPDATE biteship_webhook.endpoints SET enabled = $2, "
		"  disabled_at = CASE WHEN $2 THEN NULL ELSE pg_catalog.now() END, "
		"  disabled_reason = CASE WHEN $2 THEN NULL "
		"    ELSE 'disabled by ' OPERATOR(pg_catalog.||) CURRENT_USER::pg_catalog.text END, "
		"  failing_since = NULL, updated_at = pg_catalog.now() "
		"WHERE id = $1",
		2, types, values, NULL, false, SPI_OK_UPDATE);
	SPI_finish();
	if (enabled)
		bw_wake_at_commit(BW_LATCH_OUTBOUND);
	PG_RETURN_VOID();
}

/*
 * set_endpoint_secret(name, secret, keep_old): sign with the new secret; the
 * old one is sent alongside until keep_old has passed.  NULL stops signing.
 */
Datum
bw_set_endpoint_secret(PG_FUNCTION_ARGS)
{
	char	   *name = bw_required_text(fcinfo, 0, "name");
	char	   *secret = bw_optional_text(fcinfo, 1);
	Interval   *keep_old = PG_ARGISNULL(2) ? NULL : PG_GETARG_INTERVAL_P(2);
	Oid			types[3] = {INT4OID, TEXTOID, INTERVALOID};
	Datum		values[3];
	char		nulls[3] = {' ', ' ', ' '};

	check_signing_secret(secret);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	values[0] = Int32GetDatum(endpoint_id(name, NULL));
	if (secret != NULL)
		values[1] = CStringGetTextDatum(secret);
	else
		nulls[1] = 'n';
	if (keep_old != NULL)
		values[2] = IntervalPGetDatum(keep_old);
	else
		nulls[2] = 'n';
	run("UPDATE biteship_webhook.endpoints SET "
		"  previous_signing_secret = CASE WHEN $2 IS NULL OR COALESCE($3, '0') <= '0' "
		"    THEN NULL ELSE signing_secret END, "
		"  previous_secret_expires_at = CASE WHEN $2 IS NULL OR COALESCE($3, '0') <= '0' "
		"    OR signing_secret IS NULL THEN NULL ELSE pg_catalog.now() + $3 END, "
		"  signing_secret = $2, updated_at = pg_catalog.now() "
		"WHERE id = $1",
		3, types, values, nulls, false, SPI_OK_UPDATE);
	SPI_finish();
	PG_RETURN_VOID();
}

/* generate_signing_secret(): "whsec_" + base64 of 32 random bytes */
Datum
bw_generate_signing_secret(PG_FUNCTION_ARGS)
{
	unsigned char rnd[32];
	char		secret[BW_SECRET_SIZE];

	if (!pg_strong_random(rnd, sizeof(rnd)))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random bytes")));
	if (!bw_signing_secret_format(rnd, sizeof(rnd), secret, sizeof(secret)))
		elog(ERROR, "could not format a signing secret");
	PG_RETURN_TEXT_P(cstring_to_text(secret));
}


/* ----------------------------------------------------------------
 *		queueing
 * ----------------------------------------------------------------
 */

/* Is this a media type: type "/" subtype, parameters allowed? */
static bool
is_media_type(const char *ct)
{
	const char *slash = strchr(ct, '/');
	size_t		tlen;

	if (slash == NULL || slash == ct || strlen(ct) > 255)
		return false;
	tlen = strcspn(slash + 1, "; \t");
	if (tlen == 0)
		return false;
	for (const unsigned char *p = (const unsigned char *) ct; *p; p++)
	{
		if (*p < 0x20 || *p == 0x7f)
			return false;
	}
	{
		char	   *type = pnstrdup(ct, slash - ct);
		char	   *sub = pnstrdup(slash + 1, tlen);
		bool		ok = is_token(type) && is_token(sub);

		pfree(type);
		pfree(sub);
		return ok;
	}
}

/*
 * Queue one message; returns its id, or the id of the message already queued
 * with the same idempotency key.
 */
static int64
queue_message(const char *endpoint, const char *body, const char *content_type,
			  Jsonb *headers, const char *ordering_key,
			  const char *idempotency_key)
{
	char	  **lines;
	char	  **names;
	int32		ep;
	Oid			types[6] = {INT4OID, TEXTOID, TEXTOID, JSONBOID, TEXTOID, TEXTOID};
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	bool		isnull;
	int64		id;

	header_lines(headers, "headers", &lines, &names);
	check_key(ordering_key, "ordering_key");
	check_key(idempotency_key, "idempotency_key");

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	ep = endpoint_id(endpoint, NULL);
	values[0] = Int32GetDatum(ep);
	values[1] = CStringGetTextDatum(body);
	values[2] = CStringGetTextDatum(content_type);
	if (headers != NULL)
		values[3] = JsonbPGetDatum(headers);
	else
		nulls[3] = 'n';
	if (ordering_key != NULL)
		values[4] = CStringGetTextDatum(ordering_key);
	else
		nulls[4] = 'n';
	if (idempotency_key != NULL)
		values[5] = CStringGetTextDatum(idempotency_key);
	else
		nulls[5] = 'n';
	run("INSERT INTO biteship_webhook.outbox "
		" (endpoint_id, body, content_type, headers, ordering_key, idempotency_key) "
		"VALUES ($1, $2, $3, COALESCE($4, '{}'), $5, $6) "
		"ON CONFLICT (endpoint_id, idempotency_key) WHERE idempotency_key IS NOT NULL "
		"DO NOTHING RETURNING id",
		6, types, values, nulls, false, SPI_OK_INSERT_RETURNING);
	if (SPI_processed == 1)
	{
		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
										 SPI_tuptable->tupdesc, 1, &isnull));
		bw_stats_count_outbox("queued");
		bw_wake_at_commit(BW_LATCH_OUTBOUND);
	}
	else
	{
		/* queued before with this key: the first message's id */
		Oid			t[2] = {INT4OID, TEXTOID};
		Datum		v[2] = {values[0], values[5]};

		run("SELECT id FROM biteship_webhook.outbox "
			"WHERE endpoint_id = $1 AND idempotency_key = $2",
			2, t, v, NULL, false, SPI_OK_SELECT);
		if (SPI_processed != 1)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("a message with this idempotency_key is being queued concurrently"),
					 errhint("Retry the transaction.")));
		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
										 SPI_tuptable->tupdesc, 1, &isnull));
	}
	SPI_finish();
	return id;
}

/* send(endpoint, body jsonb, headers, ordering_key, idempotency_key) */
Datum
bw_send_jsonb(PG_FUNCTION_ARGS)
{
	char	   *endpoint = bw_required_text(fcinfo, 0, "endpoint");
	Jsonb	   *body;
	char	   *text;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("body must not be null")));
	body = PG_GETARG_JSONB_P(1);
	text = JsonbToCString(NULL, &body->root, VARSIZE(body));
	PG_RETURN_INT64(queue_message(endpoint, text, "application/json",
								  PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2),
								  bw_optional_text(fcinfo, 3),
								  bw_optional_text(fcinfo, 4)));
}

/* send(endpoint, body text, content_type, headers, ordering_key, idempotency_key) */
Datum
bw_send_text(PG_FUNCTION_ARGS)
{
	char	   *endpoint = bw_required_text(fcinfo, 0, "endpoint");
	char	   *body = bw_required_text(fcinfo, 1, "body");
	char	   *content_type = bw_required_text(fcinfo, 2, "content_type");

	if (!is_media_type(content_type))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("content_type \"%s\" is not a media type", content_type),
				 errhint("Give one like 'text/plain; charset=utf-8', or cast the body to jsonb to send JSON.")));
	PG_RETURN_INT64(queue_message(endpoint, body, content_type,
								  PG_ARGISNULL(3) ? NULL : PG_GETARG_JSONB_P(3),
								  bw_optional_text(fcinfo, 4),
								  bw_optional_text(fcinfo, 5)));
}

/*
 * retry_message(id): a dead message is sent again now, with a fresh set of
 * attempts; a pending one is made due now.
 */
Datum
bw_retry_message(PG_FUNCTION_ARGS)
{
	int64		id = PG_GETARG_INT64(0);
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(id)};
	char	   *state;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	run("SELECT state FROM biteship_webhook.outbox WHERE id = $1 FOR UPDATE",
		1, types, values, NULL, false, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("outbox message " INT64_FORMAT " does not exist", id)));
	state = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	if (strcmp(state, "delivered") == 0 || strcmp(state, "cancelled") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("outbox message " INT64_FORMAT " is %s", id, state),
				 errdetail(strcmp(state, "delivered") == 0 ?
						   "It was delivered already." :
						   "Its endpoint was dropped."),
				 errhint("Queue a new message with biteship_webhook.send().")));
	run("UPDATE biteship_webhook.outbox SET state = 'pending', "
		"  retry_base = CASE WHEN state = 'dead' THEN attempts ELSE retry_base END, "
		"  next_attempt_at = pg_catalog.now() "
		"WHERE id = $1",
		1, types, values, NULL, false, SPI_OK_UPDATE);
	SPI_finish();
	bw_wake_at_commit(BW_LATCH_OUTBOUND);
	PG_RETURN_VOID();
}

/* retry_dead(endpoint DEFAULT NULL): every dead message again; how many */
Datum
bw_retry_dead(PG_FUNCTION_ARGS)
{
	char	   *endpoint = bw_optional_text(fcinfo, 0);
	Oid			types[1] = {INT4OID};
	Datum		values[1];
	char		nulls[1] = {'n'};
	uint64		n;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (endpoint != NULL)
	{
		values[0] = Int32GetDatum(endpoint_id(endpoint, NULL));
		nulls[0] = ' ';
	}
	run("UPDATE biteship_webhook.outbox SET state = 'pending', retry_base = attempts, "
		"  next_attempt_at = pg_catalog.now() "
		"WHERE state = 'dead' AND ($1 IS NULL OR endpoint_id = $1)",
		1, types, values, nulls, false, SPI_OK_UPDATE);
	n = SPI_processed;
	SPI_finish();
	if (n > 0)
		bw_wake_at_commit(BW_LATCH_OUTBOUND);
	PG_RETURN_INT64((int64) n);
}

/*
 * purge_outbox(older_than, include_dead): delete delivered and cancelled
 * messages (and dead ones, if asked) queued before now() - older_than,
 * with their attempts.  Pending messages are never purged.
 */
Datum
bw_purge_outbox(PG_FUNCTION_ARGS)
{
	Interval   *older = PG_GETARG_INTERVAL_P(0);
	bool		include_dead = PG_GETARG_BOOL(1);
	Oid			types[2] = {INTERVALOID, BOOLOID};
	Datum		values[2] = {IntervalPGetDatum(older), BoolGetDatum(include_dead)};
	uint64		n;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	run("WITH gone AS ("
		" DELETE FROM biteship_webhook.outbox "
		"  WHERE created_at < pg_catalog.now() - $1 "
		"    AND (state IN ('delivered', 'cancelled') OR ($2 AND state = 'dead')) "
		"  RETURNING id), "
		"attempts AS ("
		" DELETE FROM biteship_webhook.outbox_attempts a USING gone "
		"  WHERE a.message_id = gone.id) "
		"SELECT pg_catalog.count(*) FROM gone",
		2, types, values, NULL, false, SPI_OK_SELECT);
	{
		bool		isnull;

		n = (uint64) DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
												 SPI_tuptable->tupdesc, 1, &isnull));
	}
	SPI_finish();
	PG_RETURN_INT64((int64) n);
}


/* ----------------------------------------------------------------
 *		forwarding of applied events
 * ----------------------------------------------------------------
 */

/* whether any endpoint forwards events, as of config generation */
static bool forward_known = false;
static bool forward_any = false;
static uint64 forward_generation = 0;
static SPIPlanPtr plan_forward = NULL;

/*
 * After-apply hook: queue the event for every endpoint that forwards it.
 * The body (a documented schema, see README.md) carries the event's name,
 * id and environment, the current orders row and the original payload.
 * The ordering key is the order, so that one order's events arrive in the
 * order they were applied; the idempotency key is the event id, so that a
 * replay or a retry never forwards an event twice.
 */
static void
forward_after_apply(int64 event_id, const char *webhook, const char *environment,
					const char *event, const char *order_id, Jsonb *payload)
{
	uint64		gen = bw_config_generation();
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	int			ret;

	if (event == NULL || order_id == NULL)
		return;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/* without shared memory, or with endpoints changed by us: look again */
	if (!forward_known || gen == 0 || gen != forward_generation ||
		bw_config_changed_locally())
	{
		ret = SPI_execute("SELECT EXISTS (SELECT FROM biteship_webhook.endpoints "
						  " WHERE forward_events IS NOT NULL "
						  "   AND pg_catalog.cardinality(forward_events) > 0)",
						  true, 0);
		if (ret != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "could not look up forwarding endpoints");
		{
			bool		isnull;

			forward_any = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
													 SPI_tuptable->tupdesc, 1, &isnull));
		}
		forward_generation = gen;
		forward_known = true;
	}
	if (!forward_any)
	{
		SPI_finish();
		return;
	}

	if (plan_forward == NULL)
	{
		Oid			types[6] = {INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, JSONBOID};
		SPIPlanPtr	p;

		p = SPI_prepare("INSERT INTO biteship_webhook.outbox "
						" (endpoint_id, body, ordering_key, idempotency_key, event_id) "
						"SELECT e.id, "
						"  pg_catalog.jsonb_build_object("
						"    'type', $4, "
						"    'timestamp', pg_catalog.to_char(pg_catalog.clock_timestamp() "
						"        AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "
						"    'data', pg_catalog.jsonb_build_object("
						"      'event_id', $1, 'event', $4, 'webhook', $2, 'environment', $3, "
						"      'order', (SELECT pg_catalog.to_jsonb(o) FROM biteship_webhook.orders o "
						"                 WHERE o.environment = $3 AND o.order_id = $5), "
						"      'payload', $6))::pg_catalog.text, "
						"  $3 OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) $5, "
						"  'event:' OPERATOR(pg_catalog.||) $1::pg_catalog.text, "
						"  $1 "
						"FROM biteship_webhook.endpoints e "
						"WHERE $4 OPERATOR(pg_catalog.=) ANY (e.forward_events) "
						"  AND (e.environment IS NULL OR e.environment = $3) "
						"ON CONFLICT (endpoint_id, idempotency_key) WHERE idempotency_key IS NOT NULL "
						"DO NOTHING",
						6, types);
		if (p == NULL || SPI_keepplan(p) != 0)
			elog(ERROR, "could not prepare the forwarding statement");
		plan_forward = p;
	}
	values[0] = Int64GetDatum(event_id);
	if (webhook != NULL)
		values[1] = CStringGetTextDatum(webhook);
	else
		nulls[1] = 'n';
	values[2] = CStringGetTextDatum(environment);
	values[3] = CStringGetTextDatum(event);
	values[4] = CStringGetTextDatum(order_id);
	values[5] = JsonbPGetDatum(payload);
	ret = SPI_execute_plan(plan_forward, values, nulls, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "could not forward event: %s", SPI_result_code_string(ret));
	if (SPI_processed > 0)
	{
		for (uint64 i = 0; i < SPI_processed; i++)
			bw_stats_count_outbox("queued");
		bw_wake_at_commit(BW_LATCH_OUTBOUND);
	}
	SPI_finish();
}

/* Hang the forwarding on the ingest core's after-apply hook. */
void
bw_outbox_init(void)
{
	bw_after_apply_hook = forward_after_apply;
}


/* ----------------------------------------------------------------
 *		the sender's statements
 * ----------------------------------------------------------------
 */

/*
 * Header lines from a jsonb object that was validated when it was stored;
 * an entry that no longer passes (the table was edited by hand) is skipped
 * with a warning rather than sent.
 */
static int
stored_header_lines(Jsonb *headers, const char *whose, MemoryContext cxt,
					char ***lines_out, char ***names_out)
{
	MemoryContext old = CurrentMemoryContext;
	volatile int n = 0;

	*lines_out = NULL;
	*names_out = NULL;
	PG_TRY();
	{
		char	  **lines;
		char	  **names;

		n = header_lines(headers, whose, &lines, &names);
		MemoryContextSwitchTo(cxt);
		*lines_out = palloc(sizeof(char *) * Max(n, 1));
		*names_out = palloc(sizeof(char *) * Max(n, 1));
		for (int i = 0; i < n; i++)
		{
			(*lines_out)[i] = pstrdup(lines[i]);
			(*names_out)[i] = pstrdup(names[i]);
		}
		MemoryContextSwitchTo(old);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(old);
		edata = CopyErrorData();
		FlushErrorState();
		ereport(WARNING,
				(errmsg("biteship_webhook outbound: the headers of %s are not sent", whose),
				 errdetail("%s", edata->message),
				 errhint("Set them again with a valid JSON object of header names and string values.")));
		FreeErrorData(edata);
		n = 0;
	}
	PG_END_TRY();
	return n;
}

/*
 * Every endpoint, with what sending needs.  An endpoint whose signing
 * secret does not parse is kept disabled (it would send unsigned), with a
 * warning.
 */
BwEndpoint *
bw_outbox_load_endpoints(int *nendpoints, MemoryContext cxt)
{
	BwEndpoint *eps;
	int			ret;
	MemoryContext old;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	ret = SPI_execute("SELECT id, name, url, headers, signing_secret, "
					  "  CASE WHEN previous_secret_expires_at > pg_catalog.now() "
					  "       THEN previous_signing_secret END, "
					  "  previous_secret_expires_at, "
					  "  (pg_catalog.date_part('epoch', timeout) * 1000::pg_catalog.float8)::pg_catalog.int8, "
					  "  max_attempts, enabled "
					  "FROM biteship_webhook.endpoints ORDER BY id", true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not load endpoints: %s", SPI_result_code_string(ret));
	old = MemoryContextSwitchTo(cxt);
	eps = palloc0(sizeof(BwEndpoint) * Max(SPI_processed, 1));
	MemoryContextSwitchTo(old);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		BwEndpoint *ep = &eps[i];
		bool		isnull;
		Datum		d;
		char	   *secret;
		char	   *whose;
		const char *err;

		ep->id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		ep->name = MemoryContextStrdup(cxt, SPI_getvalue(tup, desc, 2));
		ep->url = MemoryContextStrdup(cxt, SPI_getvalue(tup, desc, 3));
		whose = psprintf("endpoint \"%s\"", ep->name);
		d = SPI_getbinval(tup, desc, 4, &isnull);
		ep->nheaders = isnull ? 0 :
			stored_header_lines(DatumGetJsonbP(d), whose, cxt,
								&ep->header_lines, &ep->header_names);
		ep->enabled = DatumGetBool(SPI_getbinval(tup, desc, 10, &isnull));
		secret = SPI_getvalue(tup, desc, 5);
		if (secret != NULL)
		{
			if (bw_signing_key_parse(secret, &ep->key, &err))
				ep->has_key = true;
			else
			{
				ereport(WARNING,
						(errmsg("biteship_webhook outbound: the signing secret of %s is invalid; nothing is sent to it", whose),
						 errdetail("%s", err),
						 errhint("Set a new one with biteship_webhook.set_endpoint_secret().")));
				ep->enabled = false;
			}
		}
		secret = SPI_getvalue(tup, desc, 6);
		if (secret != NULL && bw_signing_key_parse(secret, &ep->old_key, &err))
		{
			ep->has_old_key = true;
			ep->old_key_expires = DatumGetTimestampTz(SPI_getbinval(tup, desc, 7, &isnull));
		}
		ep->timeout_ms = (long) DatumGetInt64(SPI_getbinval(tup, desc, 8, &isnull));
		ep->max_attempts = DatumGetInt32(SPI_getbinval(tup, desc, 9, &isnull));
	}
	*nendpoints = (int) SPI_processed;
	SPI_finish();
	return eps;
}

/* An int8[] of in-flight message ids. */
static Datum
int8_array(const int64 *ids, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		d[i] = Int64GetDatum(ids[i]);
	return PointerGetDatum(construct_array(d, n, INT8OID, 8, FLOAT8PASSBYVAL,
										   TYPALIGN_DOUBLE));
}

/*
 * A message of outbox o that no older pending message of its ordering key
 * holds back: the claim takes only those, and the next-due time counts
 * only those.
 */
#define NOT_HELD_BACK \
	"(o.ordering_key IS NULL OR NOT EXISTS (" \
	"   SELECT FROM biteship_webhook.outbox p " \
	"    WHERE p.endpoint_id = o.endpoint_id " \
	"      AND p.ordering_key = o.ordering_key " \
	"      AND p.state = 'pending' AND p.id < o.id)) "

/*
 * Claim up to limit due messages of one endpoint, oldest due first, leaving
 * out those in flight and those behind an older pending message with the
 * same ordering key.  Read-only: what is in flight is the caller's to
 * remember.  Returns how many were written to out (in cxt).
 */
int
bw_outbox_claim(const BwEndpoint *ep, int limit, const int64 *inflight,
				int ninflight, BwOutboxMessage *out, MemoryContext cxt)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[3];
	int			ret;
	int			n;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (plan == NULL)
	{
		Oid			types[3] = {INT4OID, INT8ARRAYOID, INT4OID};
		SPIPlanPtr	p = SPI_prepare(
									"SELECT o.id, o.body, o.content_type, o.headers, o.attempts, "
									"       o.attempts - o.retry_base, o.queued_at, "
									"       o.first_attempt_at IS NULL "
									"  FROM biteship_webhook.outbox o "
									" WHERE o.endpoint_id = $1 AND o.state = 'pending' "
									"   AND o.next_attempt_at <= pg_catalog.clock_timestamp() "
									"   AND o.id <> ALL ($2) "
									"   AND " NOT_HELD_BACK
									" ORDER BY o.next_attempt_at, o.id "
									" LIMIT $3",
									3, types);

		if (p == NULL || SPI_keepplan(p) != 0)
			elog(ERROR, "could not prepare the claim statement");
		plan = p;
	}
	values[0] = Int32GetDatum(ep->id);
	values[1] = int8_array(inflight, ninflight);
	values[2] = Int32GetDatum(limit);
	/* not read-only: it must see the outcomes this transaction just recorded */
	ret = SPI_execute_plan(plan, values, NULL, false, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not claim messages: %s", SPI_result_code_string(ret));
	n = (int) SPI_processed;
	for (int i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		BwOutboxMessage *m = &out[i];
		bool		isnull;
		text	   *body;
		Datum		d;
		MemoryContext old;
		char	   *whose;

		memset(m, 0, sizeof(*m));
		m->id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		m->endpoint_id = ep->id;
		body = DatumGetTextPP(SPI_getbinval(tup, desc, 2, &isnull));
		old = MemoryContextSwitchTo(cxt);
		m->body_len = VARSIZE_ANY_EXHDR(body);
		m->body = palloc(m->body_len + 1);
		memcpy(m->body, VARDATA_ANY(body), m->body_len);
		m->body[m->body_len] = '\0';
		m->content_type = pstrdup(SPI_getvalue(tup, desc, 3));
		MemoryContextSwitchTo(old);
		d = SPI_getbinval(tup, desc, 4, &isnull);
		whose = psprintf("outbox message " INT64_FORMAT, m->id);
		m->nheaders = isnull ? 0 :
			stored_header_lines(DatumGetJsonbP(d), whose, cxt,
								&m->header_lines, &m->header_names);
		m->attempts = DatumGetInt32(SPI_getbinval(tup, desc, 5, &isnull));
		m->attempts_since_retry = DatumGetInt32(SPI_getbinval(tup, desc, 6, &isnull));
		m->queued_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 7, &isnull));
		m->first_attempt = DatumGetBool(SPI_getbinval(tup, desc, 8, &isnull));
	}
	SPI_finish();
	return n;
}

/*
 * When the next message of the given endpoints falls due, or 0 when none
 * is scheduled.  Messages in "exclude" (in flight, or just claimed) do not
 * count, and neither does a message waiting behind an older pending one of
 * its ordering key: it cannot be claimed before that one is done, and
 * counting it would make the sender wake at once, claim nothing, and wake
 * again.  The caller leaves out endpoints without a free slot; a finished
 * call wakes the sender for those.
 */
TimestampTz
bw_outbox_next_due(const int32 *endpoint_ids, int nids, const int64 *exclude,
				   int nexclude)
{
	static SPIPlanPtr plan = NULL;
	Datum	   *ids;
	Datum		values[2];
	int			ret;
	bool		isnull;
	Datum		d;
	TimestampTz result = 0;

	if (nids == 0)
		return 0;
	ids = palloc(sizeof(Datum) * nids);
	for (int i = 0; i < nids; i++)
		ids[i] = Int32GetDatum(endpoint_ids[i]);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (plan == NULL)
	{
		Oid			types[2] = {INT4ARRAYOID, INT8ARRAYOID};
		SPIPlanPtr	p = SPI_prepare(
									"SELECT pg_catalog.min(x.next_attempt_at) "
									"  FROM pg_catalog.unnest($1) AS e(id) "
									" CROSS JOIN LATERAL ("
									"   SELECT o.next_attempt_at FROM biteship_webhook.outbox o "
									"    WHERE o.endpoint_id = e.id AND o.state = 'pending' "
									"      AND o.id <> ALL ($2) "
									"      AND " NOT_HELD_BACK
									"    ORDER BY o.next_attempt_at LIMIT 1) x",
									2, types);

		if (p == NULL || SPI_keepplan(p) != 0)
			elog(ERROR, "could not prepare the next-due statement");
		plan = p;
	}
	values[0] = PointerGetDatum(construct_array(ids, nids, INT4OID, 4, true, TYPALIGN_INT));
	values[1] = int8_array(exclude, nexclude);
	ret = SPI_execute_plan(plan, values, NULL, false, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not compute the next due message: %s", SPI_result_code_string(ret));
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull)
		result = DatumGetTimestampTz(d);
	SPI_finish();
	return result;
}

/* Build a text[] (with NULLs) from C strings. */
static Datum
text_array(char **strs, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));
	bool	   *nulls = palloc(sizeof(bool) * Max(n, 1));
	int			dims[1] = {n};
	int			lbs[1] = {1};

	for (int i = 0; i < n; i++)
	{
		nulls[i] = strs[i] == NULL;
		d[i] = nulls[i] ? (Datum) 0 : CStringGetTextDatum(strs[i]);
	}
	return PointerGetDatum(construct_md_array(d, nulls, 1, dims, lbs, TEXTOID,
											  -1, false, TYPALIGN_INT));
}

/* Build an array of a fixed-size by-value type, NULL where isnull[i]. */
static Datum
scalar_array(Datum *d, bool *isnull, int n, Oid type, int len, bool byval, char align)
{
	int			dims[1] = {n};
	int			lbs[1] = {1};

	return PointerGetDatum(construct_md_array(d, isnull, 1, dims, lbs, type,
											  len, byval, align));
}

/*
 * Record the outcomes of a turn: one UPDATE of the messages and one INSERT
 * of the attempts, whatever their number.  A message that is no longer
 * pending (its endpoint was dropped meanwhile) keeps its state; its attempt
 * is recorded all the same.
 */
void
bw_outbox_record(const BwOutboxResult *r, int n)
{
	static SPIPlanPtr plan_update = NULL;
	static SPIPlanPtr plan_attempts = NULL;
	Datum	   *ids = palloc(sizeof(Datum) * n);
	Datum	   *attempt = palloc(sizeof(Datum) * n);
	char	  **state = palloc(sizeof(char *) * n);
	Datum	   *next = palloc(sizeof(Datum) * n);
	Datum	   *started = palloc(sizeof(Datum) * n);
	Datum	   *finished = palloc(sizeof(Datum) * n);
	Datum	   *status = palloc(sizeof(Datum) * n);
	bool	   *status_null = palloc(sizeof(bool) * n);
	bool	   *no_null = palloc0(sizeof(bool) * n);
	char	  **error = palloc(sizeof(char *) * n);
	char	  **rh = palloc(sizeof(char *) * n);
	char	  **rb = palloc(sizeof(char *) * n);
	Datum		values[10];
	int			ret;

	if (n == 0)
		return;
	for (int i = 0; i < n; i++)
	{
		ids[i] = Int64GetDatum(r[i].id);
		attempt[i] = Int32GetDatum(r[i].attempt);
		state[i] = (char *) r[i].state;
		next[i] = TimestampTzGetDatum(r[i].next_attempt_at);
		started[i] = TimestampTzGetDatum(r[i].started_at);
		finished[i] = TimestampTzGetDatum(r[i].finished_at);
		status[i] = Int32GetDatum((int32) r[i].status);
		status_null[i] = r[i].status == 0;
		error[i] = r[i].error;
		rh[i] = r[i].response_headers;
		rb[i] = r[i].response_body;
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (plan_update == NULL)
	{
		Oid			types[7] = {INT8ARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID,
			INT4ARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID, TIMESTAMPTZARRAYOID};
		Oid			atypes[8] = {INT8ARRAYOID, INT4ARRAYOID, TIMESTAMPTZARRAYOID,
			TIMESTAMPTZARRAYOID, INT4ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID};
		SPIPlanPtr	pu,
					pa;

		pu = SPI_prepare("UPDATE biteship_webhook.outbox o SET "
						 "  state = u.state, attempts = o.attempts + 1, "
						 "  next_attempt_at = u.next_at, last_status = u.status, "
						 "  last_error = u.error, "
						 "  first_attempt_at = COALESCE(o.first_attempt_at, u.started_at), "
						 "  delivered_at = CASE WHEN u.state = 'delivered' THEN u.finished_at END "
						 "FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5), pg_catalog.unnest($6), pg_catalog.unnest($7)) "
						 "     AS u(id, state, next_at, status, error, started_at, finished_at) "
						 "WHERE o.id = u.id AND o.state = 'pending'",
						 7, types);
		pa = SPI_prepare("INSERT INTO biteship_webhook.outbox_attempts "
						 " (message_id, attempt, started_at, duration, status, error, "
						 "  response_headers, response_body) "
						 "SELECT u.id, u.attempt, u.started_at, u.finished_at - u.started_at, "
						 "       u.status, u.error, u.rh, u.rb "
						 "FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5), pg_catalog.unnest($6), pg_catalog.unnest($7), pg_catalog.unnest($8)) "
						 "     AS u(id, attempt, started_at, finished_at, status, error, rh, rb) "
						 "ON CONFLICT (message_id, attempt) DO NOTHING",
						 8, atypes);
		if (pu == NULL || pa == NULL || SPI_keepplan(pu) != 0 || SPI_keepplan(pa) != 0)
			elog(ERROR, "could not prepare the recording statements");
		plan_update = pu;
		plan_attempts = pa;
	}

	values[0] = scalar_array(ids, no_null, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
	values[1] = text_array(state, n);
	values[2] = scalar_array(next, no_null, n, TIMESTAMPTZOID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
	values[3] = scalar_array(status, status_null, n, INT4OID, 4, true, TYPALIGN_INT);
	values[4] = text_array(error, n);
	values[5] = scalar_array(started, no_null, n, TIMESTAMPTZOID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
	values[6] = scalar_array(finished, no_null, n, TIMESTAMPTZOID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
	ret = SPI_execute_plan(plan_update, values, NULL, false, 0);
	if (ret != SPI_OK_UPDATE)
		elog(ERROR, "could not record outcomes: %s", SPI_result_code_string(ret));

	values[0] = scalar_array(ids, no_null, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
	values[1] = scalar_array(attempt, no_null, n, INT4OID, 4, true, TYPALIGN_INT);
	values[2] = scalar_array(started, no_null, n, TIMESTAMPTZOID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
	values[3] = scalar_array(finished, no_null, n, TIMESTAMPTZOID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
	values[4] = scalar_array(status, status_null, n, INT4OID, 4, true, TYPALIGN_INT);
	values[5] = text_array(error, n);
	values[6] = text_array(rh, n);
	values[7] = text_array(rb, n);
	ret = SPI_execute_plan(plan_attempts, values, NULL, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "could not record attempts: %s", SPI_result_code_string(ret));
	SPI_finish();
}

/*
 * What a turn's outcomes mean for the endpoints that had them: a 410
 * disables the endpoint; a success clears failing_since; a failure sets it,
 * and an endpoint failing for longer than endpoint_disable_after is
 * disabled, with a warning and a NOTIFY on biteship_webhook_outbox.  Only
 * transitions are written.
 */
void
bw_outbox_endpoint_outcomes(BwEndpoint *eps, int neps)
{
	bool		connected = false;

	for (int i = 0; i < neps; i++)
	{
		BwEndpoint *ep = &eps[i];
		Oid			types[2] = {INT4OID, FLOAT8OID};
		Datum		values[2];

		if (!ep->touched)
			continue;
		if (!connected)
		{
			if (SPI_connect() != SPI_OK_CONNECT)
				elog(ERROR, "SPI_connect failed");
			connected = true;
		}
		values[0] = Int32GetDatum(ep->id);
		values[1] = Float8GetDatum((double) bw_endpoint_disable_after);
		if (ep->gone)
		{
			run("UPDATE biteship_webhook.endpoints SET enabled = false, "
				"  disabled_at = pg_catalog.now(), "
				"  disabled_reason = 'the endpoint answered 410 Gone', "
				"  updated_at = pg_catalog.now() "
				"WHERE id = $1 AND enabled",
				1, types, values, NULL, false, SPI_OK_UPDATE);
			if (SPI_processed > 0)
			{
				ereport(WARNING,
						(errmsg("biteship_webhook outbound: endpoint \"%s\" answered 410 Gone and is disabled", ep->name),
						 errdetail("Its pending messages wait until it is enabled again."),
						 errhint("Fix the endpoint, then SELECT biteship_webhook.set_endpoint_enabled('%s', true).", ep->name)));
				Async_Notify("biteship_webhook_outbox",
							 psprintf("{\"endpoint\":\"%s\",\"disabled\":\"410 Gone\"}", ep->name));
			}
			ep->enabled = false;
		}
		else if (ep->any_success)
			run("UPDATE biteship_webhook.endpoints SET failing_since = NULL "
				"WHERE id = $1 AND failing_since IS NOT NULL",
				1, types, values, NULL, false, SPI_OK_UPDATE);
		else if (ep->any_failure)
		{
			run("UPDATE biteship_webhook.endpoints SET failing_since = pg_catalog.now() "
				"WHERE id = $1 AND failing_since IS NULL",
				1, types, values, NULL, false, SPI_OK_UPDATE);
			if (bw_endpoint_disable_after > 0)
			{
				run("UPDATE biteship_webhook.endpoints SET enabled = false, "
					"  disabled_at = pg_catalog.now(), "
					"  disabled_reason = 'every attempt failed since ' OPERATOR(pg_catalog.||) "
					"      failing_since::pg_catalog.text, "
					"  updated_at = pg_catalog.now() "
					"WHERE id = $1 AND enabled AND failing_since < "
					"  pg_catalog.now() - pg_catalog.make_interval(secs => $2)",
					2, types, values, NULL, false, SPI_OK_UPDATE);
				if (SPI_processed > 0)
				{
					ereport(WARNING,
							(errmsg("biteship_webhook outbound: endpoint \"%s\" is disabled: every attempt has failed for longer than biteship_webhook.endpoint_disable_after", ep->name),
							 errhint("Fix the endpoint, then SELECT biteship_webhook.set_endpoint_enabled('%s', true).", ep->name)));
					Async_Notify("biteship_webhook_outbox",
								 psprintf("{\"endpoint\":\"%s\",\"disabled\":\"failing\"}", ep->name));
					ep->enabled = false;
				}
			}
		}
		ep->touched = ep->any_success = ep->any_failure = ep->gone = false;
	}
	if (connected)
		SPI_finish();
}

/*
 * Purge up to limit delivered and cancelled messages older than the
 * retention, with their attempts; returns how many.
 */
int64
bw_outbox_purge_batch(int retention_s, int limit)
{
	Oid			types[2] = {FLOAT8OID, INT4OID};
	Datum		values[2] = {Float8GetDatum((double) retention_s), Int32GetDatum(limit)};
	bool		isnull;
	int64		n;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	run("WITH gone AS ("
		" DELETE FROM biteship_webhook.outbox WHERE id IN ("
		"  SELECT id FROM biteship_webhook.outbox "
		"   WHERE created_at < pg_catalog.now() - pg_catalog.make_interval(secs => $1) "
		"     AND state IN ('delivered', 'cancelled') "
		"   LIMIT $2) "
		" RETURNING id), "
		"attempts AS ("
		" DELETE FROM biteship_webhook.outbox_attempts a USING gone "
		"  WHERE a.message_id = gone.id) "
		"SELECT pg_catalog.count(*) FROM gone",
		2, types, values, NULL, false, SPI_OK_SELECT);
	n = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
									SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	return n;
}
