# Copyright (c) biteship_webhook authors
#
# Operations that must not break ingest:
# - a pg_dump / pg_restore round trip: the restored database keeps
#   ingesting and event ids continue; the grants survive; application
#   triggers, which pg_dump leaves out, are listed for the operator;
# - a listen setting that can never work is refused by its check hook with
#   a clear message (the default is used), instead of a worker restart loop;
# - a port that is taken, or a TLS configuration that does not load, keeps
#   the listener running and retrying, and it recovers without a restart;
# - a bad value on reload is refused and the old one kept.
use strict;
use warnings;

use lib 't';
use BiteshipNode;
use IO::Socket::INET;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

my $SIG = "$SIG_HEADER: $SECRET";

sub delivery_body
{
	my ($id) = @_;
	return qq({"event":"order.status","order_id":"$id","status":"picked"});
}

# --- dump and restore ---------------------------------------------------
my $node = bw_node('ops');
bw_setup_webhook($node);
for my $i (1 .. 5)
{
	my ($status) = http($node, 'POST', '/biteship/live', body => delivery_body("dump-$i"),
		headers => [$SIG]);
	die "delivery failed: $status" unless $status == 200;
}
$node->safe_psql(
	'postgres', q{
CREATE ROLE shop_app;
GRANT USAGE ON SCHEMA biteship_webhook TO shop_app;
GRANT SELECT, TRIGGER ON biteship_webhook.orders TO shop_app;
CREATE TABLE public.shipped (order_id text);
GRANT INSERT ON public.shipped TO biteship_webhook_apply;
CREATE FUNCTION public.on_picked() RETURNS trigger LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$ BEGIN INSERT INTO shipped VALUES (NEW.order_id); RETURN NULL; END $$;
CREATE TRIGGER on_picked AFTER INSERT ON biteship_webhook.orders
	FOR EACH ROW EXECUTE FUNCTION public.on_picked();
});
my $max_id = $node->safe_psql('postgres', 'SELECT max(id) FROM biteship_webhook.events');
my $triggers = $node->safe_psql('postgres',
	'SELECT definition FROM biteship_webhook.application_triggers');
like($triggers, qr/^CREATE TRIGGER on_picked AFTER INSERT ON biteship_webhook\.orders/,
	'application_triggers lists the trigger with its definition');

my $dump = PostgreSQL::Test::Utils::tempdir() . '/db.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('postgres') ],
	'pg_dump of the database');
$node->safe_psql('postgres', 'CREATE DATABASE restored');
$node->command_ok([ 'pg_restore', '-d', $node->connstr('restored'), $dump ],
	'pg_restore into a new database, without errors');

is($node->safe_psql('restored', 'SELECT count(*) FROM biteship_webhook.events'),
	$node->safe_psql('postgres', 'SELECT count(*) FROM biteship_webhook.events'),
	'the events log is restored');
is($node->safe_psql('restored', 'SELECT last_value FROM biteship_webhook.events_id_seq'),
	$max_id, 'and the id sequence with it');
is( $node->safe_psql('restored', qq{SELECT event_id > $max_id, state FROM biteship_webhook.ingest('live',
	'{"event":"order.status","order_id":"after-restore-1","status":"picked"}'::text, '{"$SIG_HEADER": "$SECRET"}')}),
	't|applied', 'ingest() in the restored database continues the ids');
is( $node->safe_psql('restored',
		"SELECT has_table_privilege('shop_app', 'biteship_webhook.orders', 'SELECT, TRIGGER')"),
	't', "the application's grants survive");
is( $node->safe_psql('restored',
		"SELECT has_table_privilege('biteship_webhook_apply', 'biteship_webhook.orders', 'INSERT, UPDATE')"),
	't', "the apply role's grants survive");
is($node->safe_psql('restored', 'SELECT count(*) FROM biteship_webhook.application_triggers'),
	'0', 'application triggers are not in the dump (PostgreSQL dumps only the data of extension tables)');
$node->safe_psql('restored', $triggers);
is($node->safe_psql('restored', 'SELECT trigger_name FROM biteship_webhook.application_triggers'),
	'on_picked', 'and come back from the saved definitions');

