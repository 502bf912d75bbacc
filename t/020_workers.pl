# Copyright (c) biteship_webhook authors
#
# The background workers: registration, SO_REUSEPORT listeners, the
# extension appearing under running workers, reload, restart after
# termination, deferred apply and NOTIFY, retries, retention, standby.

use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

use lib 't';
use BiteshipNode;

my $SIG = "$SIG_HEADER: $SECRET";

# A status delivery for an order of our own (distinct body per order).
sub status_body
{
	my ($order_id, %o) = @_;
	my $pad = $o{pad} ? ',"pad":"' . ('x' x $o{pad}) . '"' : '';
	return
	    '{"event":"order.status","order_id":"'
	  . $order_id
	  . '","courier_company":"jne","courier_type":"reg","status":"'
	  . ($o{status} // 'confirmed')
	  . '","updated_at":"2025-11-08T09:00:00+07:00"'
	  . $pad . '}';
}

# POST a delivery to /biteship/live -> (status, decoded body or {}, head)
sub post
{
	my ($node, $body) = @_;
	my ($status, $resp, $head) = http(
		$node, 'POST', '/biteship/live',
		body => $body,
		headers => [ $SIG, 'Content-Type: application/json' ],
		timeout => 10);
	my $doc = eval { decode_json($resp) } // {};
	return ($status, $doc, $head);
}

# Poll a query until it returns the expected value; returns the last value.
sub poll_until
{
	my ($node, $sql, $want, $secs) = @_;
	my $deadline = time() + ($secs // 30);
	my $got;
	while (1)
	{
		$got = $node->safe_psql('postgres', $sql);
		return $got if $got eq $want || time() >= $deadline;
		usleep(100_000);
	}
}

sub worker_pids
{
	my ($node, $type) = @_;
	my $out = $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'biteship_webhook $type' ORDER BY pid"
	);
	return grep { length } split /\n/, $out;
}

sub set_conf
{
	my ($node, %kv) = @_;
	for my $k (sort keys %kv)
	{
		my $v = $kv{$k};
		$node->safe_psql('postgres',
			defined $v
			? "ALTER SYSTEM SET biteship_webhook.$k = '$v'"
			: "ALTER SYSTEM RESET biteship_webhook.$k");
	}
	$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
}

my $node = bw_node(
	'primary',
	init => { allows_streaming => 1 },
	conf => "biteship_webhook.listener_workers = 2\n");

###
### Extension not installed yet: the workers run and answer 503.
###
ok(wait_for_http($node, '/healthz', 503), '/healthz is 503 before CREATE EXTENSION');
{
	my ($status, $doc, $head) = post($node, status_body('noext-1'));
	is($status, 503, 'delivery before CREATE EXTENSION answered 503');
	like($head, qr/^Retry-After: \d+\r?$/mi, '... with Retry-After');
}

###
### Both workers are there, with listener_workers = 2 listeners.
###
{
	my @listeners = worker_pids($node, 'listener');
	my @dispatchers = worker_pids($node, 'dispatcher');
	is(scalar(@listeners), 2, 'two listener workers in pg_stat_activity');
	is($node->safe_psql('postgres',
			"SELECT boot_val FROM pg_settings WHERE name = 'biteship_webhook.listener_workers'"),
		'2', 'two listener workers is the default');
	is(scalar(@dispatchers), 1, 'one dispatcher worker in pg_stat_activity');
	is(scalar(worker_pids($node, 'outbound')), 1, 'one outbound worker in pg_stat_activity');
	is(scalar(worker_pids($node, 'reconciler')), 1, 'one reconciler worker in pg_stat_activity');
	is( $node->safe_psql(
			'postgres',
			"SELECT string_agg(DISTINCT application_name, ',') FROM pg_stat_activity WHERE backend_type LIKE 'biteship_webhook %'"
		),
		'biteship_webhook dispatcher,biteship_webhook listener,biteship_webhook outbound,biteship_webhook reconciler',
		'workers report their application_name');
}

bw_setup_webhook($node);
ok(wait_for_http($node, '/healthz', 200), '/healthz is 200 once the extension exists');
{
	my ($status, $doc) = post($node, status_body('noext-1'));
	is($status, 200, 'the same delivery is accepted after CREATE EXTENSION without a restart');
	is($doc->{state}, 'applied', '... and applied');
}

# Both listeners share the port and take connections: every new connection
# lands on one of them (SO_REUSEPORT hashes the client port), so after a
# burst each listener has run a batch since the burst began.
{
	my $t0 = $node->safe_psql('postgres', 'SELECT clock_timestamp()');
	my $ok = 0;
	for my $i (1 .. 40)
	{
		my ($status) = post($node, status_body("reuseport-$i"));
		$ok++ if $status == 200;
	}
	is($ok, 40, '40 deliveries on 40 connections all answered 200');
	is( $node->safe_psql(
			'postgres',
			"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'biteship_webhook listener' AND query_start >= '$t0'"
		),
		'2',
		'both listener processes served requests');
	is( $node->safe_psql(
			'postgres',
			"SELECT count(*) FROM biteship_webhook.events WHERE order_id LIKE 'reuseport-%' AND state = 'applied'"
		),
		'40',
		'the 40 events are applied');
}

###
### Reload: a lower max_body_size applies to new requests.
###
{
	my $big = status_body('bodysize-big', pad => 1500);
	my $small = status_body('bodysize-small');
	cmp_ok(length($big), '>', 1024, 'big body is over 1kB');
	cmp_ok(length($small), '<', 1024, 'small body is under 1kB');

	set_conf($node, max_body_size => '1kB');
	my $deadline = time() + 30;
	my $status;
	while (time() < $deadline)
	{
		($status) = post($node, $big);
		last if $status == 413;
		usleep(100_000);
	}
	is($status, 413, 'over the reloaded max_body_size: 413');
	my $all413 = 1;
	for (1 .. 10)
	{
		my ($s) = post($node, $big);
		$all413 = 0 if $s != 413;
	}
	ok($all413, '... on every listener');
	($status) = post($node, $small);
	is($status, 200, 'under the reloaded max_body_size: 200');
	is( $node->safe_psql(
			'postgres',
			"SELECT count(*) FROM biteship_webhook.events WHERE order_id = 'bodysize-big'"
		),
		'0',
		'the refused body was not stored');

	set_conf($node, max_body_size => undef);
	$deadline = time() + 30;
	while (time() < $deadline)
	{
		($status) = post($node, $big);
		last if $status == 200;
		usleep(100_000);
	}
	is($status, 200, 'max_body_size restored: the big body is accepted');
}

###
### Restart after termination.
###
{
	my @old = worker_pids($node, 'listener');
	my $logpos = -s $node->logfile;
	$node->safe_psql('postgres', "SELECT pg_terminate_backend($_)") for @old;

	my %old = map { $_ => 1 } @old;
	my $deadline = time() + 30;
	my @new;
	while (time() < $deadline)
	{
		@new = worker_pids($node, 'listener');
		last if @new == 2 && !grep { $old{$_} } @new;
		usleep(100_000);
	}
	is(scalar(@new), 2, 'two listeners again after pg_terminate_backend');
	ok(!(grep { $old{$_} } @new), '... with new pids');
	ok(wait_for_http($node, '/healthz', 200), 'the new listeners serve /healthz');
	my ($status, $doc) = post($node, status_body('restart-listener'));
	is($status, 200, 'the new listeners accept deliveries');

	my $log = slurp_file($node->logfile, $logpos);
	for my $pid (@old)
	{
		like($log,
			qr/\[$pid\] LOG:\s+biteship_webhook listener \d+ shutting down/,
			"listener $pid finishes its turn and shuts down on SIGTERM");
		like($log,
			qr/background worker "biteship_webhook listener[^"]*" \(PID $pid\) exited with exit code 1/,
			"listener $pid exited normally on SIGTERM");
	}
	unlike($log, qr/terminated by signal|was terminated|terminating any other active server processes|reinitializing/,
		'no crash and no restart of the whole server');

	my @oldd = worker_pids($node, 'dispatcher');
	$node->safe_psql('postgres', "SELECT pg_terminate_backend($oldd[0])");
	$deadline = time() + 30;
	my @newd;
	while (time() < $deadline)
	{
		@newd = worker_pids($node, 'dispatcher');
		last if @newd == 1 && $newd[0] != $oldd[0];
		usleep(100_000);
	}
	ok(@newd == 1 && $newd[0] != $oldd[0], 'dispatcher restarted with a new pid');
	$log = slurp_file($node->logfile, $logpos);
	like($log,
		qr/background worker "biteship_webhook dispatcher" \(PID $oldd[0]\) exited with exit code 1/,
		'dispatcher exited normally on SIGTERM');
	unlike($log, qr/terminated by signal|was terminated|reinitializing/,
		'still no crash');
}

