# Copyright (c) biteship_webhook authors
#
# Forwarded events verify with the stock Standard Webhooks library: the
# receiver of README.md's forwarding recipe (test/tools/stock_receiver.js,
# on npm's "standardwebhooks") gets each applied Biteship event once, in
# order, and accepts its signature; with the wrong secret it refuses them.
use strict;
use warnings;

use lib 't';
use BiteshipNode;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;

plan skip_all => 'node and test/tools/node_modules/standardwebhooks are needed'
  unless -d 'test/tools/node_modules/standardwebhooks' && `node --version 2>/dev/null`;

my $dir = PostgreSQL::Test::Utils::tempdir();

sub start_stock
{
	my ($name, $secret) = @_;
	my $r = { port_file => "$dir/$name.port", log => "$dir/$name.jsonl" };
	local $ENV{RELAY_SECRET} = $secret;
	local $ENV{NODE_PATH} = 'test/tools/node_modules';
	$r->{h} = IPC::Run::start([ 'node', 'test/tools/stock_receiver.js', $r->{port_file}, $r->{log} ],
		'>', \my $o, '2>', \my $e);
	wait_for(15, sub { -s $r->{port_file} }) or die "the stock receiver did not start: $e";
	$r->{url} = 'http://127.0.0.1:' . slurp_file($r->{port_file});
	return $r;
}

sub stock_log
{
	my ($r) = @_;
	return () unless -e $r->{log};
	return map { decode_json($_) } grep { length } split /\n/, slurp_file($r->{log});
}

my $node = bw_node('stock');
bw_setup_webhook($node);
my $secret = $node->safe_psql('postgres', 'SELECT biteship_webhook.generate_signing_secret()');
my $other = $node->safe_psql('postgres', 'SELECT biteship_webhook.generate_signing_secret()');
my $good = start_stock('good', $secret);
my $bad = start_stock('bad', $other);

$node->safe_psql('postgres', "SET log_statement = 'none';
SELECT biteship_webhook.create_endpoint('relay', '$good->{url}/biteship',
	signing_secret => '$secret', forward_events => '{order.status,order.waybill_id}');
SELECT biteship_webhook.create_endpoint('impostor', '$bad->{url}/biteship',
	signing_secret => '$secret', forward_events => '{order.status}', max_attempts => 1);");

my @sig = ("$SIG_HEADER: $SECRET");
for my $s ([ 'picked', '02' ], [ 'delivered', '05' ])
{
	my ($st) = http($node, 'POST', '/biteship/live', headers => \@sig,
		body => qq({"event":"order.status","order_id":"stock-1","status":"$s->[0]","updated_at":"2025-11-08T$s->[1]:00:00Z"}));
	is($st, 200, "delivery $s->[0] accepted");
}
http($node, 'POST', '/biteship/live', headers => \@sig,
	body => '{"event":"order.waybill_id","order_id":"stock-1","courier_waybill_id":"JNE123"}');

ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 3 FROM biteship_webhook.outbox o JOIN biteship_webhook.endpoints e
		   ON e.id = o.endpoint_id WHERE e.name = 'relay' AND o.state = 'delivered'}),
	'three forwards delivered to the stock receiver');
my @got = stock_log($good);
is(scalar(@got), 3, 'it got three requests');
is(scalar(grep { $_->{ok} } @got), 3, 'and the stock library verified every signature');
is(join(',', map { $_->{event}{type} } @got), 'order.status,order.status,order.waybill_id',
	'in the order they were applied');
is($got[1]{event}{data}{order}{status}, 'delivered', 'with the orders row');
is($got[2]{event}{data}{payload}{courier_waybill_id}, 'JNE123', 'and the payload');

ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 2 FROM biteship_webhook.outbox o JOIN biteship_webhook.endpoints e
		   ON e.id = o.endpoint_id WHERE e.name = 'impostor' AND o.state = 'dead'}),
	'a receiver that knows another secret refuses them (400: dead)');
is(scalar(grep { !$_->{ok} && $_->{error} =~ /signature/i } stock_log($bad)), 2,
	'because the signature does not verify');

$_->{h}->kill_kill for $good, $bad;
$node->stop;
done_testing();