# the listener on the restored database
$node->append_conf('postgresql.conf', "biteship_webhook.database = 'restored'\n");
$node->restart;
ok(wait_for_http($node, '/healthz', 200), 'the listener serves the restored database');
{
	my ($status, $body) = http($node, 'POST', '/biteship/live',
		body => delivery_body('after-restore-2'), headers => [$SIG]);
	is($status, 200, 'a delivery to the restored database is answered 200');
	my ($id) = $body =~ /"event_id":(\d+)/;
	cmp_ok($id // 0, '>', $max_id, 'with an event id after the old ones');
	like($body, qr/"state":"applied"/, 'and applied');
	is($node->safe_psql('restored', "SELECT count(*) FROM public.shipped WHERE order_id = 'after-restore-2'"),
		'1', 'the restored trigger fires');
}
$node->stop;

# --- a listen setting that can never work: refused by the check hook -----
{
	# PostgreSQL validates an extension's settings when the library
	# defines them: a bad value is reported and the default used, so the
	# server starts, once, without a worker restart loop
	my $bad = bw_node('badlisten', no_start => 1,
		conf => "biteship_webhook.listen_addresses = 'not a host!'\n");
	$bad->start;
	like(slurp_file($bad->logfile),
		qr/WARNING:  invalid value for parameter "biteship_webhook.listen_addresses": "not a host!"/,
		'listen_addresses with a space: the server says which setting is wrong');
	is($bad->safe_psql('postgres', 'SHOW biteship_webhook.listen_addresses'), 'localhost',
		'and the listener uses the default instead');
	ok(wait_for_http($bad, '/healthz', 503, 10), 'on which it answers');
	my @pids = worker_pids($bad, 'listener');
	usleep(1_500_000);
	is(join(',', worker_pids($bad, 'listener')), join(',', @pids), 'no restart loop');
	$bad->stop;
}

# --- a taken port: the listener waits for it, no restart loop -----------
{
	my $n2 = bw_node('busyport', no_start => 1);
	my $squatter = IO::Socket::INET->new(
		LocalAddr => '127.0.0.1',
		LocalPort => $n2->{bw_port},
		Listen => 5,
		ReuseAddr => 1) or die "cannot take the port: $!";
	$n2->start;
	ok( wait_for(10, sub { slurp_file($n2->logfile) =~ /could not listen on any address; retrying every 10 s/ }),
		'the port is taken: the listener says so');
	my @pids = worker_pids($n2, 'listener');
	usleep(2_500_000);
	is(join(',', worker_pids($n2, 'listener')), join(',', @pids),
		'and keeps running (the same process, no restart loop)');
	close($squatter);
	ok(wait_for_http($n2, '/healthz', 503, 20),
		'once the port is free it listens (503: the extension is not installed yet)');
	like(slurp_file($n2->logfile), qr/listening again on port/, 'and says so');
	$n2->stop;
}

# --- TLS that does not load: no plain HTTP in its place, no loop --------
{
	my $n3 = bw_node('badtls', no_start => 1, conf => qq{
biteship_webhook.ssl = on
biteship_webhook.ssl_cert_file = '/nonexistent/server.pem'
biteship_webhook.ssl_key_file = '/nonexistent/server.key'
});
	$n3->start;
	ok( wait_for(10, sub { slurp_file($n3->logfile) =~ /could not set up TLS; not listening until the configuration is fixed/ }),
		'a TLS configuration that does not load is logged');
	my @pids = worker_pids($n3, 'listener');
	is(scalar(@pids), 1, 'the listener runs');
	my ($status) = http($n3, 'GET', '/healthz', timeout => 2);
	is($status, 0, 'and does not serve plain HTTP in place of HTTPS');
	usleep(1_500_000);
	is(join(',', worker_pids($n3, 'listener')), join(',', @pids), 'no restart loop');
	$n3->append_conf('postgresql.conf', "biteship_webhook.ssl = off\n");
	$n3->reload;
	ok(wait_for_http($n3, '/healthz', 503, 10), 'a reload that fixes it brings the listener up');

	# a bad value on reload is refused, the old one stays
	my $pos = -s $n3->logfile;
	$n3->append_conf('postgresql.conf', "biteship_webhook.trusted_proxies = '10.0.0.0/33'\n");
	$n3->reload;
	ok( wait_for(10, sub { slurp_file($n3->logfile, $pos) =~ /invalid value for parameter "biteship_webhook.trusted_proxies": "10.0.0.0\/33"/ }),
		'a bad trusted_proxies on reload is refused with a clear message');
	is($n3->safe_psql('postgres', 'SHOW biteship_webhook.trusted_proxies'), '',
		'and the old value stays');
	$n3->stop;
}

done_testing();
