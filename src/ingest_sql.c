/*-------------------------------------------------------------------------
 *
 * ingest_sql.c
 *	  SQL-callable functions of biteship_webhook: webhook administration,
 *	  ingest(), replay and purging.
 *
 * These are thin wrappers: argument checking with clear errors, then the
 * ingest core (ingest.c) or a short statement.  They run with the caller's
 * privileges; none of them is SECURITY DEFINER.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "biteship_webhook.h"

PG_FUNCTION_INFO_V1(bw_create_webhook);
PG_FUNCTION_INFO_V1(bw_drop_webhook);
PG_FUNCTION_INFO_V1(bw_add_webhook_secret);
PG_FUNCTION_INFO_V1(bw_remove_webhook_secret);
PG_FUNCTION_INFO_V1(bw_ingest);
PG_FUNCTION_INFO_V1(bw_replay);
PG_FUNCTION_INFO_V1(bw_replay_failed);
PG_FUNCTION_INFO_V1(bw_purge_events);
PG_FUNCTION_INFO_V1(bw_config_changed);

static const char *const subscribable_events[] = {
	"order.status", "order.waybill_id", "order.price"
};

/* Fetch a text argument as a C string, insisting it is not NULL. */
char *
bw_required_text(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", argname)));
	return text_to_cstring(PG_GETARG_TEXT_PP(argno));
}

/* A text argument as a C string, or NULL. */
char *
bw_optional_text(FunctionCallInfo fcinfo, int argno)
{
	return PG_ARGISNULL(argno) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(argno));
}

/* Is every character of s one of those in allowed (plus alphanumerics)? */
static bool
only_chars(const char *s, const char *allowed, size_t maxlen)
{
	size_t		n = strlen(s);

	if (n == 0 || n > maxlen)
		return false;
	for (size_t i = 0; i < n; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || strchr(allowed, c) != NULL))
			return false;
	}
	return true;
}

/* Run a statement with arguments, insisting on the expected result code. */
static void
run(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls,
	int expected)
{
	int			ret = SPI_execute_with_args(sql, nargs, types, values, nulls,
											false, 0);

	if (ret != expected)
		elog(ERROR, "statement failed: %s", SPI_result_code_string(ret));
}

/* The id of a webhook by name, or an error naming it. */
static int32
webhook_id(const char *name)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	bool		isnull;

	values[0] = CStringGetTextDatum(name);
	run("SELECT id FROM biteship_webhook.webhooks WHERE name = $1",
		1, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("webhook \"%s\" does not exist", name),
				 errhint("List webhooks with: SELECT name, path FROM biteship_webhook.webhooks;")));
	return DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
									   SPI_tuptable->tupdesc, 1, &isnull));
}

