# Copyright (c) biteship_webhook authors
#
# Failure isolation inside one batch: 40 deliveries pipelined on one
# connection are committed together; the one whose application trigger
# raises is answered "failed" and retried later, and every other one is
# applied, with each of its triggers fired exactly once (row triggers on
# orders and the history, and a statement-level count), in arrival order
# per order.  This is what any faster apply path must keep.  A batch with
# no refusal is applied set-based, with the same row triggers.  A trigger
# that raises SQLSTATE 57014 (query_canceled) itself fails only its event.
use strict;
use warnings;

use lib 't';
use BiteshipNode;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $node = bw_node('isolation', conf => "biteship_webhook.max_batch_size = 64\n");
bw_setup_webhook($node);
my $SIG = "$SIG_HEADER: $SECRET";

sub sql { return $node->safe_psql('postgres', shift); }

sql(q{
CREATE TABLE public.fired (tg text, order_id text, status text, n bigserial);
GRANT INSERT ON public.fired TO biteship_webhook_apply;
GRANT USAGE ON SEQUENCE public.fired_n_seq TO biteship_webhook_apply;
CREATE FUNCTION public.on_order() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.order_id = 'iso-bad' THEN
		RAISE EXCEPTION 'the application refuses %', NEW.order_id;
	END IF;
	INSERT INTO public.fired (tg, order_id, status) VALUES (TG_OP, NEW.order_id, NEW.status);
	RETURN NULL;
END $$;
CREATE FUNCTION public.on_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO public.fired (tg, order_id, status) VALUES ('history', NEW.order_id, NEW.status);
	RETURN NULL;
END $$;
CREATE TRIGGER iso_order AFTER INSERT OR UPDATE OF status ON biteship_webhook.orders
	FOR EACH ROW EXECUTE FUNCTION public.on_order();
CREATE TRIGGER iso_history AFTER INSERT ON biteship_webhook.order_status_history
	FOR EACH ROW EXECUTE FUNCTION public.on_history();
});

sub body_for
{
	my ($id, $status, $hour) = @_;
	return qq({"event":"order.status","order_id":"$id","status":"$status","updated_at":"2025-11-08T$hour:00:00Z"});
}

sub delivery
{
	my ($body) = @_;
	return "POST /biteship/live HTTP/1.1\r\nHost: x\r\n$SIG\r\n"
	  . 'Content-Length: ' . length($body) . "\r\n\r\n$body";
}

# Pipeline the bodies on one connection; the raw answers, once all came.
sub pipelined
{
	my @b = @_;
	my $sock = raw_socket($node);
	syswrite($sock, join('', map { delivery($_) } @b));
	my $text = '';
	my $until = time() + 20;
	$sock->blocking(0);
	while (time() < $until)
	{
		last if (() = $text =~ /\r\n\r\n\{[^}]*\}/g) >= @b;
		my $buf;
		my $r = sysread($sock, $buf, 65536);
		last if defined $r && $r == 0;
		if (defined $r) { $text .= $buf; next; }
		usleep(5_000);
	}
	close($sock);
	return $text;
}

# 20 orders x 2 statuses, interleaved, and the bad order in the middle
my @bodies;
for my $st ([ 'picked', '02' ], [ 'delivered', '05' ])
{
	for my $i (1 .. 20)
	{
		my $id = $i == 10 ? 'iso-bad' : "iso-$i";
		push @bodies, body_for($id, @$st);
	}
}

