# Copyright (c) biteship_webhook authors
#
# The listener's batches against hostile or slow application code, and
# against each other:
# - an application role with the documented grants cannot gain privileges
#   through a trigger the listener fires, and the listener warns when
#   events would be applied as a superuser;
# - a slow trigger is cut off by apply_timeout (or the database's
#   statement_timeout): that event fails, the rest of its batch goes to the
#   dispatcher, everything is answered in time;
# - a batch larger than the subtransaction cache defers what does not fit;
# - two listener workers receiving the same new bodies in opposite orders
#   never deadlock;
# - unverified deliveries are logged at a bounded rate;
# - X-Forwarded-For over many hops and several headers, /metrics behind a
#   proxy;
# - counters count only what committed;
# - a fast shutdown does not wait for a stuck trigger.
use strict;
use warnings;

use lib 't';
use BiteshipNode;
use IO::Socket::INET;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

my $node = bw_node(
	'apply', conf => qq{
biteship_webhook.listener_workers = 2
biteship_webhook.apply_timeout = '1s'
biteship_webhook.max_batch_size = 256
biteship_webhook.unverified_log_rate = 10
biteship_webhook.trusted_proxies = '127.0.0.1'
biteship_webhook.metrics_allow = '127.0.0.1/32, 198.51.100.0/24'
});
bw_setup_webhook($node);
my $SIG = "$SIG_HEADER: $SECRET";

sub sql { return $node->safe_psql('postgres', shift); }

my %hour = (picked => '02', delivered => '05');

sub body_for
{
	my ($id, $status) = @_;
	$status //= 'picked';
	my $h = $hour{$status} // '03';
	return qq({"event":"order.status","order_id":"$id","status":"$status","updated_at":"2025-11-08T$h:00:00Z"});
}

# The bytes of one signed delivery.
sub delivery
{
	my ($body, @headers) = @_;
	return "POST /biteship/live HTTP/1.1\r\nHost: x\r\n$SIG\r\n"
	  . join('', map { "$_\r\n" } @headers)
	  . 'Content-Length: ' . length($body) . "\r\n\r\n$body";
}

# Read n answers from a socket (their JSON bodies, decoded), or what came.
sub read_answers
{
	my ($s, $n, $secs) = @_;
	my $got = '';
	my $deadline = time() + ($secs // 15);
	$s->blocking(0);
	while (time() < $deadline)
	{
		my @complete = $got =~ /\r\n\r\n(\{[^}]*\})/g;
		last if @complete >= $n;
		my $buf;
		my $r = sysread($s, $buf, 65536);
		if (defined $r && $r == 0) { last; }
		if (defined $r) { $got .= $buf; next; }
		usleep(5_000);
	}
	my @statuses = $got =~ m{HTTP/1\.1 (\d{3}) }g;
	my @bodies = map { decode_json($_) } $got =~ /\r\n\r\n(\{[^}]*\})/g;
	for my $i (0 .. $#bodies) { $bodies[$i]{http} = $statuses[$i]; }
	return @bodies;
}

# --- a hostile application role, through the listener --------------------
sql(q{
CREATE ROLE app LOGIN;
GRANT USAGE ON SCHEMA biteship_webhook TO app;
GRANT SELECT, TRIGGER ON biteship_webhook.orders, biteship_webhook.order_status_history TO app;
CREATE SCHEMA app AUTHORIZATION app;
SET ROLE app;
CREATE FUNCTION app.escalate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.order_id = 'evil-1' THEN
		ALTER ROLE app SUPERUSER;
	END IF;
	RETURN NULL;
END $$;
CREATE TRIGGER escalate AFTER INSERT OR UPDATE ON biteship_webhook.orders
	FOR EACH ROW EXECUTE FUNCTION app.escalate();
RESET ROLE;
});
{
	my ($status, $body) = http($node, 'POST', '/biteship/live', body => body_for('evil-1'),
		headers => [$SIG]);
	is($status, 200, 'a delivery whose trigger tries ALTER ROLE ... SUPERUSER is answered 200');
	like($body, qr/"state":"failed"/, 'and fails');
	like(sql("SELECT last_error FROM biteship_webhook.events WHERE order_id = 'evil-1'"),
		qr/must be superuser/, 'because the trigger ran without superuser rights');
	($status) = http($node, 'POST', '/biteship/live', body => body_for('evil-1', 'delivered'),
		headers => [$SIG]);
	is(sql("SELECT rolsuper FROM pg_roles WHERE rolname = 'app'"), 'f',
		'the application role is still not a superuser one delivery later');
	sql('DROP TRIGGER escalate ON biteship_webhook.orders');
}

