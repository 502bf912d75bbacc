# Copyright (c) biteship_webhook authors
#
# The listener's HTTP behaviour: every row of the status table in README.md,
# keep-alive, pipelining, HTTP/1.0, Expect: 100-continue, chunked bodies,
# X-Forwarded-For and /metrics.
use strict;
use warnings;

use lib 't';
use BiteshipNode;
use IO::Socket::INET;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

my $node = bw_node(
	'http', conf => qq{
biteship_webhook.max_body_size = '64kB'
biteship_webhook.max_header_size = '4kB'
biteship_webhook.request_timeout = '1s'
biteship_webhook.max_connections = 8
});
bw_setup_webhook($node);

my @sig = ("$SIG_HEADER: $SECRET");
my ($status, $body, $head);

sub sql { return $node->safe_psql('postgres', shift); }

# --- 200 after COMMIT ---------------------------------------------------
($status, $body) = http($node, 'POST', '/biteship/live',
	body => fixture('order_status_delivered'), headers => \@sig);
is($status, 200, 'verified delivery is answered 200');
like($body, qr/^\{"ok":true,"event_id":\d+,"state":"applied"\}$/, 'with event id and state');
my ($event_id) = $body =~ /"event_id":(\d+)/;
is(sql("SELECT state FROM biteship_webhook.events WHERE id = $event_id"),
	'applied', 'the acknowledged event is committed');
is( sql("SELECT status FROM biteship_webhook.orders WHERE order_id = '690dd0887692553f72342bb3'"),
	'delivered', 'and applied to orders');
is(sql("SELECT remote_addr FROM biteship_webhook.events WHERE id = $event_id"),
	'127.0.0.1', 'remote address is recorded');

($status, $body) = http($node, 'POST', '/biteship/live',
	body => fixture('order_status_delivered'), headers => \@sig);
is($status, 200, 'a redelivery is answered 200');
like($body, qr/"event_id":$event_id,"state":"duplicate"/, 'as a duplicate of the first');

($status, $body) = http($node, 'POST', '/biteship/live',
	body => fixture('unknown_event'), headers => \@sig);
like("$status $body", qr/^200 .*"state":"ignored"/, 'unknown event: 200 ignored');

($status, $body) = http($node, 'POST', '/biteship/live',
	body => '{"event":"order.status","status":"picked"}', headers => \@sig);
like("$status $body", qr/^200 .*"state":"failed"/, 'event that cannot be applied: 200 failed');

# --- installation check -------------------------------------------------
($status, $body) = http($node, 'POST', '/biteship/live', body => '');
like("$status $body", qr/^200 .*"state":"ping"/, 'empty body without signature: 200 ping');
($status, $body) = http($node, 'POST', '/biteship/live', body => '{}');
like("$status $body", qr/^200 .*"state":"ping"/, '{} without signature: 200 ping');
($status, $body) = http($node, 'POST', '/biteship/live', curl => ['-H', 'Content-Length: 0']);
is($status, 200, 'POST without a body: 200');