###
### Deferred mode, and NOTIFY.
###
{
	my $psql = $node->background_psql('postgres');
	$psql->query_safe('LISTEN biteship_webhook');

	# inline: the NOTIFY goes with the listener's commit
	my ($status, $doc) = post($node, status_body('notify-inline', status => 'picking_up'));
	is($status, 200, 'inline delivery accepted');
	my $inline_id = $doc->{event_id};

	set_conf($node, apply_mode => 'deferred');
	my $deadline = time() + 30;
	my ($order, $n) = ('', 0);
	while (time() < $deadline)
	{
		$order = 'deferred-' . ++$n;
		($status, $doc) = post($node, status_body($order, status => 'allocated'));
		last if ($doc->{state} // '') eq 'pending';
		usleep(100_000);
	}
	is($status, 200, 'deferred delivery answered 200');
	is($doc->{state}, 'pending', '... with state pending');
	my $deferred_id = $doc->{event_id};
	is( poll_until(
			$node,
			"SELECT state FROM biteship_webhook.events WHERE id = $deferred_id",
			'applied', 15),
		'applied',
		'the dispatcher applied the pending event');
	is( $node->safe_psql(
			'postgres',
			"SELECT status || ',' || last_event_id FROM biteship_webhook.orders WHERE order_id = '$order'"
		),
		"allocated,$deferred_id",
		'... and the order row exists');
	is( $node->safe_psql(
			'postgres',
			"SELECT attempts || ',' || source FROM biteship_webhook.events e JOIN biteship_webhook.order_status_history h ON h.event_id = e.id WHERE e.id = $deferred_id"
		),
		'1,webhook',
		'... in one attempt, recorded as a webhook apply');

	# collect notifications: psql prints them after the next query
	my %notes;
	$deadline = time() + 15;
	while (time() < $deadline)
	{
		my $out = $psql->query_safe('SELECT 1');
		while ($out =~ /Asynchronous notification "biteship_webhook" with payload "(.*)" received from server process/g)
		{
			my $p = eval { decode_json($1) };
			$notes{ $p->{event_id} } = $p if $p;
		}
		last if $notes{$inline_id} && $notes{$deferred_id};
		usleep(100_000);
	}
	is_deeply(
		$notes{$inline_id},
		{
			event_id => $inline_id,
			webhook => 'live',
			environment => 'live',
			event => 'order.status',
			order_id => 'notify-inline',
			status => 'picking_up'
		},
		'NOTIFY for an inline-applied event');
	is_deeply(
		$notes{$deferred_id},
		{
			event_id => $deferred_id,
			webhook => 'live',
			environment => 'live',
			event => 'order.status',
			order_id => $order,
			status => 'allocated'
		},
		'NOTIFY for an event applied by the dispatcher');
	$psql->quit;

	set_conf($node, apply_mode => undef);
	$deadline = time() + 30;
	while (time() < $deadline)
	{
		($status, $doc) = post($node, status_body('inline-again-' . ++$n));
		last if ($doc->{state} // '') eq 'applied';
		usleep(100_000);
	}
	is($doc->{state}, 'applied', 'back to inline apply');
}

###
### Retries of failed applies.
###
$node->safe_psql(
	'postgres', q{
CREATE TABLE apply_gate (open boolean NOT NULL);
INSERT INTO apply_gate VALUES (false);
GRANT SELECT ON apply_gate TO biteship_webhook_apply;
CREATE FUNCTION orders_gate() RETURNS trigger LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
BEGIN
	IF NEW.order_id LIKE 'doomed-%' THEN
		RAISE EXCEPTION 'order % is refused for good', NEW.order_id;
	END IF;
	IF NEW.order_id LIKE 'retry-%' AND NOT (SELECT open FROM apply_gate) THEN
		RAISE EXCEPTION 'gate closed for order %', NEW.order_id;
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER orders_gate BEFORE INSERT OR UPDATE ON biteship_webhook.orders
	FOR EACH ROW EXECUTE FUNCTION orders_gate();
});

my ($retry_id, $doomed_id);
{
	# room for several retries before we open the gate
	set_conf($node, max_apply_attempts => 10);

	my ($status, $doc) = post($node, status_body('retry-1'));
	is($status, 200, 'delivery whose apply fails is still answered 200');
	is($doc->{state}, 'failed', '... with state failed');
	$retry_id = $doc->{event_id};
	like(
		$node->safe_psql(
			'postgres',
			"SELECT last_error FROM biteship_webhook.events WHERE id = $retry_id"),
		qr/gate closed for order retry-1/,
		'the trigger error is recorded');
	is( poll_until(
			$node,
			"SELECT attempts >= 3 FROM biteship_webhook.events WHERE id = $retry_id AND state = 'failed'",
			't', 15),
		't',
		'the dispatcher keeps retrying: attempts grows');

	$node->safe_psql('postgres', 'UPDATE apply_gate SET open = true');
	is( poll_until(
			$node,
			"SELECT state FROM biteship_webhook.events WHERE id = $retry_id",
			'applied', 30),
		'applied',
		'once the trigger lets it through, the retry applies the event');
	is( $node->safe_psql(
			'postgres',
			"SELECT attempts >= 4, last_error IS NULL, next_attempt_at IS NULL FROM biteship_webhook.events WHERE id = $retry_id"
		),
		't|t|t',
		'... after several attempts, with the error cleared');
	is( $node->safe_psql(
			'postgres',
			"SELECT count(*) FROM biteship_webhook.orders WHERE order_id = 'retry-1' AND last_event_id = $retry_id"
		),
		'1',
		'... and the order row exists');
	is( $node->safe_psql(
			'postgres',
			"SELECT string_agg(source, ',') FROM biteship_webhook.order_status_history WHERE event_id = $retry_id"
		),
		'webhook',
		'... recorded as a webhook apply');

	# a permanently failing apply stops at max_apply_attempts
	set_conf($node, max_apply_attempts => 2);
	($status, $doc) = post($node, status_body('doomed-1'));
	is($doc->{state}, 'failed', 'doomed delivery fails');
	$doomed_id = $doc->{event_id};
	is( poll_until(
			$node,
			"SELECT attempts || ',' || (next_attempt_at IS NULL) FROM biteship_webhook.events WHERE id = $doomed_id",
			'2,true', 15),
		'2,true',
		'with max_apply_attempts = 2, two attempts and no retry scheduled');
	# the next retry would have come 400 ms later
	usleep(1_000_000);
	is( $node->safe_psql(
			'postgres',
			"SELECT state || ',' || attempts FROM biteship_webhook.events WHERE id = $doomed_id"
		),
		'failed,2',
		'... and it stays failed at 2 attempts');
	set_conf($node, max_apply_attempts => undef);
}

###
### Retention.
###
{
	set_conf($node, event_retention => 3600);
	my $old = $node->safe_psql(
		'postgres', q{
UPDATE biteship_webhook.events SET received_at = now() - interval '2 hours'
 WHERE order_id IN ('reuseport-1', 'reuseport-2', 'retry-1', 'doomed-1')
RETURNING order_id});
	is(scalar(split /\n/, $old), 4, 'four events backdated');
	my $total_before = $node->safe_psql('postgres',
		'SELECT count(*) FROM biteship_webhook.events');

	# SIGHUP makes the dispatcher look at retention right away
	$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
	is( poll_until(
			$node,
			"SELECT count(*) FROM biteship_webhook.events WHERE order_id IN ('reuseport-1', 'reuseport-2', 'retry-1')",
			'0', 15),
		'0',
		'old applied events purged after reload');
	is( $node->safe_psql(
			'postgres',
			"SELECT state FROM biteship_webhook.events WHERE order_id = 'doomed-1'"),
		'failed',
		'the old failed event is kept');
	is( $node->safe_psql('postgres',
			'SELECT count(*) FROM biteship_webhook.events'),
		$total_before - 3,
		'recent events are kept');
	is( $node->safe_psql('postgres',
			"SELECT count(*) FROM biteship_webhook.orders WHERE order_id IN ('reuseport-1', 'reuseport-2', 'retry-1')"),
		'3',
		'purging events leaves the orders alone');
	set_conf($node, event_retention => undef);
}

###
### Idle workers sleep.  PostgreSQL's timeout.c leaves its interval timer
### running when a timeout is disabled, and the SIGALRM sets the latch: a
### worker that armed its apply deadline on every wake-up woke itself every
### apply_timeout, for ever.  With a 1 s apply_timeout, wake every worker
### (a reload, a delivery), let the one stale alarm pass, and count their
### context switches over 5 s: none is woken (1 allowed for a stray signal;
### the old behaviour made one a second).
###
{
	set_conf($node, apply_timeout => '1s');
	my ($status) = post($node, status_body('idle-1'));
	is($status, 200, 'a delivery before going idle');
	sleep 3;
	my @pids;
	for my $kind (qw(dispatcher reconciler outbound listener))
	{
		my @w = worker_pids($node, $kind);
		push @pids, map { [ "$_", $kind ] } @w;
	}
	my $switches = sub {
		my ($pid) = @_;
		open(my $fh, '<', "/proc/$pid/status") or return -1;
		my $n = 0;
		while (my $line = <$fh>)
		{
			$n += $1 if $line =~ /^(?:non)?voluntary_ctxt_switches:\s+(\d+)/;
		}
		return $n;
	};
	my %before = map { $_->[0] => $switches->($_->[0]) } @pids;
	sleep 5;
	for my $p (@pids)
	{
		my $d = $switches->($p->[0]) - $before{ $p->[0] };
		cmp_ok($d, '<=', 1, "the idle $p->[1] (pid $p->[0]) is not woken: $d context switches in 5 s");
	}
	set_conf($node, apply_timeout => undef);
}

###
### A standby answers 503.
###
{
	$node->backup('bk');
	my $standby = PostgreSQL::Test::Cluster->new('standby');
	$standby->init_from_backup($node, 'bk', has_streaming => 1);
	$standby->{bw_port} = BiteshipNode::free_port();
	$standby->append_conf('postgresql.conf',
		"biteship_webhook.port = $standby->{bw_port}\n");
	$standby->start;
	$node->wait_for_catchup($standby);

	ok(wait_for_http($standby, '/healthz', 503), 'standby /healthz is 503');
	my ($status, $doc, $head) = post($standby, status_body('standby-1'));
	is($status, 503, 'standby answers deliveries 503');
	like($head, qr/^Retry-After: \d+\r?$/mi, '... with Retry-After');
	($status) = post($node, status_body('standby-1'));
	is($status, 200, 'the primary still answers 200');
	$standby->stop;
}

$node->stop;
done_testing();
