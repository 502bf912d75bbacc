# Copyright (c) biteship_webhook authors
#
# The outbox, end to end, against the mock receiver of test/tools on
# loopback:
# - a message is sent only if its transaction commits, and promptly;
# - retries with backoff, Retry-After, dead letters, retry_message and
#   retry_dead;
# - 410 disables the endpoint (its messages wait), 3xx is never followed,
#   other 4xx are final;
# - ordering_key keeps its order under retries; idempotency_key queues once;
# - a message that cannot be claimed yet (behind its ordering_key, beyond
#   the endpoint's slots) leaves the sender idle;
# - every attempt is signed (Standard Webhooks), with a stable webhook-id,
#   and both signatures verify while a secret is rotated;
# - a slow endpoint does not hold back another one;
# - forwarding of applied events: once per event, in order per order;
# - response headers with credentials are redacted, bodies bounded;
# - retention, and the counters in /metrics.
use strict;
use warnings;

use lib 't';
use BiteshipNode;
use JSON::PP;
use MIME::Base64;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

sub new_secret
{
	my $raw = join('', map { chr(int(rand(256))) } 1 .. 32);
	return 'whsec_' . encode_base64($raw, '');
}
my $key_old = new_secret();
my $key_new = new_secret();

my $recv = start_receiver(secrets => [ $key_old, $key_new ]);
my $node = bw_node(
	'outbox', conf => qq{
biteship_webhook.outbox_retry_schedule = '0, 300ms, 600ms, 900ms'
biteship_webhook.outbox_max_retry_after = '5s'
biteship_webhook.outbox_response_body_limit = 1024
});
bw_setup_webhook($node);

sub sql { return $node->safe_psql('postgres', shift); }

# administration with a secret in it: statement logging off for the call
sub admin { return $node->safe_psql('postgres', "SET log_statement = 'none'; " . shift); }

sub endpoint
{
	my ($name, $path, %o) = @_;
	my $args = join('', map { ", $_ => $o{$_}" } sort keys %o);
	admin("SELECT biteship_webhook.create_endpoint('$name', '$recv->{url}$path'$args)");
}