# --- 401 ----------------------------------------------------------------
($status, $body) = http($node, 'POST', '/biteship/live', body => fixture('order_status_picking_up'));
is($status, 401, 'missing signature: 401');
like($body, qr/^\{"ok":false,"error":"signature header is missing"/, 'with a JSON error');
($status, $body) = http($node, 'POST', '/biteship/live',
	body => fixture('order_status_picking_up'), headers => ["$SIG_HEADER: not-the-secret"]);
is($status, 401, 'wrong signature: 401');
unlike($body, qr/not-the-secret|$SECRET/, 'the answer never echoes a secret');
is(sql("SELECT count(*) FROM biteship_webhook.events WHERE headers::text LIKE '%not-the-secret%'"),
	'0', 'nor does the events log');

# --- 400 ----------------------------------------------------------------
($status, $body) = http($node, 'POST', '/biteship/live', body => '[1,2,3]', headers => \@sig);
is($status, 400, 'body that is not a JSON object: 400');
like($body, qr/"error":"body is not a JSON object"/, 'with the reason');
($status, $body) = http($node, 'POST', '/biteship/live', body => '{"event":', headers => \@sig);
is($status, 400, 'truncated JSON: 400');

# --- 404, 405 -----------------------------------------------------------
($status, $body) = http($node, 'POST', '/nothing/here', body => '{}');
is($status, 404, 'unknown path: 404');
like($body, qr/^\{"ok":false,"error":/, 'with a JSON error');
($status, $body, $head) = http($node, 'GET', '/biteship/live');
is($status, 405, 'GET on a webhook path: 405');
like($head, qr/^Allow: POST\r?$/mi, 'with Allow: POST');
($status, $body, $head) = http($node, 'POST', '/healthz', body => '');
is($status, 405, 'POST to /healthz: 405');
like($head, qr/^Allow: GET, HEAD\r?$/mi, 'with Allow: GET, HEAD');

# --- 413: answered before the body is read, then closed -----------------
my $raw = http_raw($node,
	"POST /biteship/live HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n");
like($raw, qr{^HTTP/1\.1 413 }, 'Content-Length over max_body_size: 413');
like($raw, qr/Connection: close/i, 'and the connection is closed');
($status) = http($node, 'POST', '/biteship/live', body => 'x' x 70000, headers => \@sig);
is($status, 413, 'body over max_body_size through curl: 413');
$raw = http_raw($node,
	    "POST /biteship/live HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
	  . ("8000\r\n" . ('y' x 32768) . "\r\n") x 3);
like($raw, qr{^HTTP/1\.1 413 }, 'chunked body over max_body_size: 413');

# --- 431 ----------------------------------------------------------------
$raw = http_raw($node,
	"POST /biteship/live HTTP/1.1\r\nHost: x\r\nX-Big: " . ('z' x 8000) . "\r\n\r\n");
like($raw, qr{^HTTP/1\.1 431 }, 'headers over max_header_size: 431');

# --- 408: a slow client is answered and closed --------------------------
my $t0 = time();
$raw = http_raw($node, "POST /biteship/live HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{\"a\"",
	timeout => 10);
like($raw, qr{^HTTP/1\.1 408 }, 'client too slow: 408');
ok(time() - $t0 < 8, 'within the request timeout, then closed');

# --- 503: too many connections, refused cheaply -------------------------
{
	# connections of the tests above may still be closing (a closed
	# connection lingers up to 2 s to drain its client): start from none
	$node->poll_query_until('postgres',
		"SELECT value = 0 FROM biteship_webhook.stats WHERE name = 'open_connections'")
	  or die 'connections of earlier tests did not close';
	my @idle;
	for (1 .. 8)
	{
		push @idle,
		  IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $node->{bw_port})
		  or die;
	}
	$node->poll_query_until('postgres',
		"SELECT value >= 8 FROM biteship_webhook.stats WHERE name = 'open_connections'")
	  or die 'the listener did not count the idle connections';
	$raw = http_raw($node, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", timeout => 3);
	like($raw, qr{^HTTP/1\.1 503 }, 'over max_connections: 503');
	like($raw, qr/Retry-After: \d+/i, 'with Retry-After');
	close($_) for @idle;
	usleep(300_000);
	($status) = http($node, 'GET', '/healthz');
	is($status, 200, 'served again once connections close');
}

# --- 503: the database cannot take the insert ---------------------------
sql(q{
CREATE FUNCTION public.no_inserts() RETURNS trigger LANGUAGE plpgsql
AS $$ BEGIN RAISE EXCEPTION 'disk full (simulated)'; END $$;
CREATE TRIGGER no_inserts BEFORE INSERT ON biteship_webhook.events
	FOR EACH ROW EXECUTE FUNCTION public.no_inserts();
});
my $before = sql('SELECT count(*) FROM biteship_webhook.events');
($status, $body, $head) = http($node, 'POST', '/biteship/live',
	body => '{"event":"order.status","order_id":"db-fail-1","status":"picked"}',
	headers => \@sig);
is($status, 503, 'insert failure: 503, never 200');
like($head, qr/^Retry-After: \d+/mi, 'with Retry-After');
unlike($body, qr/simulated|disk full/, 'internal error text is not sent');
is(sql('SELECT count(*) FROM biteship_webhook.events'), $before, 'nothing stored');
sql('DROP TRIGGER no_inserts ON biteship_webhook.events');
($status) = http($node, 'POST', '/biteship/live',
	body => '{"event":"order.status","order_id":"db-fail-1","status":"picked"}',
	headers => \@sig);
is($status, 200, 'accepted once the database recovers');

# --- health and metrics -------------------------------------------------
($status, $body) = http($node, 'GET', '/healthz');
is("$status $body", '200 {"ok":true}', 'GET /healthz: 200');
($status, $body, $head) = http($node, 'GET', '/metrics');
is($status, 200, 'GET /metrics from loopback: 200');
like($head, qr{^Content-Type: text/plain; version=0\.0\.4}mi, 'in the Prometheus text format');
unlike($head, qr{application/json}i, 'with one Content-Type');
like($body, qr/^biteship_webhook_requests_total\{status="200",webhook="live"\} \d+/m,
	'requests by webhook and status');
like($body, qr/^biteship_webhook_events_total\{state="applied"\} \d+/m, 'events by state');
like($body, qr/^biteship_webhook_batch_size_bucket\{le="\+Inf"\} \d+/m, 'batch size histogram');
like($body, qr/^biteship_webhook_request_duration_seconds_count \d+/m, 'latency histogram');
like($body, qr/^biteship_webhook_open_connections \d+/m, 'open connections');
like($body, qr/^biteship_webhook_backlog_events\{state="failed"\} [1-9]/m, 'failed backlog');
like($body, qr/^biteship_webhook_backlog_oldest_age_seconds\{state="failed"\} [\d.]+/m,
	'and its oldest age');
is( sql("SELECT value > 0 FROM biteship_webhook.stats WHERE name = 'requests_total' AND labels->>'webhook' = 'live' AND labels->>'status' = '401'"),
	't', 'the stats view shows the same counters');

# A failure while rendering /metrics costs only that answer, not the
# deliveries committed in the same batch (both requests in one write, so in
# one batch).
sql('ALTER VIEW biteship_webhook.stats RENAME TO stats_hidden');
$raw = http_raw($node,
	"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" . delivery('metrics-batch-1', 'picked'),
	timeout => 5, until => qr/"state":"applied"\}/);
sql('ALTER VIEW biteship_webhook.stats_hidden RENAME TO stats');
like($raw, qr{^HTTP/1\.1 503 .*"error":"metrics are unavailable}s, '/metrics failure: 503');
like($raw, qr{HTTP/1\.1 200 .*"state":"applied"}s, 'the delivery of the same batch: 200');
is(sql("SELECT status FROM biteship_webhook.orders WHERE order_id = 'metrics-batch-1'"),
	'picked', 'and it was committed');

$node->append_conf('postgresql.conf', "biteship_webhook.metrics_allow = '10.0.0.0/8'");
$node->reload;
usleep(500_000);
($status) = http($node, 'GET', '/metrics');
is($status, 403, '/metrics is refused outside metrics_allow');

# --- keep-alive, pipelining, HTTP/1.0 -----------------------------------
sub delivery
{
	my ($order, $status) = @_;
	my $json = qq({"event":"order.status","order_id":"$order","status":"$status"});
	return "POST /biteship/live HTTP/1.1\r\nHost: x\r\n$SIG_HEADER: $SECRET\r\n"
	  . "Content-Length: "
	  . length($json)
	  . "\r\n\r\n$json";
}

{
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $node->{bw_port})
	  or die;
	$s->autoflush(1);
	my $read_responses = sub {
		my ($n) = @_;
		my $got = '';
		my $deadline = time() + 10;
		while (time() < $deadline)
		{
			my @r = $got =~ /HTTP\/1\.1 \d{3}/g;
			my @complete = $got =~ /\{"ok"[^}]*\}/g;
			last if @complete >= $n;
			my $buf;
			my $rv = sysread($s, $buf, 65536);
			last unless $rv;
			$got .= $buf;
		}
		return $got;
	};
	print $s delivery('ka-1', 'picked');
	my $r1 = $read_responses->(1);
	print $s delivery('ka-2', 'picked');
	my $r2 = $read_responses->(1);
	like($r1, qr/^HTTP\/1\.1 200 .*"state":"applied"/s, 'first request on a keep-alive connection');
	like($r2, qr/^HTTP\/1\.1 200 .*"state":"applied"/s, 'second request on the same connection');

	print $s delivery('pipe-1', 'picked') . delivery('pipe-2', 'picked') . delivery('pipe-3', 'picked');
	my $r3 = $read_responses->(3);
	my @ids = $r3 =~ /"event_id":(\d+)/g;
	is(scalar(@ids), 3, 'three pipelined requests get three answers');
	ok($ids[0] < $ids[1] && $ids[1] < $ids[2], 'in request order');
	is( sql("SELECT string_agg(order_id, ',' ORDER BY id) FROM biteship_webhook.events WHERE id IN ("
			  . join(',', @ids) . ")"),
		'pipe-1,pipe-2,pipe-3', 'each answer belongs to its request');
	# more than the pipeline holds at once: parsing pauses and resumes
	print $s join('', map { delivery("deep-$_", 'picked') } 1 .. 40);
	my $r4 = $read_responses->(40);
	my @deep = $r4 =~ /"event_id":(\d+)/g;
	is(scalar(@deep), 40, 'forty pipelined requests in one write all get answers');
	close($s);
}

$raw = http_raw($node,
	"GET /healthz HTTP/1.0\r\n\r\n", timeout => 5);
like($raw, qr{^HTTP/1\.[01] 200 }, 'HTTP/1.0 request: 200');
like($raw, qr/Connection: close/i, 'and closed afterwards');

# --- Expect: 100-continue and chunked bodies ----------------------------
my $big = '{"event":"order.status","order_id":"expect-1","status":"picked","courier_link":"'
  . ('l' x 3000) . '"}';
my ($st, $b, $h, $err) = http($node, 'POST', '/biteship/live', body => $big, headers => [@sig, "Expect: 100-continue"],
	curl => ['-v']);
is($st, 200, 'curl body over 1 kB (Expect: 100-continue): 200');
like($err, qr/HTTP\/1\.1 100 Continue/, 'the server sent 100 Continue');

$raw = http_raw($node,
	"POST /biteship/live HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n$SIG_HEADER: $SECRET\r\nContent-Length: 10\r\n\r\n",
	timeout => 2, until => qr/100 Continue\r\n\r\n/);
like($raw, qr{^HTTP/1\.1 100 Continue\r\n\r\n}, '100 Continue comes before the body is sent');

($st, $b) = http($node, 'POST', '/biteship/live',
	body => '{"event":"order.status","order_id":"chunked-1","status":"picked"}',
	headers => [@sig, 'Transfer-Encoding: chunked']);
is($st, 200, 'chunked request body: 200');
is(sql("SELECT status FROM biteship_webhook.orders WHERE order_id = 'chunked-1'"),
	'picked', 'and the chunked body was applied');

# Content-Type is not required.
$raw = http_raw($node, delivery('no-ct-1', 'picked'), timeout => 3, until => qr/\}$/);
like($raw, qr{^HTTP/1\.1 200 }, 'no Content-Type header: 200');

