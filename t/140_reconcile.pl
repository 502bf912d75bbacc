# Copyright (c) biteship_webhook authors
#
# Reconciliation against a mock Biteship API (test/tools/biteship_api.py, on
# 127.0.0.1): sync_order() of status, history, waybill and prices; history
# that arrives out of order against webhooks already received; every
# Biteship error code; 429 backoff; automatic healing of a stale order
# whose webhook was never delivered; a paced backfill of 100 orders that
# never puts more than the limit into one second, while the listener keeps
# answering; interruption; keys that never reach logs or the events log.
use strict;
use warnings;

use lib 't';
use BiteshipNode;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $api = start_api();
my $node = bw_node('reconcile', conf => qq{
biteship_webhook.api_base_url = '$api->{url}'
biteship_webhook.api_timeout = '3s'
biteship_webhook.reconcile_after = 0
biteship_webhook.api_rate_limit = 10
});
bw_setup_webhook($node);
my @sig = ("$SIG_HEADER: $SECRET");

# an answer of GET /v1/orders/{id}: the recorded shape, with our id,
# status and history
my $shape = decode_json(slurp_file('test/data/api/order_dropping_off.json'));

sub order_answer
{
	my ($id, $status, @history) = @_;
	my %o = %$shape;
	$o{id} = $id;
	$o{status} = $status;
	$o{courier} = { %{ $shape->{courier} } };
	$o{courier}{history} = [ map { { service_type => 'reg', status => $_->[0],
		note => "note $_->[0]", updated_at => $_->[1] } } @history ];
	return encode_json(\%o);
}

my @full = (
	[ 'confirmed', '2025-03-10T09:15:22+07:00' ],
	[ 'allocated', '2025-03-10T11:02:47+07:00' ],
	[ 'picking_up', '2025-03-10T13:40:05+07:00' ],
	[ 'picked', '2025-03-10T14:18:31+07:00' ],
	[ 'dropping_off', '2025-03-11T08:05:10+07:00' ]);

sub sq { return $node->safe_psql('postgres', $_[0]) }

# as README.md says: keep the key out of the statement log
sub set_key
{
	my ($key) = @_;
	sq("SET log_statement = 'none'; SELECT biteship_webhook.set_api_key('live', '$key')");
}

sub requests_for
{
	my ($id) = @_;
	return scalar grep { $_->{path} eq "/v1/orders/$id" } api_log($api);
}

# --- no key yet
my ($ret, $out, $err) = $node->psql('postgres', "SELECT biteship_webhook.sync_order('aaaa')");
like($err, qr/no Biteship API key is set for environment live/, 'sync_order without a key says so');
set_key($API_KEY);

# --- 1. a sync of status, history, waybill and price
my $id1 = '67cd3f0a8e2b1c0012a4f9d1';
api_control($api, "orders/$id1", slurp_file('test/data/api/order_dropping_off.json'));
is(sq("SELECT status FROM biteship_webhook.sync_order('$id1')"), 'dropping_off',
	'sync_order returns the order row, with its status');
is(sq("SELECT concat_ws(' ', courier_waybill_id, courier_tracking_id, courier_company, price, shipment_fee,
	cash_on_delivery_fee, status_updated_at AT TIME ZONE 'UTC')
	FROM biteship_webhook.orders WHERE order_id = '$id1'"),
	'0114392500012345 67cd3f0a8e2b1c0012a4f9d4 jne 19750 18000 0 2025-03-11 01:05:10',
	'waybill, tracking id, courier, prices and the status time are applied');