my $batches_before = sql("SELECT COALESCE(sum(value), 0) FROM biteship_webhook.stats WHERE name = 'batch_size_count'");
my $got = pipelined(@bodies);
my @answers = map { decode_json($_) } $got =~ /\r\n\r\n(\{[^}]*\})/g;
my @codes = $got =~ m{HTTP/1\.1 (\d{3}) }g;
is(scalar(@answers), 40, 'forty pipelined deliveries, forty answers');
is(scalar(grep { $_ != 200 } @codes), 0, 'all answered 200 (a failed apply is still a stored delivery)');
my %by_state;
$by_state{ $_->{state} }++ for @answers;
is($by_state{failed} // 0, 2, 'the two deliveries of the refused order are failed');
is($by_state{applied} // 0, 38, 'the other 38 are applied');
my $batches = sql("SELECT COALESCE(sum(value), 0) FROM biteship_webhook.stats WHERE name = 'batch_size_count'")
  - $batches_before;
cmp_ok($batches, '<', 40, "they were committed in $batches batches, not one by one");

is(sql("SELECT count(*) FROM biteship_webhook.orders WHERE order_id LIKE 'iso-%'"), '19',
	'19 orders applied, the refused one not');
is(sql("SELECT string_agg(DISTINCT status, ',') FROM biteship_webhook.orders WHERE order_id LIKE 'iso-%'"),
	'delivered', 'each of them delivered');
is(sql("SELECT count(*) FROM public.fired WHERE order_id = 'iso-bad'"), '0',
	'nothing of the refused order reached the application');
is(sql("SELECT count(*) FROM (SELECT tg, order_id, status FROM public.fired
	GROUP BY 1, 2, 3 HAVING count(*) <> 1) x"), '0', 'every trigger fired exactly once per change');
is(sql("SELECT count(*) FROM public.fired WHERE tg = 'INSERT'"), '19', 'one INSERT per order');
is(sql("SELECT count(*) FROM public.fired WHERE tg = 'UPDATE'"), '19', 'one status UPDATE per order');
is(sql("SELECT count(*) FROM public.fired WHERE tg = 'history'"), '38', 'one history row per status');
is(sql("SELECT count(*) FROM (SELECT order_id, array_agg(status ORDER BY n) a FROM public.fired
	WHERE tg <> 'history' GROUP BY 1) x WHERE a <> '{picked,delivered}'"), '0',
	'in arrival order for each order');
is(sql("SELECT string_agg(DISTINCT last_error, ',') FROM biteship_webhook.events
	WHERE order_id = 'iso-bad'"), 'the application refuses iso-bad', 'the failure says why');

# once the application accepts it, the retry applies it, once
sql("CREATE OR REPLACE FUNCTION public.on_order() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN INSERT INTO public.fired (tg, order_id, status) VALUES (TG_OP, NEW.order_id, NEW.status); RETURN NULL; END \$\$");
ok(wait_for(30, sub { sql("SELECT count(*) FROM biteship_webhook.events WHERE order_id = 'iso-bad' AND state = 'applied'") eq '2' }),
	'the dispatcher applies the refused deliveries once the trigger accepts them');
# Each event is retried on its own schedule, and the older one may have
# been retried (and refused) more often: either comes first.  In arrival
# order both change the order row; newest first, the older is a late
# status and only adds its history row.  Either way each trigger fires
# once per change, the history trigger first, and the order ends delivered.
like(sql("SELECT string_agg(tg || ':' || status, ',' ORDER BY n) FROM public.fired WHERE order_id = 'iso-bad'"),
	qr/^(history:picked,INSERT:picked,history:delivered,UPDATE:delivered|history:delivered,INSERT:delivered,history:picked)$/,
	'with each trigger once per change, the history trigger first');
is(sql("SELECT status FROM biteship_webhook.orders WHERE order_id = 'iso-bad'"), 'delivered',
	'the newer status wins, whichever retry came first');

# --- the same without a refusal: applied set-based, with the same triggers
sql(q{
CREATE TABLE public.stmts (n bigserial);
GRANT INSERT ON public.stmts TO biteship_webhook_apply;
GRANT USAGE ON SEQUENCE public.stmts_n_seq TO biteship_webhook_apply;
CREATE FUNCTION public.on_orders_stmt() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO public.stmts DEFAULT VALUES; RETURN NULL; END $$;
CREATE TRIGGER iso_stmt AFTER INSERT OR UPDATE ON biteship_webhook.orders
	FOR EACH STATEMENT EXECUTE FUNCTION public.on_orders_stmt();
});
{
	my @fast;
	for my $st ([ 'picked', '02' ], [ 'delivered', '05' ])
	{
		push @fast, body_for("set-$_", @$st) for 1 .. 20;
	}
	my $b0 = sql("SELECT COALESCE(sum(value), 0) FROM biteship_webhook.stats WHERE name = 'batch_size_count'");
	my $text = pipelined(@fast);
	my @a = map { decode_json($_) } $text =~ /\r\n\r\n(\{[^}]*\})/g;
	is(scalar(grep { $_->{state} eq 'applied' } @a), 40, 'forty more, all applied');
	my $nb = sql("SELECT COALESCE(sum(value), 0) FROM biteship_webhook.stats WHERE name = 'batch_size_count'") - $b0;
	my $stmts = sql('SELECT count(*) FROM public.stmts');
	cmp_ok($stmts, '<', 40,
		"applied set-based: $stmts statements on orders for 40 events in $nb batches");
	is(sql("SELECT count(*) FROM (SELECT tg, order_id, status FROM public.fired WHERE order_id LIKE 'set-%'
		GROUP BY 1, 2, 3 HAVING count(*) <> 1) x"), '0', 'each row trigger fired once per change');
	is(sql("SELECT count(*) FROM public.fired WHERE order_id LIKE 'set-%'"), '80',
		'an INSERT, an UPDATE and two history rows per order');
	is(sql("SELECT count(*) FROM (SELECT order_id, string_agg(tg || ':' || status, ',' ORDER BY n) a
		FROM public.fired WHERE order_id LIKE 'set-%' GROUP BY 1) x
		WHERE a <> 'history:picked,INSERT:picked,history:delivered,UPDATE:delivered'"), '0',
		'for each order in arrival order, its history trigger first');
}

# --- application code that raises SQLSTATE 57014 itself ------------------
# query_canceled from a trigger is the application's error, not a cancel
# of the worker: it fails its event alone, as any other error does, and the
# dispatcher keeps retrying it (and everything else) on its schedule.
sql("CREATE OR REPLACE FUNCTION public.on_order() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN
	IF NEW.order_id = 'qc-bad' THEN
		RAISE EXCEPTION 'the application cancels %', NEW.order_id USING ERRCODE = 'query_canceled';
	END IF;
	INSERT INTO public.fired (tg, order_id, status) VALUES (TG_OP, NEW.order_id, NEW.status);
	RETURN NULL;
END \$\$");
{
	my @qc = map { body_for($_ == 3 ? 'qc-bad' : "qc-$_", 'picked', '02') } 1 .. 6;
	my $text = pipelined(@qc);
	my @a = map { decode_json($_) } $text =~ /\r\n\r\n(\{[^}]*\})/g;
	my @codes = $text =~ m{HTTP/1\.1 (\d{3}) }g;
	is(join(',', @codes), '200,200,200,200,200,200', 'a batch with a trigger raising 57014: all answered 200');
	is(join(',', map { $_->{state} } @a), 'applied,applied,failed,applied,applied,applied',
		'only its own delivery failed');
	is(sql("SELECT last_error FROM biteship_webhook.events WHERE order_id = 'qc-bad'"),
		'the application cancels qc-bad', 'with the application\'s message, not a timeout');
	ok(wait_for(30, sub { sql("SELECT attempts >= 3 FROM biteship_webhook.events WHERE order_id = 'qc-bad'") eq 't' }),
		'the dispatcher retries it, and counts each attempt');
	my $other = pipelined(body_for('qc-later', 'picked', '03'));
	like($other, qr/"state":"applied"/, 'other deliveries are applied meanwhile');
	sql("CREATE OR REPLACE FUNCTION public.on_order() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN INSERT INTO public.fired (tg, order_id, status) VALUES (TG_OP, NEW.order_id, NEW.status); RETURN NULL; END \$\$");
	ok(wait_for(30, sub { sql("SELECT state FROM biteship_webhook.events WHERE order_id = 'qc-bad'") eq 'applied' }),
		'once the trigger accepts it, it is applied');
	is(sql("SELECT count(*) FROM public.fired WHERE order_id = 'qc-bad' AND tg = 'INSERT'"), '1', 'once');
}

# --- forwarding sees each order as it was after each event ---------------
sql(q{SELECT biteship_webhook.create_endpoint('fwd', 'http://127.0.0.1:9/x', forward_events => '{order.status}')});
{
	my @fw = (body_for('fw-1', 'picked', '02'), body_for('fw-1', 'delivered', '05'),
		body_for('fw-2', 'picked', '02'));
	my $text = pipelined(@fw);
	is(sql(q{SELECT string_agg((body::jsonb)->'data'->'payload'->>'order_id' || ':' || ((body::jsonb)->'data'->'payload'->>'status')
		|| '/' || ((body::jsonb)->'data'->'order'->>'status'), ',' ORDER BY id) FROM biteship_webhook.outbox}),
		'fw-1:picked/picked,fw-1:delivered/delivered,fw-2:picked/picked',
		'each forwarded event carries its order as it was after that event');
}

# --- replay_failed() and a concurrent apply -------------------------------
# replay_failed() reads the failed ids without locking them.  An event that
# someone else applies meanwhile is skipped once its lock is ours: applied
# once, its triggers fired once, and not counted as replayed.
sql("CREATE OR REPLACE FUNCTION public.on_order() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN
	IF NEW.order_id = 'race-1' THEN
		RAISE EXCEPTION 'the application refuses %', NEW.order_id;
	END IF;
	INSERT INTO public.fired (tg, order_id, status) VALUES (TG_OP, NEW.order_id, NEW.status);
	RETURN NULL;
END \$\$");
{
	my $text = pipelined(body_for('race-1', 'picked', '02'));
	like($text, qr/"state":"failed"/, 'a refused delivery is failed');
	my $id = sql("SELECT id FROM biteship_webhook.events WHERE order_id = 'race-1'");
	# the dispatcher stays out of it; the application accepts it again
	sql("UPDATE biteship_webhook.events SET next_attempt_at = now() + interval '1 hour' WHERE id = $id");
	sql("CREATE OR REPLACE FUNCTION public.on_order() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN INSERT INTO public.fired (tg, order_id, status) VALUES (TG_OP, NEW.order_id, NEW.status); RETURN NULL; END \$\$");
	sql("DELETE FROM public.fired WHERE order_id = 'race-1'");
	my $attempts = sql("SELECT attempts FROM biteship_webhook.events WHERE id = $id");

	my $a = $node->background_psql('postgres');
	$a->query_safe('BEGIN');
	is($a->query_safe("SELECT biteship_webhook.replay($id)"), 'applied',
		'one session applies the failed event and holds it');
	my $b = $node->background_psql('postgres');
	$b->query_until(qr/started/, "\\echo started\nSELECT 'replayed:' || biteship_webhook.replay_failed();\n");
	ok( wait_for(
			20,
			sub {
				sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'
					AND query LIKE '%replay_failed%'") eq '1';
			}),
		'replay_failed() waits for that event');
	$a->query_safe('COMMIT');
	my $out = $b->query_until(qr/replayed:\d+/, '');
	like($out, qr/replayed:0/, '... and, once it is applied, skips it and counts it not');
	$a->quit;
	$b->quit;
	is(sql("SELECT state || ',' || (attempts - $attempts) FROM biteship_webhook.events WHERE id = $id"),
		'applied,1', 'the event is applied, in one more attempt');
	is(sql("SELECT string_agg(tg || ':' || status, ',' ORDER BY n) FROM public.fired WHERE order_id = 'race-1'"),
		'history:picked,INSERT:picked', 'its triggers fired once');
	is(sql(q{SELECT count(*) FROM biteship_webhook.outbox
		WHERE (body::jsonb)->'data'->'payload'->>'order_id' = 'race-1'}),
		'1', 'and it was forwarded once');
}

$node->stop;
done_testing();