# Requests the receiver got for one message.
sub got
{
	my ($id) = @_;
	return grep { ($_->{msg_id} // '') eq "msg_$id" } receiver_log($recv);
}

sub state_of
{
	my ($id) = @_;
	return sql("SELECT state FROM biteship_webhook.outbox WHERE id = $id");
}

sub wait_state
{
	my ($id, $want, $secs) = @_;
	return $node->poll_query_until('postgres',
		"SELECT state = '$want' FROM biteship_webhook.outbox WHERE id = $id", 't');
}

ok(scalar(worker_pids($node, 'outbound')) == 1, 'the outbound worker runs');

endpoint('ok', '/ok', signing_secret => "'$key_old'");

# --- only what commits is sent, and at once -----------------------------
{
	my ($ret, $out, $err) = $node->psql('postgres', q{
BEGIN;
SELECT biteship_webhook.send('ok', '{"n":"rolled back"}');
ROLLBACK;
});
	my $t0 = time();
	my $id = sql(q{SELECT biteship_webhook.send('ok', '{"n":"committed"}')});
	ok(wait_state($id, 'delivered'), 'a committed message is delivered');
	my $took = time() - $t0;
	ok($took < 2, sprintf('promptly, without polling (%.2f s)', $took));
	usleep(300_000);
	my @all = receiver_log($recv);
	is(scalar(grep { $_->{body} =~ /rolled back/ } @all), 0, 'a rolled-back send() sends nothing');
	is(scalar(grep { $_->{body} =~ /committed/ } @all), 1, 'the committed one arrived once');
	my ($r) = got($id);
	is($r->{body}, '{"n": "committed"}', 'with the body as stored');
	is($r->{headers}{'content-type'}, 'application/json', 'and its content type');
	is($r->{headers}{'webhook-id'}, "msg_$id", 'webhook-id is msg_<id>');
	is($r->{verified_with}, 0, 'the signature verifies with the endpoint secret');
	like($r->{headers}{'user-agent'}, qr{^biteship_webhook/}, 'our User-Agent');
	is(sql("SELECT attempts, last_status FROM biteship_webhook.outbox WHERE id = $id"),
		'1|200', 'one attempt, status 200');
	is(sql("SELECT count(*) FROM biteship_webhook.outbox_attempts WHERE message_id = $id AND status = 200"),
		'1', 'recorded in outbox_attempts');
	my $text_id = sql(q{SELECT biteship_webhook.send('ok', 'plain words', 'text/plain; charset=utf-8')});
	ok(wait_state($text_id, 'delivered'), 'the text overload');
	my ($t) = got($text_id);
	is("$t->{headers}{'content-type'}|$t->{body}", 'text/plain; charset=utf-8|plain words',
		'sends the body and content type given');
}

# --- retries, backoff, Retry-After --------------------------------------
endpoint('flaky', '/flaky/2', signing_secret => "'$key_old'");
endpoint('throttled', '/flaky429/1/1');
{
	my $id = sql(q{SELECT biteship_webhook.send('flaky', '{"n":"flaky"}')});
	ok(wait_state($id, 'delivered'), 'a message that fails twice is delivered on the third attempt');
	my @r = got($id);
	is(join(',', map { $_->{status} } @r), '503,503,200', 'the receiver saw 503, 503, 200');
	my @gaps = map { $r[$_]{t} - $r[ $_ - 1 ]{t} } 1 .. $#r;
	ok($gaps[0] >= 0.2 && $gaps[1] >= 0.4,
		sprintf('after the schedule (300 ms, 600 ms, +-20%%): %.2f s, %.2f s', @gaps));
	is(scalar(keys %{ { map { $_->{headers}{'webhook-id'} => 1 } @r } }), 1,
		'the webhook-id is the same on every attempt');
	# The header is whole seconds, stamped when the attempt is built; the
	# receiver's clock is read after the request arrived, which under a
	# sanitizer build on a loaded machine can be well over a second later.
	my @ts = map { $_->{headers}{'webhook-timestamp'} } @r;
	is(scalar(grep { my $d = $r[$_]{t} - $ts[$_]; $d > -1 && $d < 5 } 0 .. $#r), 3,
		'each attempt carries the time of that attempt as webhook-timestamp');
	ok($ts[0] <= $ts[1] && $ts[1] <= $ts[2], "never going back (@ts)");
	is(scalar(grep { defined $_->{verified_with} } @r), 3, 'and every attempt is signed');
	is(sql("SELECT string_agg(status::text, ',' ORDER BY attempt) FROM biteship_webhook.outbox_attempts WHERE message_id = $id"),
		'503,503,200', 'outbox_attempts has every attempt');

	my $tid = sql(q{SELECT biteship_webhook.send('throttled', '{"n":"throttled"}')});
	ok(wait_state($tid, 'delivered'), 'a 429 is retried');
	my @t = got($tid);
	ok($t[1]{t} - $t[0]{t} >= 0.9,
		sprintf('after its Retry-After of 1 s (%.2f s)', $t[1]{t} - $t[0]{t}));
	like(sql("SELECT error FROM biteship_webhook.outbox_attempts WHERE message_id = $tid AND attempt = 1"),
		qr/HTTP 429 \(Retry-After: 1\)/, 'the attempt records the status and Retry-After');
}

# --- dead letters; 3xx not followed; other 4xx final ---------------------
endpoint('broken', '/status/500', max_attempts => 3);
endpoint('moved', '/status/301', max_attempts => 2);
endpoint('refused', '/status/422');
{
	my $dead = sql(q{SELECT biteship_webhook.send('broken', '{"n":"dead"}')});
	ok(wait_state($dead, 'dead'), 'after max_attempts failures the message is dead');
	is(scalar(got($dead)), 3, 'after exactly max_attempts (3) attempts');
	my $moved = sql(q{SELECT biteship_webhook.send('moved', '{"n":"moved"}')});
	ok(wait_state($moved, 'dead'), 'a 301 is a failure');
	is(scalar(grep { $_->{path} eq '/ok' && ($_->{msg_id} // '') eq "msg_$moved" } receiver_log($recv)),
		0, 'and the redirect is never followed');
	is(sql("SELECT last_status FROM biteship_webhook.outbox WHERE id = $moved"), '301',
		'last_status says 301');
	my $refused = sql(q{SELECT biteship_webhook.send('refused', '{"n":"refused"}')});
	ok(wait_state($refused, 'dead'), 'a 422 is final');
	is(scalar(got($refused)), 1, 'after a single attempt');

	# retry them by hand
	sql("SELECT biteship_webhook.retry_message($refused)");
	ok($node->poll_query_until('postgres', "SELECT attempts = 2 FROM biteship_webhook.outbox WHERE id = $refused"),
		'retry_message sends a dead message again');
	ok(wait_state($refused, 'dead'), 'which dies again on another 422');
	is(sql(q{SELECT biteship_webhook.retry_dead('broken')}), '1', 'retry_dead(endpoint) counts what it retries');
	ok($node->poll_query_until('postgres', "SELECT attempts = 6 AND state = 'dead' FROM biteship_webhook.outbox WHERE id = $dead"),
		'with a fresh set of max_attempts attempts');
	my ($ok, $o, $e) = $node->psql('postgres', "SELECT biteship_webhook.retry_message($refused + 100000)");
	like($e, qr/outbox message \d+ does not exist/, 'retry_message of a missing message');
	my $done = sql(q{SELECT id FROM biteship_webhook.outbox WHERE state = 'delivered' LIMIT 1});
	($ok, $o, $e) = $node->psql('postgres', "SELECT biteship_webhook.retry_message($done)");
	like($e, qr/is delivered/, 'retry_message of a delivered message is refused');
}

# --- 410 disables the endpoint; its messages wait -----------------------
endpoint('gone', '/gone-once');
{
	my $first = sql(q{SELECT biteship_webhook.send('gone', '{"n":"gone-1"}')});
	ok($node->poll_query_until('postgres', q{SELECT NOT enabled FROM biteship_webhook.endpoints WHERE name = 'gone'}),
		'a 410 disables the endpoint');
	like(sql(q{SELECT disabled_reason FROM biteship_webhook.endpoints WHERE name = 'gone'}),
		qr/410 Gone/, 'and says why');
	my $second = sql(q{SELECT biteship_webhook.send('gone', '{"n":"gone-2"}')});
	usleep(1_000_000);
	is(scalar(got($second)), 0, 'a message to a disabled endpoint waits');
	is(state_of($first) . ',' . state_of($second), 'pending,pending', 'both are pending');
	sql(q{SELECT biteship_webhook.set_endpoint_enabled('gone', true)});
	ok(wait_state($first, 'delivered') && wait_state($second, 'delivered'),
		'once enabled again, both are delivered');
}

# --- ordering_key and idempotency_key -----------------------------------
endpoint('ordered', '/flaky/1');
{
	my @ids = map { sql("SELECT biteship_webhook.send('ordered', '{\"n\":$_}', ordering_key => 'order-A')") } 1 .. 4;
	ok(wait_state($ids[-1], 'delivered'), 'messages with one ordering_key are all delivered');
	my @log = grep { my $m = $_->{msg_id} // ''; grep { $m eq "msg_$_" } @ids } receiver_log($recv);
	my %delivered_at;
	my %first_try;
	for my $r (@log)
	{
		$first_try{ $r->{msg_id} } //= $r->{t};
		$delivered_at{ $r->{msg_id} } = $r->{t} if $r->{status} == 200;
	}
	my $in_order = 1;
	for my $i (1 .. $#ids)
	{
		$in_order = 0
		  unless $first_try{"msg_$ids[$i]"} > $delivered_at{"msg_$ids[$i-1]"};
	}
	ok($in_order, 'each was first tried only after the one before it was delivered, through its retry');

	my $a = sql(q{SELECT biteship_webhook.send('ok', '{"n":"once"}', idempotency_key => 'key-1')});
	my $b = sql(q{SELECT biteship_webhook.send('ok', '{"n":"once again"}', idempotency_key => 'key-1')});
	is($b, $a, 'a second send() with the same idempotency_key returns the first message id');
	ok(wait_state($a, 'delivered'), 'which is delivered');
	usleep(300_000);
	is(scalar(grep { $_->{body} =~ /once/ } receiver_log($recv)), 1, 'once');
}

# --- a Retry-After that is not text --------------------------------------
endpoint('bad-retry-after', '/bad-retry-after', max_attempts => 1);
{
	my $id = sql(q{SELECT biteship_webhook.send('bad-retry-after', '{"n":"bytes"}')});
	ok(wait_state($id, 'dead'), 'a 503 with a Retry-After of stray bytes, on the last attempt: dead');
	is(sql("SELECT last_error FROM biteship_webhook.outbox WHERE id = $id"),
		'HTTP 503 (Retry-After: 7??x)', 'its error keeps the header as printable text only');
	is(sql("SELECT error FROM biteship_webhook.outbox_attempts WHERE message_id = $id"),
		'HTTP 503 (Retry-After: 7??x)', 'in the attempts too');
}

# --- what cannot be claimed yet leaves the sender idle -------------------
# A message behind an older one of its ordering_key that waits out a
# Retry-After (5 s here), and messages beyond an endpoint's free slots, are
# not due: the sender sleeps until the older one is due or a call
# finishes, instead of waking at once to claim nothing, again and again.
{
	my ($pid) = worker_pids($node, 'outbound');
	my $busy = sub {
		my $t0 = cpu_ticks($pid);
		sleep(2);
		return cpu_ticks($pid) - $t0;
	};

	endpoint('later', '/flaky429/1/30');
	my @ids = map { sql("SELECT biteship_webhook.send('later', '{\"n\":$_}', ordering_key => 'order-W')") } 1 .. 2;
	ok( $node->poll_query_until('postgres',
			"SELECT last_status = 429 FROM biteship_webhook.outbox WHERE id = $ids[0]"),
		'the first of an ordering_key is told to come back later');
	my $ticks = $busy->();
	cmp_ok($ticks, '<', 25, "while the second waits behind it, the sender is idle ($ticks ticks in 2 s)");
	ok(wait_state($ids[1], 'delivered', 30), 'then both are delivered');
	my ($first_ok) = grep { $_->{status} == 200 } got($ids[0]);
	my ($second_try) = got($ids[1]);
	ok($first_ok && $second_try && $second_try->{t} >= $first_ok->{t},
		'the second was first sent after the first was delivered');

	admin('ALTER SYSTEM SET biteship_webhook.outbox_max_per_endpoint = 1');
	$node->reload;
	usleep(300_000);
	endpoint('one-slot', '/slow/4000', timeout => "'10s'");
	@ids = map { sql("SELECT biteship_webhook.send('one-slot', '{\"n\":$_}')") } 1 .. 3;
	usleep(1_000_000);    # one request in flight (4 s), two waiting for its slot
	$ticks = $busy->();
	cmp_ok($ticks, '<', 25, "while two wait for the one slot, the sender is idle ($ticks ticks in 2 s)");
	is(scalar(map { got($_) } @ids), 0, 'the first request was still in flight');
	admin('ALTER SYSTEM RESET biteship_webhook.outbox_max_per_endpoint');
	$node->reload;
	ok(wait_state($ids[2], 'delivered', 30), 'and all three are delivered');
}

# --- a slow endpoint does not hold back another one ---------------------
endpoint('slow', '/slow/1500', timeout => "'5s'");
{
	my $slow = sql(q{SELECT biteship_webhook.send('slow', '{"n":"slow"}')});
	usleep(100_000);
	my $t0 = time();
	my $fast = sql(q{SELECT biteship_webhook.send('ok', '{"n":"fast"}')});
	ok(wait_state($fast, 'delivered'), 'a message to a fast endpoint');
	ok(time() - $t0 < 1, sprintf('is delivered while a slow one is in flight (%.2f s)', time() - $t0));
	is(state_of($slow), 'pending', 'the slow one is still in flight');
	ok(wait_state($slow, 'delivered'), 'and is delivered in its own time');
}

# --- rotation: both signatures while keep_old lasts ---------------------
{
	admin("SELECT biteship_webhook.set_endpoint_secret('ok', '$key_new', keep_old => '1 hour')");
	my $id = sql(q{SELECT biteship_webhook.send('ok', '{"n":"rotated"}')});
	ok(wait_state($id, 'delivered'), 'a message after the rotation');
	my ($r) = got($id);
	my @sigs = split / /, $r->{headers}{'webhook-signature'};
	is(scalar(@sigs), 2, 'carries two signatures');
	is($r->{verified_with}, 1, 'which verify with the new secret');
	# and with the old one alone: a receiver that only knows it
	my $old_only = start_receiver(secrets => [$key_old]);
	admin("UPDATE biteship_webhook.endpoints SET url = '$old_only->{url}/ok' WHERE name = 'ok'");
	$id = sql(q{SELECT biteship_webhook.send('ok', '{"n":"rotated, old receiver"}')});
	ok(wait_state($id, 'delivered'), 'delivered to a receiver that only knows the old secret');
	my ($o) = grep { ($_->{msg_id} // '') eq "msg_$id" } receiver_log($old_only);
	is($o->{verified_with}, 0, 'which verifies it with the old secret');
	admin("SELECT biteship_webhook.set_endpoint_secret('ok', '$key_new', keep_old => '0')");
	$id = sql(q{SELECT biteship_webhook.send('ok', '{"n":"after keep_old"}')});
	ok(wait_state($id, 'delivered'), 'once keep_old is over');
	($o) = grep { ($_->{msg_id} // '') eq "msg_$id" } receiver_log($old_only);
	ok(!defined $o->{verified_with}, 'the old secret no longer verifies');
	is(scalar(split(/ /, $o->{headers}{'webhook-signature'})), 1, 'one signature only');
	admin("UPDATE biteship_webhook.endpoints SET url = '$recv->{url}/ok' WHERE name = 'ok'");
	stop_receiver($old_only);
}

# --- response headers with credentials, bounded bodies ------------------
endpoint('big', '/big');
{
	my $id = sql(q{SELECT biteship_webhook.send('big', '{"n":"big"}')});
	ok(wait_state($id, 'delivered'), 'a response with a large body and a cookie');
	my $h = sql("SELECT response_headers FROM biteship_webhook.outbox_attempts WHERE message_id = $id");
	like($h, qr/^Set-Cookie: \[redacted\]$/mi, 'Set-Cookie is redacted in outbox_attempts');
	unlike($h, qr/sEcReT-cookie/, 'its value is not kept');
	is(sql("SELECT length(response_body) FROM biteship_webhook.outbox_attempts WHERE message_id = $id"),
		1024 + 3, 'the body is cut at outbox_response_body_limit (1 kB, and "...")');
}

# --- forwarding of applied Biteship events ------------------------------
endpoint('relay', '/ok', signing_secret => "'$key_new'",
	forward_events => "'{order.status}'", environment => "'live'");
{
	my @sig = ("$SIG_HEADER: $SECRET");
	my $body = sub {
		my ($status, $at) = @_;
		return qq({"event":"order.status","order_id":"fwd-1","status":"$status","updated_at":"2025-11-08T$at:00:00Z"});
	};
	my @ev;
	for my $s ([ 'picked', '02' ], [ 'dropping_off', '03' ], [ 'delivered', '05' ])
	{
		my ($st, $b) = http($node, 'POST', '/biteship/live', body => $body->(@$s), headers => \@sig);
		my ($eid) = $b =~ /"event_id":(\d+)/;
		push @ev, $eid;
	}
	# a redelivery, a waybill event (not forwarded here) and a replay
	http($node, 'POST', '/biteship/live', body => $body->('picked', '02'), headers => \@sig);
	http($node, 'POST', '/biteship/live', headers => \@sig,
		body => '{"event":"order.waybill_id","order_id":"fwd-1","courier_waybill_id":"WB1"}');
	sql("SELECT biteship_webhook.replay($ev[0])");
	ok( $node->poll_query_until('postgres',
			q{SELECT count(*) = 3 AND bool_and(state = 'delivered') FROM biteship_webhook.outbox
			   WHERE endpoint_id = (SELECT id FROM biteship_webhook.endpoints WHERE name = 'relay')}),
		'three status events, three forwards, all delivered');
	usleep(300_000);
	my @f = grep { $_->{headers}{'webhook-id'} && $_->{body} =~ /"fwd-1"/ } receiver_log($recv);
	is(scalar(@f), 3, 'the receiver got each event once (no forward for the redelivery, the replay, or waybill)');
	my @docs = map { decode_json($_->{body}) } @f;
	is(join(',', map { $_->{data}{event_id} } @docs), join(',', @ev), 'in the order they were applied');
	is(join(',', map { $_->{data}{payload}{status} } @docs), 'picked,dropping_off,delivered',
		'each with its original payload');
	is($docs[0]{type}, 'order.status', 'type is the event name');
	like($docs[0]{timestamp}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/, 'timestamp is ISO 8601 UTC');
	is($docs[0]{data}{environment}, 'live', 'with the environment');
	is($docs[0]{data}{webhook}, 'live', 'and the webhook');
	is($docs[0]{data}{order}{order_id}, 'fwd-1', 'and the orders row');
	is($docs[2]{data}{order}{status}, 'delivered', 'as it was after the event');
	is(scalar(grep { $_->{verified_with} == 1 } @f), 3, 'every forward is signed and verifies');
	is( sql(q{SELECT string_agg(DISTINCT ordering_key, ',') FROM biteship_webhook.outbox
	           WHERE endpoint_id = (SELECT id FROM biteship_webhook.endpoints WHERE name = 'relay')}),
		'live:fwd-1', 'the ordering key is the order');
	is( sql(qq{SELECT idempotency_key FROM biteship_webhook.outbox WHERE event_id = $ev[0]}),
		"event:$ev[0]", 'the idempotency key is the event');
}

# --- the counters -------------------------------------------------------
{
	my (undef, $m) = http($node, 'GET', '/metrics');
	like($m, qr/^biteship_webhook_outbox_messages_total\{state="delivered"\} [1-9]/m,
		'outbox_messages_total by state');
	like($m, qr/^biteship_webhook_outbox_attempts_total\{class="5xx",endpoint="broken"\} 6$/m,
		'outbox_attempts_total by endpoint and status class');
	like($m, qr/^biteship_webhook_outbox_queue_latency_seconds_count [1-9]/m,
		'the queue-to-first-attempt histogram');
	like($m, qr/^biteship_webhook_outbox_attempt_duration_seconds_bucket\{le="\+Inf"\} [1-9]/m,
		'the attempt duration histogram');
	like($m, qr/^biteship_webhook_outbox_backlog\{endpoint="broken",state="dead"\} 1$/m,
		'the dead backlog per endpoint');
	like($m, qr/^biteship_webhook_outbox_oldest_pending_age_seconds\{endpoint="ok"\} /m,
		'the age of the oldest pending message');
}

# --- retention ----------------------------------------------------------
{
	my $before = sql(q{SELECT count(*) FROM biteship_webhook.outbox WHERE state = 'delivered'});
	cmp_ok($before, '>', 0, 'delivered messages before the purge');
	$node->append_conf('postgresql.conf', "biteship_webhook.outbox_retention = '1s'\n");
	$node->reload;
	ok( $node->poll_query_until('postgres',
			q{SELECT count(*) = 0 FROM biteship_webhook.outbox WHERE state = 'delivered'}),
		'delivered messages are purged past outbox_retention');
	is(sql(q{SELECT count(*) FROM biteship_webhook.outbox_attempts a
	          WHERE NOT EXISTS (SELECT FROM biteship_webhook.outbox o WHERE o.id = a.message_id)}),
		'0', 'with their attempts');
	cmp_ok(sql(q{SELECT count(*) FROM biteship_webhook.outbox WHERE state = 'dead'}), '>', 0,
		'dead messages are kept');
}

$node->stop;
stop_receiver($recv);
done_testing();
