# Copyright (c) biteship_webhook authors
#
# The recipes of README.md, run as they are written there: the blocks that
# start with "-- recipe: <name>" are taken from README.md itself, so the
# README cannot drift from what works.  Deliveries go through the listener;
# the WhatsApp recipe's endpoint points at the mock receiver.
use strict;
use warnings;

use lib 't';
use BiteshipNode;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

# The SQL block of README.md that starts with "-- recipe: $name".
sub recipe
{
	my ($name) = @_;
	my $readme = slurp_file('README.md');
	my ($sql) = $readme =~ /```sql\n(-- recipe: \Q$name\E\n.*?)```/s
	  or die "no recipe $name in README.md";
	return $sql;
}

my $recv = start_receiver();
my $node = bw_node('recipes');
bw_setup_webhook($node);
sub sql { return $node->safe_psql('postgres', shift); }

# what the recipes assume exists: the shop's role, schema and orders
sql(q{
CREATE ROLE shop_app;
CREATE SCHEMA shop AUTHORIZATION shop_app;
CREATE TABLE shop.orders (biteship_order_id text PRIMARY KEY, buyer_phone text, shipped_at timestamptz);
ALTER TABLE shop.orders OWNER TO shop_app;
INSERT INTO shop.orders VALUES ('rcp-1', '+6281100001111', NULL), ('rcp-2', NULL, NULL);
CREATE FUNCTION shop.record_shipment_status() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = shop, pg_temp AS $$ BEGIN RETURN NULL; END $$;
});

sql(recipe('notify_buyer'));
sql(recipe('mark_delivered'));
my $wa = recipe('whatsapp');
$wa =~ s{https://wa\.example-provider\.co\.id/v1/messages}{$recv->{url}/ok} or die;
$wa =~ s{PROVIDER-TOKEN}{tok-recipe-42} or die;
sql($wa);
is(sql('SELECT count(*) FROM biteship_webhook.application_triggers'), '3',
	'the three recipes are installed');

my @sig = ("$SIG_HEADER: $SECRET");
sub deliver
{
	my ($order, $status, $hour) = @_;
	my ($st, $body) = http($node, 'POST', '/biteship/live', headers => \@sig,
		body => qq({"event":"order.status","order_id":"$order","status":"$status","courier_waybill_id":"WB-$order","updated_at":"2025-11-08T$hour:00:00Z"}));
	return "$st $body";
}
like(deliver('rcp-1', 'allocated', '01'), qr/"state":"applied"/, 'allocated');
like(deliver('rcp-1', 'picked', '02'), qr/"state":"applied"/, 'picked');
like(deliver('rcp-1', 'delivered', '05'), qr/"state":"applied"/, 'delivered');
# Biteship resends "picked" with a different body, and a late copy arrives
like(deliver('rcp-1', 'picked', '02') , qr/"state":"duplicate"/, 'a resent picked');
like(deliver('rcp-2', 'picked', '03'), qr/"state":"applied"/, 'an order without a phone number');

# notify_buyer: one row per change of status
is(sql(q{SELECT string_agg(coalesce(old_status, '-') || '>' || new_status, ',' ORDER BY created_at, new_status)
          FROM public.buyer_notifications WHERE order_id = 'rcp-1'}),
	'allocated>picked,picked>delivered', 'notify_buyer: one notification per status change');
# mark_delivered: the shop's order is shipped
is(sql(q{SELECT shipped_at FROM shop.orders WHERE biteship_order_id = 'rcp-1'}),
	'2025-11-08 05:00:00+00', 'mark_delivered: the shop order is marked shipped');

# whatsapp: two messages, picked then delivered, with the provider's token
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 2 AND bool_and(state = 'delivered') FROM biteship_webhook.outbox}),
	'whatsapp: two messages queued and delivered');
usleep(200_000);
my @got = receiver_log($recv);
is(scalar(@got), 2, 'the provider got two requests');
my @bodies = map { decode_json($_->{body}) } @got;
is(join(',', map { $_->{template} } @bodies), 'shipment_picked,shipment_delivered',
	'picked, then delivered');
is($bodies[0]{to}, '+6281100001111', 'to the buyer');
is(join(',', @{ $bodies[1]{params} }), 'rcp-1,WB-rcp-1', 'with the order and the waybill');
is(scalar(grep { $_->{headers}{authorization} eq 'Bearer tok-recipe-42' } @got), 2,
	"with the provider's token from the endpoint");
is(sql(q{SELECT count(*) FROM biteship_webhook.outbox WHERE body LIKE '%tok-recipe%' OR headers::text LIKE '%tok-recipe%'}),
	'0', 'the token is not in the outbox');
# the application role reads what became of its messages
is( $node->safe_psql('postgres',
		q{SET ROLE shop_app; SELECT string_agg(state, ',') FROM biteship_webhook.outbox}),
	'delivered,delivered', 'shop_app reads the outbox');
my ($ret, $out, $err) = $node->psql('postgres', 'SET ROLE shop_app; SELECT headers FROM biteship_webhook.endpoints');
like($err, qr/permission denied for table endpoints/, 'but not the endpoint and its token');

$node->stop;
stop_receiver($recv);
done_testing();