# --- the listener warns when events would be applied as a superuser -----
{
	my $pos = -s $node->logfile;
	$node->append_conf('postgresql.conf', "biteship_webhook.apply_role = ''\n");
	$node->reload;
	ok( wait_for(10, sub { slurp_file($node->logfile, $pos) =~ /WARNING:  biteship_webhook applies events as a superuser/ }),
		'apply_role empty with a superuser connection: the listener warns');
	$pos = -s $node->logfile;
	$node->append_conf('postgresql.conf', "biteship_webhook.apply_role = 'nosuch'\n");
	$node->reload;
	ok( wait_for(10, sub { slurp_file($node->logfile, $pos) =~ /WARNING:  biteship_webhook.apply_role "nosuch" does not exist/ }),
		'a missing apply role: the listener warns');
	usleep(300_000);
	my ($status, $body) = http($node, 'POST', '/biteship/live', body => body_for('norole-1'),
		headers => [$SIG]);
	like("$status $body", qr/^200 .*"state":"failed"/, 'and deliveries are kept, failed, for a retry');
	$node->append_conf('postgresql.conf', "biteship_webhook.apply_role = 'biteship_webhook_apply'\n");
	$node->reload;
	usleep(300_000);
}

# --- apply_timeout: a slow trigger fails alone, the batch goes on --------
sql(q{
CREATE TABLE public.slow_gate (open boolean NOT NULL);
INSERT INTO public.slow_gate VALUES (false);
GRANT SELECT ON public.slow_gate TO biteship_webhook_apply;
CREATE FUNCTION public.slow() RETURNS trigger LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
BEGIN
	IF NEW.order_id LIKE 'slow-%' AND NOT (SELECT open FROM slow_gate) THEN
		PERFORM pg_sleep(3);
	ELSIF NEW.order_id LIKE 'stuck-%' THEN
		PERFORM pg_sleep(60);
	ELSIF NEW.order_id LIKE 'hold-%' THEN
		PERFORM pg_sleep(0.7);
	ELSIF NEW.order_id LIKE 'a-refuse-%' THEN
		RAISE EXCEPTION 'refused by the application';
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER slow BEFORE INSERT OR UPDATE ON biteship_webhook.orders
	FOR EACH ROW EXECUTE FUNCTION public.slow();
});
{
	my $s = raw_socket($node);
	my $t0 = time();
	print $s delivery(body_for('fast-1')) . delivery(body_for('slow-1')) . delivery(body_for('zzz-1'));
	my @a = read_answers($s, 3, 10);
	my $took = time() - $t0;
	is(scalar(@a), 3, 'three pipelined deliveries, one with a 3 s trigger: three answers');
	ok($took < 2.5, sprintf('within twice the apply timeout of 1 s (a set-based try, then one by one), not 3 s (%.1f s)', $took));
	is(join(',', map { "$_->{http}:$_->{state}" } @a), '200:applied,200:failed,200:pending',
		'applied, failed (the slow one), pending (left for the dispatcher)');
	like(sql("SELECT last_error FROM biteship_webhook.events WHERE order_id = 'slow-1'"),
		qr/apply did not finish within the apply timeout \(1000 ms\)/, 'the timeout is recorded');
	is( $node->poll_query_until('postgres',
			"SELECT state = 'applied' FROM biteship_webhook.events WHERE order_id = 'zzz-1'"),
		1, 'the dispatcher applies what the batch left');
	sql('UPDATE public.slow_gate SET open = true');
	is( $node->poll_query_until('postgres',
			"SELECT state = 'applied' FROM biteship_webhook.events WHERE order_id = 'slow-1'"),
		1, 'and retries the slow one once the trigger is fast again');
	sql('UPDATE public.slow_gate SET open = false');
	close($s);
}