/* Store a new secret digest for a webhook; returns the secret's id. */
static int32
insert_secret(int32 webhook, const char *secret, Datum expires_at, bool expires_null)
{
	Oid			types[3] = {INT4OID, BYTEAOID, TIMESTAMPTZOID};
	Datum		values[3];
	char		nulls[3] = {' ', ' ', expires_null ? 'n' : ' '};
	uint8		digest[BW_SHA256_LEN];
	bytea	   *b;
	bool		isnull;

	if (secret[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("signature secret must not be empty")));

	bw_sha256(secret, strlen(secret), digest);
	b = palloc(VARHDRSZ + BW_SHA256_LEN);
	SET_VARSIZE(b, VARHDRSZ + BW_SHA256_LEN);
	memcpy(VARDATA(b), digest, BW_SHA256_LEN);

	values[0] = Int32GetDatum(webhook);
	values[1] = PointerGetDatum(b);
	values[2] = expires_at;
	run("INSERT INTO biteship_webhook.webhook_secrets (webhook_id, secret_sha256, expires_at) "
		"VALUES ($1, $2, $3) ON CONFLICT (webhook_id, secret_sha256) "
		"DO UPDATE SET expires_at = EXCLUDED.expires_at RETURNING id",
		3, types, values, nulls, SPI_OK_INSERT_RETURNING);
	return DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
									   SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * create_webhook(name, path, environment, events, signature_key,
 *				  signature_secret, description) returns integer
 */
Datum
bw_create_webhook(PG_FUNCTION_ARGS)
{
	char	   *name = bw_required_text(fcinfo, 0, "name");
	char	   *path = bw_required_text(fcinfo, 1, "path");
	char	   *environment = bw_required_text(fcinfo, 2, "environment");
	char	   *signature_key = bw_optional_text(fcinfo, 4);
	char	   *signature_secret = bw_optional_text(fcinfo, 5);
	char	   *description = bw_optional_text(fcinfo, 6);
	ArrayType  *events;
	Datum	   *elems;
	bool	   *elemnulls;
	int			nelems;
	Oid			types[6] = {TEXTOID, TEXTOID, TEXTOID, TEXTARRAYOID, TEXTOID, TEXTOID};
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	bool		isnull;
	int32		id;

	if (PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("events must not be null")));
	events = PG_GETARG_ARRAYTYPE_P(3);

	if (!only_chars(name, "_.-", 63))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid webhook name \"%s\"", name),
				 errdetail("A name has 1 to 63 letters, digits, \"_\", \".\" or \"-\".")));
	if (path[0] != '/')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("webhook path must start with \"/\""),
				 errdetail("The path given was \"%s\".", path),
				 errhint("Use the path part of the URL you register in Biteship, e.g. '/biteship/live'.")));
	if (strchr(path, '?') != NULL || strchr(path, '#') != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("webhook path must not contain a query string or fragment")));
	if (strcmp(path, "/healthz") == 0 || strcmp(path, "/metrics") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("webhook path \"%s\" is reserved by the listener", path)));
	if (strcmp(environment, "live") != 0 && strcmp(environment, "test") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("environment must be 'live' or 'test'"),
				 errdetail("The environment given was \"%s\".", environment)));

	deconstruct_array(events, TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &elemnulls, &nelems);
	if (nelems == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a webhook must subscribe to at least one event")));
	for (int i = 0; i < nelems; i++)
	{
		char	   *ev;
		bool		known = false;

		if (elemnulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("events must not contain nulls")));
		ev = TextDatumGetCString(elems[i]);
		for (int j = 0; j < lengthof(subscribable_events); j++)
			known |= strcmp(ev, subscribable_events[j]) == 0;
		if (!known)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown event \"%s\"", ev),
					 errhint("Biteship sends order.status, order.waybill_id and order.price.")));
	}

	if (signature_key != NULL && !only_chars(signature_key, "!#$%&'*+.^_`|~-", 128))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid signature header name \"%s\"", signature_key),
				 errdetail("An HTTP header name has 1 to 128 letters, digits or token characters, and no spaces or colons.")));
	if ((signature_key == NULL) != (signature_secret == NULL))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("signature_key and signature_secret must be given together"),
				 errhint("They are the \"Headers Signature Key\" and \"Headers Signature Secret\" of Biteship's webhook form.")));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	{
		Oid			ctypes[2] = {TEXTOID, TEXTOID};
		Datum		cvalues[2] = {CStringGetTextDatum(name), CStringGetTextDatum(path)};

		run("SELECT name = $1, path = $2 FROM biteship_webhook.webhooks "
			"WHERE name = $1 OR path = $2",
			2, ctypes, cvalues, NULL, SPI_OK_SELECT);
		if (SPI_processed > 0)
		{
			bool		same_name = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
															   SPI_tuptable->tupdesc, 1, &isnull));

			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_OBJECT),
					 same_name ?
					 errmsg("webhook \"%s\" already exists", name) :
					 errmsg("another webhook already uses path \"%s\"", path),
					 errhint("Drop it first with biteship_webhook.drop_webhook(), or pick another %s.",
							 same_name ? "name" : "path")));
		}
	}

	values[0] = CStringGetTextDatum(name);
	values[1] = CStringGetTextDatum(path);
	values[2] = CStringGetTextDatum(environment);
	values[3] = PointerGetDatum(events);
	if (signature_key)
		values[4] = CStringGetTextDatum(signature_key);
	else
		nulls[4] = 'n';
	if (description)
		values[5] = CStringGetTextDatum(description);
	else
		nulls[5] = 'n';
	run("INSERT INTO biteship_webhook.webhooks "
		"(name, path, environment, events, signature_key, description) "
		"VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
		6, types, values, nulls, SPI_OK_INSERT_RETURNING);
	id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
									 SPI_tuptable->tupdesc, 1, &isnull));

	if (signature_secret != NULL)
		insert_secret(id, signature_secret, (Datum) 0, true);

	SPI_finish();
	PG_RETURN_INT32(id);
}

/*
 * drop_webhook(name): remove a webhook and its secrets.  Its events stay in
 * the log until purged.
 */
