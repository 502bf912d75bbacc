# Copyright (c) biteship_webhook authors
#
# The outbox through a crash: the postmaster is killed with SIGKILL while
# messages are in flight to a slow receiver.  After the restart every
# committed message is delivered at least once, with the same webhook-id
# it had before the crash, and none is lost.
use strict;
use warnings;

use lib 't';
use BiteshipNode;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

my $recv = start_receiver();
my $node = bw_node(
	'outbox_crash', conf => qq{
biteship_webhook.outbox_retry_schedule = '0, 200ms'
});
bw_setup_webhook($node);

sub sql { return $node->safe_psql('postgres', shift); }

sql("SELECT biteship_webhook.create_endpoint('slow', '$recv->{url}/slow/400', timeout => '10s')");
sql(q{SELECT biteship_webhook.send('slow', jsonb_build_object('n', g)) FROM generate_series(1, 300) g});
my $total = 300;

# some are delivered, some are in flight, most still wait
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) >= 40 FROM biteship_webhook.outbox WHERE state = 'delivered'}),
	'deliveries are under way');
my $in_flight_at_kill = scalar(receiver_log($recv));
ok(kill9_and_wait($node), 'SIGKILL of the postmaster; it and its children are gone');
note "requests received before SIGKILL: $in_flight_at_kill";
$node->start;

ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 300 FROM biteship_webhook.outbox WHERE state = 'delivered'}),
	'after the restart every message is delivered');
usleep(500_000);
my %seen;
$seen{ $_->{msg_id} }++ for grep { $_->{status} == 200 } receiver_log($recv);
my $ids = sql(q{SELECT string_agg('msg_' || id, ' ') FROM biteship_webhook.outbox});
my @missing = grep { !$seen{$_} } split ' ', $ids;
is(scalar(@missing), 0, 'the receiver got every message at least once') or diag("@missing[0..9]");
my $twice = grep { $_ > 1 } values %seen;
note "messages received more than once (in flight at the crash): $twice";
cmp_ok($twice, '<=', 64, 'at most what was in flight is sent twice');
is(sql(q{SELECT count(*) FROM biteship_webhook.outbox_attempts a
          JOIN biteship_webhook.outbox o ON o.id = a.message_id AND a.attempt = o.attempts AND a.status = 200}),
	'300', 'and every message has its successful attempt recorded');

$node->stop;
stop_receiver($recv);
done_testing();