# --- the database's statement_timeout, when shorter, is the bound -------
{
	$node->append_conf('postgresql.conf', "biteship_webhook.apply_timeout = 0\n");
	$node->reload;
	sql("ALTER DATABASE postgres SET statement_timeout = '1s'");
	# the workers read database settings when they connect: restart them
	sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type LIKE 'biteship_webhook%'");
	ok(wait_for_http($node, '/healthz', 200), 'workers are back');
	usleep(500_000);
	my $t0 = time();
	my ($status, $body) = http($node, 'POST', '/biteship/live', body => body_for('slow-2'),
		headers => [$SIG], timeout => 10);
	my $took = time() - $t0;
	like("$status $body", qr/^200 .*"state":"failed"/,
		'with apply_timeout = 0, the database statement_timeout cuts the slow trigger off');
	ok($took < 2.5, sprintf('answered in %.1f s', $took));
	sql("ALTER DATABASE postgres RESET statement_timeout");
	$node->append_conf('postgresql.conf', "biteship_webhook.apply_timeout = '1s'\n");
	$node->reload;
	sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type LIKE 'biteship_webhook%'");
	ok(wait_for_http($node, '/healthz', 200), 'workers are back again');
}

# --- a batch larger than the subtransaction cache -----------------------
# 192 deliveries held up behind a slow one, so that they form one batch
# (max_batch_size 256); the sockets' first delivery can be made to fail.
sub bulk_batch
{
	my ($prefix, $first) = @_;
	# connected (and accepted) first, so that their requests are all read
	# at once when the held batch ends
	my @s = map { raw_socket($node) } 1 .. 12;
	my $holder = raw_socket($node);
	usleep(200_000);
	print $holder delivery(body_for("hold-$prefix"));
	usleep(100_000);
	my $n = 0;
	for my $s (@s)
	{
		print $s join('', map { delivery(body_for(($n++ == 0 && $first) ? $first : "$prefix-$n")) } 1 .. 16);
	}
	my @answers = map { read_answers($_, 16, 20) } @s;
	read_answers($holder, 1, 5);
	close($_) for @s, $holder;
	my %states;
	$states{ $_->{state} }++ for @answers;
	note 'states: ' . join(', ', map { "$_=$states{$_}" } sort keys %states);
	return (\@answers, \%states);
}
# one listener worker here, so that the held worker is the only one
$node->append_conf('postgresql.conf', "biteship_webhook.listener_workers = 1\n");
$node->restart;
ok(wait_for_http($node, '/healthz', 200), 'one listener worker for the batches');
{
	# applied set-based: one subtransaction for the whole batch
	my ($answers, $states) = bulk_batch('bulk');
	is(scalar(@$answers), 192, '192 deliveries answered');
	is(scalar(grep { $_->{http} == 200 } @$answers), 192, 'all of them 200');
	is($states->{applied} // 0, 192,
		'a batch larger than the subtransaction cache is applied at once (one subtransaction)');

	# one event refuses: the batch is applied event by event, each in a
	# subtransaction, and what the cache has no room for is left pending
	($answers, $states) = bulk_batch('bulkf', 'a-refuse-1');
	is(scalar(grep { $_->{http} == 200 } @$answers), 192, 'all 192 answered 200 again');
	is($states->{failed} // 0, 1, 'the refused one failed alone');
	ok(($states->{pending} // 0) > 0,
		'a batch past the subtransaction cache leaves the rest pending instead of overflowing it');
	is( $node->poll_query_until('postgres',
			"SELECT count(*) = 191 FROM biteship_webhook.events WHERE order_id LIKE 'bulkf-%' AND state = 'applied'"),
		1, 'the dispatcher applies every one of them');
}
$node->append_conf('postgresql.conf', "biteship_webhook.listener_workers = 2\n");
$node->restart;
ok(wait_for_http($node, '/healthz', 200), 'two listener workers again');

# --- two workers, the same new bodies in opposite orders ----------------
{
	my @pids = worker_pids($node, 'listener');
	is(scalar(@pids), 2, 'two listener workers');
	my ($ok, $dup, $other, $total) = (0, 0, 0, 0);
	for my $round (1 .. 25)
	{
		# 8 orders x 2 statuses; every connection sends all 16, in its own order
		my @bodies = map { my $o = "x$round-$_"; (body_for($o, 'picked'), body_for($o, 'delivered')) } 1 .. 8;
		my @s = map { raw_socket($node) } 1 .. 6;
		for my $i (0 .. $#s)
		{
			my @order = $i % 2 ? reverse(@bodies) : @bodies;
			@order = (@order[8 .. 15], @order[0 .. 7]) if $i % 3 == 2;
			syswrite($s[$i], join('', map { delivery($_) } @order));
		}
		for my $s (@s)
		{
			for my $a (read_answers($s, 16, 20))
			{
				$total++;
				if ($a->{http} == 200 && $a->{state} eq 'applied') { $ok++; }
				elsif ($a->{http} == 200 && $a->{state} eq 'duplicate') { $dup++; }
				else { $other++; diag("unexpected answer: $a->{http} " . encode_json($a)); }
			}
			close($s);
		}
	}
	is($total, 25 * 6 * 16, 'every crossed delivery answered');
	is($other, 0, 'none with 503 or failed: no deadlock');
	is($ok, 25 * 16, 'each body applied exactly once');
	is(sql("SELECT count(*) FROM biteship_webhook.events WHERE order_id LIKE 'x%-%'"),
		25 * 16, 'and stored once');
	unlike(slurp_file($node->logfile), qr/deadlock detected/, 'no deadlock in the server log');
}

# --- two workers, different bodies with the same statuses ---------------
# Each connection's bodies differ (a field of its own), so every one is a
# new event, and the history rows of the crossed batches collide.
{
	my $pos = -s $node->logfile;
	my ($ok, $other, $total) = (0, 0, 0);
	for my $round (1 .. 15)
	{
		my @s = map { raw_socket($node) } 1 .. 6;
		for my $i (0 .. $#s)
		{
			my @bodies = map {
				my $o = "y$round-$_";
				map { (my $b = $_) =~ s/\}$/,"courier_link":"https:\/\/t.example\/$i"}/; $b }
				  (body_for($o, 'picked'), body_for($o, 'delivered'))
			} 1 .. 8;
			my @order = $i % 2 ? reverse(@bodies) : @bodies;
			syswrite($s[$i], join('', map { delivery($_) } @order));
		}
		for my $s (@s)
		{
			for my $a (read_answers($s, 16, 20))
			{
				$total++;
				if ($a->{http} == 200 && $a->{state} eq 'applied') { $ok++; }
				else { $other++; diag("unexpected answer: $a->{http} " . encode_json($a)); }
			}
			close($s);
		}
	}
	is($total, 15 * 6 * 16, 'every delivery with a colliding history row answered');
	is($other, 0, 'all applied, none failed');
	is(sql("SELECT count(*) FROM biteship_webhook.order_status_history WHERE order_id LIKE 'y%-%'"),
		15 * 16, 'one history row per order and status');
	unlike(slurp_file($node->logfile, $pos), qr/deadlock detected/, 'and no deadlock');
}

# --- unverified deliveries are logged at a bounded rate ------------------
{
	my $before = sql("SELECT count(*) FROM biteship_webhook.events WHERE state = 'rejected'");
	my @s = map { raw_socket($node) } 1 .. 4;
	my $n = 0;
	for my $s (@s)
	{
		my $req = '';
		for (1 .. 25)
		{
			my $b = body_for('forged-' . ++$n);
			$req .= "POST /biteship/live HTTP/1.1\r\nHost: x\r\n$SIG_HEADER: forged\r\n"
			  . 'Content-Length: ' . length($b) . "\r\n\r\n$b";
		}
		syswrite($s, $req);
	}
	my @answers = map { read_answers($_, 25, 15) } @s;
	is(scalar(grep { $_->{http} == 401 } @answers), 100, '100 forged deliveries: all 401');
	my $logged = sql("SELECT count(*) FROM biteship_webhook.events WHERE state = 'rejected'") - $before;
	cmp_ok($logged, '<=', 11, "at most the rate's burst (10) is logged ($logged)");
	cmp_ok($logged, '>=', 1, 'but some are');
	my ($st, $metrics) = http($node, 'GET', '/metrics');
	my ($unlogged) = $metrics =~ /biteship_webhook_unlogged_deliveries_total\{[^}]*state="rejected"[^}]*webhook="live"\} (\d+)/;
	is($unlogged, 100 - $logged, 'the rest are counted in unlogged_deliveries_total');
	close($_) for @s;

	# unsigned installation checks share the bucket, and are still 200
	my ($status, $body) = http($node, 'POST', '/biteship/live', body => '{ }');
	like("$status $body", qr/^200 \{"ok":true,"event_id":null,"state":"ping"\}/,
		'an installation check beyond the rate is answered 200 without an event');
	($status, $body) = http($node, 'POST', '/biteship/live', body => '{  }', headers => [$SIG]);
	like("$status $body", qr/^200 \{"ok":true,"event_id":\d+,"state":"ping"\}/,
		'a signed one is always logged');
}