Datum
bw_drop_webhook(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Oid			types[1] = {INT4OID};
	Datum		values[1];

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	values[0] = Int32GetDatum(webhook_id(name));
	run("DELETE FROM biteship_webhook.webhooks WHERE id = $1",
		1, types, values, NULL, SPI_OK_DELETE);
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * add_webhook_secret(name, secret, expires_at): another valid secret, for
 * rotation.  Returns its id.
 */
Datum
bw_add_webhook_secret(PG_FUNCTION_ARGS)
{
	char	   *name = bw_required_text(fcinfo, 0, "name");
	char	   *secret = bw_required_text(fcinfo, 1, "secret");
	Oid			types[1] = {INT4OID};
	Datum		values[1];
	bool		isnull;
	int32		wid;
	int32		id;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	wid = webhook_id(name);

	values[0] = Int32GetDatum(wid);
	run("SELECT signature_key IS NOT NULL FROM biteship_webhook.webhooks WHERE id = $1",
		1, types, values, NULL, SPI_OK_SELECT);
	if (!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
									SPI_tuptable->tupdesc, 1, &isnull)))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("webhook \"%s\" has no signature key", name),
				 errhint("Set one first: UPDATE biteship_webhook.webhooks SET signature_key = '<header name>' WHERE name = '%s';",
						 name)));

	id = insert_secret(wid, secret,
					   PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2),
					   PG_ARGISNULL(2));
	SPI_finish();
	PG_RETURN_INT32(id);
}

/*
 * remove_webhook_secret(name, secret_id)
 */
Datum
bw_remove_webhook_secret(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	int32		secret_id = PG_GETARG_INT32(1);
	Oid			types[2] = {INT4OID, INT4OID};
	Datum		values[2];
	bool		isnull;
	int64		remaining;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	values[0] = Int32GetDatum(webhook_id(name));
	values[1] = Int32GetDatum(secret_id);
	run("DELETE FROM biteship_webhook.webhook_secrets WHERE webhook_id = $1 AND id = $2",
		2, types, values, NULL, SPI_OK_DELETE);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("webhook \"%s\" has no secret with id %d", name, secret_id),
				 errhint("List them with: SELECT id, created_at, expires_at FROM biteship_webhook.webhook_secrets;")));

	run("SELECT count(*) FROM biteship_webhook.webhook_secrets "
		"WHERE webhook_id = $1 AND (expires_at IS NULL OR expires_at > now())",
		1, types, values, NULL, SPI_OK_SELECT);
	remaining = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
											SPI_tuptable->tupdesc, 1, &isnull));
	if (remaining == 0)
		ereport(WARNING,
				(errmsg("webhook \"%s\" has no valid secret left", name),
				 errdetail("Every signed delivery will be answered 401 until a secret is added."),
				 errhint("Add one with biteship_webhook.add_webhook_secret().")));
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * Turn a jsonb object of headers into an array of BwHeader.  Non-string
 * values are taken in their JSON text form.
 */
static BwHeader *
headers_from_jsonb(Jsonb *jb, int *nheaders)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	BwHeader   *headers;
	int			n = 0;
	char	   *key = NULL;

	if (!JB_ROOT_IS_OBJECT(jb))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("headers must be a JSON object"),
				 errhint("Pass them as '{\"header-name\": \"value\"}'.")));

	headers = palloc(sizeof(BwHeader) * Max(JB_ROOT_COUNT(jb), 1));
	it = JsonbIteratorInit(&jb->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
			key = pnstrdup(v.val.string.val, v.val.string.len);
		else if (tok == WJB_VALUE)
		{
			headers[n].name = key;
			if (v.type == jbvString)
				headers[n].value = pnstrdup(v.val.string.val, v.val.string.len);
			else if (v.type == jbvNull)
				headers[n].value = "";
			else
			{
				Jsonb	   *single = JsonbValueToJsonb(&v);

				headers[n].value = JsonbToCString(NULL, &single->root, VARSIZE(single));
			}
			n++;
		}
	}
	*nheaders = n;
	return headers;
}

/*
 * ingest(webhook, body, headers): the listener's code path without HTTP.
 */