is(sq("SELECT string_agg(status || '/' || source || '/' || (note IS NOT NULL), ',' ORDER BY occurred_at)
	FROM biteship_webhook.order_status_history WHERE order_id = '$id1'"),
	'confirmed/api/true,allocated/api/true,picking_up/api/true,picked/api/true,dropping_off/api/true',
	'every history entry lands in the history, source api, with its note');
is(sq("SELECT concat_ws(' ', event, webhook_id, state, http_status, headers->>'source', headers->>'request',
	payload->>'id' IS NOT NULL)
	FROM biteship_webhook.events WHERE order_id = '$id1' AND event = 'api.order'"),
	"api.order 0 applied 200 api GET /v1/orders/$id1 t",
	'the fetch is in the events log: source, request, the API status and the answer');
is(sq("SELECT last_result || ' ' || last_http_status || ' ' || (healed_at IS NOT NULL)
	FROM biteship_webhook.order_syncs WHERE order_id = '$id1'"), 'ok 200 true',
	'the sync is recorded on order_syncs');
my ($auth_seen) = grep { $_->{path} eq "/v1/orders/$id1" } api_log($api);
ok($auth_seen->{auth}, 'the request carried the authorization header');

# the same answer again: nothing changes, no second history
is(sq("SELECT (biteship_webhook.sync_order('$id1')).status"), 'dropping_off', 'a second sync works');
is(sq("SELECT count(*) || ' ' || sum(delivery_count) FROM biteship_webhook.events WHERE order_id = '$id1'"),
	'1 2', 'an unchanged answer only counts a delivery');
is(sq("SELECT count(*) FROM biteship_webhook.order_status_history WHERE order_id = '$id1'"), '5',
	'and adds no history');

# --- 2. history out of order against webhooks already received
my $id2 = '67cd3f0a8e2b1c0012a4f9e2';
sq(q{CREATE TABLE public.seen (tg text, status text, at timestamptz DEFAULT clock_timestamp());
GRANT INSERT ON public.seen TO biteship_webhook_apply;
CREATE FUNCTION public.seen_order() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO public.seen (tg, status) VALUES ('order', NEW.status); RETURN NULL; END $$;
CREATE FUNCTION public.seen_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO public.seen (tg, status) VALUES ('history', NEW.status); RETURN NULL; END $$;
CREATE TRIGGER seen_order AFTER UPDATE OF status ON biteship_webhook.orders
	FOR EACH ROW EXECUTE FUNCTION public.seen_order();
CREATE TRIGGER seen_history AFTER INSERT ON biteship_webhook.order_status_history
	FOR EACH ROW EXECUTE FUNCTION public.seen_history();});
# the webhooks of allocated (milliseconds) and dropping_off arrived; two were missed
for my $w ([ 'allocated', '2025-03-10T04:02:47.512Z' ], [ 'dropping_off', '2025-03-11T01:05:10.077Z' ])
{
	my ($st) = http($node, 'POST', '/biteship/live', headers => \@sig,
		body => qq({"event":"order.status","order_id":"$id2","status":"$w->[0]","updated_at":"$w->[1]"}));
	is($st, 200, "webhook $w->[0] delivered");
}
sq('TRUNCATE public.seen');
api_control($api, "orders/$id2", order_answer($id2, 'dropping_off', @full));
is(sq("SELECT status FROM biteship_webhook.sync_order('$id2')"), 'dropping_off',
	'the newest status stays');
is(sq("SELECT string_agg(status || '/' || source, ',' ORDER BY occurred_at)
	FROM biteship_webhook.order_status_history WHERE order_id = '$id2'"),
	'confirmed/api,allocated/webhook,picking_up/api,picked/api,dropping_off/webhook',
	'the missed statuses are filled in; those a webhook delivered are not added twice');
is(sq("SELECT string_agg(tg || ':' || status, ',' ORDER BY at) FROM public.seen"),
	'history:confirmed,history:picking_up,history:picked',
	'triggers fire once per real change: the late statuses in the history, no status update');

# an answer that lags behind the webhooks never moves an order back
api_control($api, "orders/$id2", order_answer($id2, 'picked'));
sq("SELECT biteship_webhook.sync_order('$id2')");
is(sq("SELECT status || ' ' || (SELECT count(*) FROM biteship_webhook.order_status_history h
	WHERE h.order_id = o.order_id) FROM biteship_webhook.orders o WHERE order_id = '$id2'"), 'dropping_off 5',
	'a lagging top-level status without history changes nothing');
# an answer about another order is not applied
api_control($api, 'orders/mismatch1', order_answer('67cd3f0a8e2b1c0012a4ffff', 'picked', @full[0 .. 3]));
($ret, $out, $err) = $node->psql('postgres', "SELECT biteship_webhook.sync_order('mismatch1')");
like($err, qr/answered 200 \(bad_answer\).*another order/s, 'an answer about another order is refused');
is(sq("SELECT count(*) FROM biteship_webhook.orders WHERE order_id IN ('mismatch1', '67cd3f0a8e2b1c0012a4ffff')"),
	'0', 'and applied to no order');

# --- 3. Biteship's errors
($ret, $out, $err) = $node->psql('postgres', "SELECT biteship_webhook.sync_order('ffffffffffffffffffffffff')",
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/P0002: Biteship has no order "ffffffffffffffffffffffff" in environment live/,
	'unknown order: clear error, SQLSTATE P0002');
like($err, qr/40002057/, 'with Biteship\'s code');
api_control($api, 'fail/nokey1', '{"status": 401, "code": 40101001}');
($ret, $out, $err) = $node->psql('postgres', "SELECT biteship_webhook.sync_order('nokey1')");
like($err, qr/refused the API key of environment live.*40101001/s, 'missing key (401/40101001): clear error');
set_key('biteship_live.wrong-key-0000');
($ret, $out, $err) = $node->psql('postgres', "SELECT biteship_webhook.sync_order('$id1')",
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/28000: Biteship's API refused the API key of environment live.*40000001/s,
	'wrong key (400/40000001): clear error, SQLSTATE 28000');
unlike($err, qr/wrong-key-0000/, 'the error does not show the key');
set_key($API_KEY);
($ret, $out, $err) = $node->psql('postgres', "SELECT biteship_webhook.sync_order('bad/id')");
like($err, qr/invalid Biteship order id/, 'an order id that cannot go in a URL is refused');

# with an empty apply_role, triggers would run as the sync role: refused
sq("ALTER SYSTEM SET biteship_webhook.apply_role = ''; SELECT pg_reload_conf();");
ok(wait_for(10, sub {
	my (undef, undef, $e) = $node->psql('postgres', "SELECT biteship_webhook.sync_order('$id1')");
	$e =~ /needs biteship_webhook.apply_role/ }), 'sync_order refuses to run with an empty apply_role');
sq("ALTER SYSTEM RESET biteship_webhook.apply_role; SELECT pg_reload_conf();");
ok(wait_for(10, sub { sq("SELECT current_setting('biteship_webhook.apply_role')") eq 'biteship_webhook_apply' }),
	'apply_role is back');

# the reconciler records errors on the order's last sync and does not loop
is(sq("SELECT biteship_webhook.sync_orders('{eeeeeeeeeeeeeeeeeeeeeeee}')"), '1', 'sync_orders queues');
ok(wait_for(20, sub { sq("SELECT last_result FROM biteship_webhook.order_syncs
	WHERE order_id = 'eeeeeeeeeeeeeeeeeeeeeeee'") eq 'not_found' }), 'a refused order is recorded');
is(sq("SELECT concat_ws(' ', last_http_status, last_api_code, next_sync_at IS NULL, last_error LIKE '%Order not found%')
	FROM biteship_webhook.order_syncs WHERE order_id = 'eeeeeeeeeeeeeeeeeeeeeeee'"),
	'400 40002057 t t', 'with the HTTP status, Biteship\'s code and message, and not queued again');
sleep 2;
is(requests_for('eeeeeeeeeeeeeeeeeeeeeeee'), 1, 'and it is not retried in a loop');

# --- 4. 429 backs off, honouring Retry-After
my $id4 = '67cd3f0a8e2b1c0012a4f9e4';
api_control($api, "orders/$id4", order_answer($id4, 'picked', @full[0 .. 3]));
api_control($api, "fail/$id4", '{"status": 429, "retry_after": "2", "times": 1}');
sq("SELECT biteship_webhook.sync_orders('{$id4}')");
ok(wait_for(30, sub { sq("SELECT last_result FROM biteship_webhook.order_syncs WHERE order_id = '$id4'") eq 'ok' }),
	'after a 429 the order is fetched again, and applied');
my @t4 = map { $_->{t} } grep { $_->{path} eq "/v1/orders/$id4" } api_log($api);
is(scalar @t4, 2, 'two requests: the 429 and the retry');
cmp_ok($t4[1] - $t4[0], '>=', 1.9, 'the retry waited for Retry-After (2 s)');
is(sq("SELECT status FROM biteship_webhook.orders WHERE order_id = '$id4'"), 'picked', 'the order is there');

# a server error: the order is retried later, with backoff
my $id4b = '67cd3f0a8e2b1c0012a4f9f4';
api_control($api, "orders/$id4b", order_answer($id4b, 'picked', @full[0 .. 3]));
api_control($api, "fail/$id4b", '{"status": 500, "times": 1}');
sq("SELECT biteship_webhook.sync_orders('{$id4b}')");
ok(wait_for(20, sub { sq("SELECT last_result FROM biteship_webhook.order_syncs WHERE order_id = '$id4b'")
	eq 'server_error' }), 'a 500 is recorded');
is(sq("SELECT concat_ws(' ', reason, attempts, last_http_status,
	next_sync_at BETWEEN last_sync_at + interval '9 s' AND last_sync_at + interval '11 s')
	FROM biteship_webhook.order_syncs WHERE order_id = '$id4b'"), 'retry 1 500 t',
	'and the order is queued again 10 s later');

# --- 5. a stale order whose webhook was never delivered is healed, with no manual step
my $relay = start_receiver();
sq("SELECT biteship_webhook.create_endpoint('relay', '$relay->{url}/ok', forward_events => '{order.status}')");
sq("SELECT biteship_webhook.create_webhook('sandbox', '/biteship/test', 'test')");
sq(q{SELECT state FROM biteship_webhook.ingest('sandbox',
	'{"event":"order.status","order_id":"sandbox-1","status":"picked"}'::text)});
my $id5 = '67cd3f0a8e2b1c0012a4f9e5';
my ($st5) = http($node, 'POST', '/biteship/live', headers => \@sig,
	body => qq({"event":"order.status","order_id":"$id5","status":"picked","updated_at":"2025-03-10T07:18:31.000Z"}));
is($st5, 200, 'the picked webhook was delivered');
# Biteship says delivered; the delivered webhook is "missed" (never sent)
api_control($api, "orders/$id5", order_answer($id5, 'delivered', @full,
	[ 'delivered', '2025-03-11T10:00:00+07:00' ]));
sq("ALTER SYSTEM SET biteship_webhook.reconcile_after = '2s'; SELECT pg_reload_conf();");
ok(wait_for(30, sub { sq("SELECT status FROM biteship_webhook.orders WHERE order_id = '$id5'") eq 'delivered' }),
	'the reconciler healed the stale order from the API');
is(sq("SELECT is_final || ' ' || (SELECT healed_at IS NOT NULL FROM biteship_webhook.order_syncs s
	WHERE s.order_id = o.order_id) FROM biteship_webhook.orders o WHERE order_id = '$id5'"), 'true true',
	'it is final now, and the sync says it healed');
my $healed = sq("SELECT value FROM biteship_webhook.stats WHERE name = 'reconciled_orders_total'
	AND labels->>'environment' = 'live' AND labels->>'outcome' = 'healed'");
cmp_ok($healed, '>=', 1, 'reconciled_orders_total{outcome="healed"} counts it');
ok(wait_for(10, sub { grep { ($_->{body} // '') =~ /"source": ?"api"/ && ($_->{body} // '') =~ /$id5/ }
	receiver_log($relay) }), 'the healed state is forwarded to an endpoint of order.status, marked source api');
ok(wait_for(20, sub { sq("SELECT last_result FROM biteship_webhook.order_syncs
	WHERE environment = 'test' AND order_id = 'sandbox-1'") eq 'no_key' }),
	'a stale order of an environment without a key is skipped');
cmp_ok(sq("SELECT value FROM biteship_webhook.stats WHERE name = 'reconciled_orders_total'
	AND labels->>'environment' = 'test' AND labels->>'outcome' = 'skipped'"), '>=', 1, 'and counted');
is(scalar(grep { $_->{path} =~ /sandbox-1/ } api_log($api)), 0, 'and never fetched');
# a final order is not fetched again
my $n5 = requests_for($id5);
sleep 3;
is(requests_for($id5), $n5, 'a final order is not fetched again');
sq("ALTER SYSTEM SET biteship_webhook.reconcile_after = 0; SELECT pg_reload_conf();");

# --- 6. a backfill of 100 orders obeys the rate limit, while the listener answers
my @ids = map { sprintf('bf%022x', $_) } 1 .. 100;
api_control($api, "orders/$_", order_answer($_, 'picked', @full[0 .. 3])) for @ids;
my $t0 = time();
is(sq("SELECT biteship_webhook.sync_orders(ARRAY['" . join("','", @ids, $ids[0]) . "'])"), '100',
	'sync_orders queues 100 orders (a duplicate id once)');
my ($answered, $slowest) = (0, 0);
for my $i (1 .. 400)
{
	last if sq("SELECT count(*) FROM biteship_webhook.orders WHERE order_id LIKE 'bf%'") == 100;
	my $t = time();
	my ($st) = http($node, 'POST', '/biteship/live', headers => \@sig,
		body => qq({"event":"order.status","order_id":"during-$i","status":"picked"}));
	$answered++ if $st == 200;
	$slowest = time() - $t if time() - $t > $slowest;
	usleep(50_000);
}
my $elapsed = time() - $t0;
is(sq("SELECT count(*) FROM biteship_webhook.orders WHERE order_id LIKE 'bf%'"), '100',
	'all 100 orders were backfilled');
cmp_ok($answered, '>', 20, "the listener answered $answered deliveries meanwhile");
cmp_ok($slowest, '<', 2, 'none of them waited for the reconciler');
my %per_second;
my @bt = sort { $a <=> $b } map { $_->{t} } grep { $_->{path} =~ m{/v1/orders/bf} } api_log($api);
$per_second{ int($_) }++ for @bt;
my ($max_second) = sort { $b <=> $a } values %per_second;
cmp_ok($max_second, '<=', 10, "at most 10 requests in any one second (saw $max_second)");
{
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'curl', '-sS', "$api->{url}/_control/per_second" ], '>', \$out, '2>', \$err);
	my $counts = decode_json($out);
	my ($busiest) = sort { $b <=> $a } values %$counts;
	cmp_ok($busiest, '<=', 10, "the mock's own count per second agrees (at most $busiest)");
}
my $max_window = 0;
for my $i (0 .. $#bt)
{
	my $n = grep { $_ >= $bt[$i] && $_ < $bt[$i] + 1 } @bt;
	$max_window = $n if $n > $max_window;
}
cmp_ok($max_window, '<=', 10, "and in any sliding second (saw $max_window)");
cmp_ok($bt[-1] - $bt[0], '>=', 9, 'the 100 requests were spread over at least 9 s');
is(sq("SELECT count(*) FROM biteship_webhook.order_syncs WHERE order_id LIKE 'bf%'
	AND last_result = 'ok' AND next_sync_at IS NULL AND reason IS NULL"), '100', 'and all are recorded, none queued');
note("backfill of 100 took ${elapsed}s");

# --- 7. interruption and the timeout
api_control($api, 'fail/slow1', '{"status": 200, "slow_ms": 8000}');
my $t7 = time();
($ret, $out, $err) = $node->psql('postgres', "SELECT biteship_webhook.sync_order('slow1')");
like($err, qr/could not reach Biteship's API/, 'a slow API fails the sync at api_timeout');
cmp_ok(time() - $t7, '<', 6, 'within the timeout (3 s), not the answer (8 s)');
api_control($api, 'fail/slow2', '{"status": 200, "slow_ms": 20000}');
my $bg = $node->background_psql('postgres');
$bg->query_until(qr/started/, "\\echo started\nSET biteship_webhook.api_timeout = '60s';\nSELECT biteship_webhook.sync_order('slow2');\n");
usleep(500_000);
my $t8 = time();
is(sq("SELECT count(*) FILTER (WHERE pg_cancel_backend(pid)) FROM (SELECT pid FROM pg_stat_activity
	WHERE query LIKE '%sync_order(''slow2'')%' AND pid <> pg_backend_pid() OFFSET 0) s"), '1',
	'the waiting sync can be cancelled');
ok(wait_for(5, sub { sq("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%sync_order(''slow2'')%'
	AND state = 'active' AND pid <> pg_backend_pid()") eq '0' }), 'the cancel is honoured at once');
cmp_ok(time() - $t8, '<', 5, 'well before the answer would come');
eval { $bg->quit };    # psql stops at the error

# --- 8. metrics and the gap view
my ($mst, $metrics) = http($node, 'GET', '/metrics');
like($metrics, qr/biteship_webhook_api_requests_total\{environment="live",result="ok"\} [1-9]/,
	'/metrics: API calls by result');
like($metrics, qr/biteship_webhook_api_requests_total\{environment="live",result="not_found"\} [1-9]/,
	'/metrics: refusals are counted');
like($metrics, qr/biteship_webhook_api_requests_total\{environment="live",result="rate_limited"\} 1/,
	'/metrics: the 429');
like($metrics, qr/biteship_webhook_reconciled_orders_total\{environment="live",outcome="backfilled"\} [1-9]/,
	'/metrics: backfilled orders');
like($metrics, qr/biteship_webhook_newest_delivery_age_seconds\{webhook="live"\} [0-9.]+/,
	'/metrics: the age of the newest delivery per webhook');
like($metrics, qr/biteship_webhook_stale_orders\{environment="live"\} [0-9]/, '/metrics: stale active orders');

# --- 9. the key never reaches the logs or the events log
my $log = slurp_file($node->logfile);
unlike($log, qr/tap-key-0123456789/, 'the API key is not in the server log');
is(sq("SELECT count(*) FROM biteship_webhook.events e WHERE e::text LIKE '%tap-key-' || '0123456789%'"), '0',
	'nor in the events log');
sq("SELECT biteship_webhook.set_api_key('live', NULL)");
is(sq("SELECT count(*) FROM biteship_webhook.api_keys"), '0', 'set_api_key(env, NULL) removes the key');

# --- 10. an answer that carries the key is redacted
set_key($API_KEY);
my $echo = order_answer('echo1', 'picked', @full[0 .. 3]);
$echo =~ s/"note":"note picked"/"note":"key $API_KEY"/;
api_control($api, 'orders/echo1', $echo);
sq("SELECT biteship_webhook.sync_order('echo1')");
is(sq("SELECT count(*) FROM biteship_webhook.order_status_history WHERE note LIKE '%[redacted]%'"), '1',
	'a copy of the key in an answer is redacted before it is stored');
is(sq("SELECT count(*) FROM biteship_webhook.events e WHERE e::text LIKE '%tap-key-' || '0123456789%'"), '0',
	'the events log has no copy of it');

$node->stop;
done_testing();