# --- X-Forwarded-For and /metrics behind a proxy ------------------------
{
	my $hops = join(', ', map { "6.6.6.$_" } 1 .. 100);
	my ($status) = http($node, 'POST', '/biteship/live', body => body_for('xff-1'),
		headers => [ $SIG, "X-Forwarded-For: $hops, 198.51.100.7" ]);
	is($status, 200, 'a delivery through a proxy, with 100 hops chosen by the client');
	is(sql("SELECT remote_addr FROM biteship_webhook.events WHERE order_id = 'xff-1'"),
		'198.51.100.7', 'remote_addr is the first untrusted hop from the right, past 64 hops');
	($status) = http($node, 'POST', '/biteship/live', body => body_for('xff-2'),
		headers => [ $SIG, 'X-Forwarded-For: 203.0.113.5', 'X-Forwarded-For: 198.51.100.8' ]);
	is(sql("SELECT remote_addr FROM biteship_webhook.events WHERE order_id = 'xff-2'"),
		'198.51.100.8', 'every X-Forwarded-For header counts, the last one last');

	($status) = http($node, 'GET', '/metrics', headers => ['X-Forwarded-For: 203.0.113.9']);
	is($status, 403, '/metrics for a client behind the proxy outside metrics_allow: 403');
	($status) = http($node, 'GET', '/metrics', headers => ['X-Forwarded-For: 198.51.100.9']);
	is($status, 200, '/metrics for a client behind the proxy inside metrics_allow: 200');
	($status) = http($node, 'GET', '/metrics');
	is($status, 200, '/metrics for the proxy itself: 200');
}