Datum
bw_ingest(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *name = bw_required_text(fcinfo, 0, "webhook");
	bytea	   *body;
	BwDelivery	d;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("body must not be null"),
				 errhint("Pass an empty string for an empty body.")));
	body = PG_GETARG_BYTEA_PP(1);

	InitMaterializedSRF(fcinfo, 0);

	memset(&d, 0, sizeof(d));
	d.webhook = bw_lookup_webhook(name, NULL);
	if (d.webhook == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("webhook \"%s\" does not exist", name),
				 errhint("Create it with biteship_webhook.create_webhook().")));
	d.body = VARDATA_ANY(body);
	d.body_len = VARSIZE_ANY_EXHDR(body);
	if (!PG_ARGISNULL(2))
		d.headers = headers_from_jsonb(PG_GETARG_JSONB_P(2), &d.nheaders);
	d.received_at = GetCurrentTimestamp();
	d.deferred = (bw_apply_mode == BW_APPLY_DEFERRED);

	bw_ingest_one(&d);
	bw_ingest_apply(&d);

	values[0] = Int32GetDatum(d.http_status);
	if (d.event_id > 0)
		values[1] = Int64GetDatum(d.event_id);
	else
		nulls[1] = true;
	values[2] = CStringGetTextDatum(d.state);
	if (d.error != NULL)
		values[3] = CStringGetTextDatum(d.error);
	else
		nulls[3] = true;
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);

	PG_RETURN_VOID();
}

/*
 * replay(event_id): apply one stored event again; returns its new state.
 */
Datum
bw_replay(PG_FUNCTION_ARGS)
{
	char	   *error;
	const char *state = bw_apply_stored_event(PG_GETARG_INT64(0), "replay", false, &error);

	PG_RETURN_TEXT_P(cstring_to_text(state));
}

/*
 * replay_failed(webhook): apply every failed event again, oldest first;
 * returns how many were replayed.  The ids are read without locks; an event
 * that the dispatcher (or another replay) applies meanwhile is skipped once
 * its lock is ours, and not counted.
 */
Datum
bw_replay_failed(PG_FUNCTION_ARGS)
{
	char	   *name = bw_optional_text(fcinfo, 0);
	Oid			types[1] = {INT4OID};
	Datum		values[1];
	char		nulls[1] = {' '};
	int64	   *ids;
	uint64		n;
	int64		still_failed = 0;
	int64		replayed = 0;
	MemoryContext cxt = CurrentMemoryContext;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (name != NULL)
		values[0] = Int32GetDatum(webhook_id(name));
	else
		nulls[0] = 'n';
	run("SELECT id FROM biteship_webhook.events "
		"WHERE state = 'failed' AND ($1 IS NULL OR webhook_id = $1) ORDER BY id",
		1, types, values, nulls, SPI_OK_SELECT);
	n = SPI_processed;
	ids = MemoryContextAlloc(cxt, sizeof(int64) * Max(n, 1));
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;

		ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
											 SPI_tuptable->tupdesc, 1, &isnull));
	}
	SPI_finish();

	for (uint64 i = 0; i < n; i++)
	{
		char	   *error;
		const char *state;

		CHECK_FOR_INTERRUPTS();
		state = bw_apply_stored_event(ids[i], "replay", true, &error);
		if (state == NULL)
			continue;
		replayed++;
		if (strcmp(state, "failed") == 0)
			still_failed++;
	}
	if (still_failed > 0)
		ereport(NOTICE,
				(errmsg(INT64_FORMAT " of " INT64_FORMAT " replayed events failed again",
						still_failed, replayed),
				 errhint("See last_error in biteship_webhook.events.")));

	PG_RETURN_INT64(replayed);
}

/*
 * purge_events(older_than, include_failed): delete old events; returns how
 * many.  Failed and pending events are kept unless include_failed.
 */
Datum
bw_purge_events(PG_FUNCTION_ARGS)
{
	Oid			types[2] = {INTERVALOID, BOOLOID};
	Datum		values[2] = {PG_GETARG_DATUM(0), PG_GETARG_DATUM(1)};
	uint64		n;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	run("DELETE FROM biteship_webhook.events "
		"WHERE received_at < now() - $1 "
		"  AND ($2 OR state NOT IN ('failed', 'pending'))",
		2, types, values, NULL, SPI_OK_DELETE);
	n = SPI_processed;
	SPI_finish();
	PG_RETURN_INT64((int64) n);
}

/*
 * config_changed(): trigger on the configuration tables the workers cache
 * (webhooks, endpoints): the configuration generation moves when the
 * transaction commits, and the workers reload before their next batch.
 */
Datum
bw_config_changed(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("config_changed() must be called as a trigger")));
	bw_config_changed_at_commit();
	/* an AFTER trigger: the result is ignored */
	return PointerGetDatum(NULL);
}