# --- X-Forwarded-For is trusted only from trusted proxies ---------------
$raw = http_raw($node,
	"POST /biteship/live HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.7\r\n"
	  . "$SIG_HEADER: $SECRET\r\nContent-Length: 59\r\nConnection: close\r\n\r\n"
	  . '{"event":"order.status","order_id":"xff-0","status":"pick"}',
	timeout => 3);
my ($xid) = $raw =~ /"event_id":(\d+)/;
is(sql("SELECT remote_addr FROM biteship_webhook.events WHERE id = $xid"),
	'127.0.0.1', 'X-Forwarded-For from an untrusted peer is ignored');
$node->append_conf('postgresql.conf', "biteship_webhook.trusted_proxies = '127.0.0.1/32'");
$node->reload;
usleep(500_000);
($st, $b) = http($node, 'POST', '/biteship/live',
	body => '{"event":"order.status","order_id":"xff-1","status":"picked"}',
	headers => [@sig, 'X-Forwarded-For: 198.51.100.9, 127.0.0.1']);
is(sql("SELECT remote_addr FROM biteship_webhook.events WHERE order_id = 'xff-1'"),
	'198.51.100.9', 'X-Forwarded-For from a trusted proxy gives the client address');

# The listener survived all of the above without a crash.
my $log = slurp_file($node->logfile);
unlike($log, qr/terminated by signal|server process .* was terminated/, 'no backend crashed');

$node->stop;
done_testing();