# --- counters count only what committed ---------------------------------
{
	my $applied = stat_value($node, 'events_total', "labels->>'state' = 'applied'");
	sql(q{
CREATE FUNCTION public.refuse_events() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$ BEGIN IF NEW.order_id = 'rollback-1' THEN RAISE EXCEPTION 'no room'; END IF; RETURN NEW; END $$;
CREATE TRIGGER refuse_events AFTER INSERT ON biteship_webhook.events
	FOR EACH ROW EXECUTE FUNCTION public.refuse_events();
});
	my $s = raw_socket($node);
	print $s delivery(body_for('rollback-0')) . delivery(body_for('rollback-1'));
	my @a = read_answers($s, 2, 10);
	is(join(',', map { $_->{http} } @a), '503,503', 'a batch that rolls back answers 503 to all');
	close($s);
	sql('DROP TRIGGER refuse_events ON biteship_webhook.events');
	http($node, 'GET', '/healthz');
	is(stat_value($node, 'events_total', "labels->>'state' = 'applied'"), $applied,
		'and counts nothing it did not commit');
}

# --- a fast shutdown does not wait for a stuck trigger ------------------
{
	my $s = raw_socket($node);
	print $s delivery(body_for('stuck-1'));
	usleep(500_000);
	my $t0 = time();
	$node->stop('fast');
	my $took = time() - $t0;
	ok($took < 10, sprintf('pg_ctl stop -m fast with a 60 s trigger in flight: %.1f s', $took));
	my @a = read_answers($s, 1, 5);
	is($a[0]{http} // 'none', 503, 'the batch in flight is answered 503');
	$node->start;
	is(sql("SELECT count(*) FROM biteship_webhook.events WHERE order_id = 'stuck-1'"),
		'0', 'and nothing of it was committed');
}

$node->stop;
done_testing();
