# Copyright (c) biteship_webhook authors
#
# Crash durability: the postmaster is killed with SIGKILL while a client
# sends deliveries over several keep-alive connections.  After restart,
# every delivery that was answered 200 is in the events log exactly once,
# and applied.

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

use lib 't';
use BiteshipNode;

my $node = bw_node('crash');
bw_setup_webhook($node);

my $dir = PostgreSQL::Test::Utils::tempdir();
my $outfile = "$dir/answers.tsv";
my $stopfile = "$dir/stop";

# The complete lines the client wrote so far: [order_id, status, event_id, state]
sub answers
{
	return () unless -e $outfile;
	my $text = slurp_file($outfile);
	$text =~ s/[^\n]*\z//;    # a line being written
	return map { [ split /\t/, $_, -1 ] } split /\n/, $text;
}

sub acked_count
{
	return scalar grep { $_->[1] eq '200' } answers();
}


# pid -> [state, ppid] of every process, from /proc
sub processes
{
	my %p;
	for my $stat (glob '/proc/[0-9]*/stat')
	{
		open(my $fh, '<', $stat) or next;
		my $line = <$fh>;
		close $fh;
		next unless defined $line;
		my ($pid) = $line =~ /^(\d+)/;
		my @rest = split ' ', substr($line, rindex($line, ')') + 2);
		$p{$pid} = [ $rest[0], $rest[1] ];
	}
	return \%p;
}

my $h = IPC::Run::start(
	[
		'python3', 'test/tools/hammer.py',
		'--port' => $node->{bw_port},
		'--secret' => $SECRET,
		'--header' => $SIG_HEADER,
		'--threads' => 8,
		'--duration' => 40,
		'--max' => 200000,
		'--prefix' => 'crash',
		'--out' => $outfile,
		'--stop-file' => $stopfile,
	],
	'>' => \my $hammer_out,
	'2>' => \my $hammer_err);

# Let a good stream build up, then pull the plug in the middle of it.
ok(wait_for(20, sub { acked_count() >= 300 }),
	'the client gets deliveries acknowledged before the crash');

my $pm = $node->{_pid};
my $before = processes();
my @children = grep { $before->{$_}[1] == $pm } keys %$before;
$node->kill9;
my $acked_at_kill = acked_count();
note "acknowledged before SIGKILL: $acked_at_kill";

# The children notice the postmaster's death and exit; wait for every one of
# them to be gone (or a zombie: they hold nothing then), and the postmaster
# itself to be reaped, or the new postmaster refuses to start.
ok( wait_for(
		30,
		sub {
			my $p = processes();
			return 0 if $p->{$pm};
			return !grep { $p->{$_} && $p->{$_}[0] ne 'Z' } @children;
		}),
	'old postmaster and its children are gone');

# the client is still hammering: connection errors meanwhile
$node->start;
ok(wait_for_http($node, '/healthz', 200), 'listener is back after restart');
my $acked_at_restart = acked_count();
ok(wait_for(20, sub { acked_count() >= $acked_at_restart + 100 }),
	'the client gets deliveries acknowledged again after the restart');

open(my $fh, '>', $stopfile) or die "could not create $stopfile: $!";
close $fh;
ok($h->finish, 'client finished cleanly') or diag($hammer_err);
chomp $hammer_out;
note "client: $hammer_out";
my ($errors) = $hammer_out =~ /errors=(\d+)/;
cmp_ok($errors // 0, '>', 0, 'the client saw the connections die');

###
### Every acknowledged delivery is there, once.
###
my @answers = answers();
my @acked = grep { $_->[1] eq '200' } @answers;
my %seen;
my @dups = grep { $seen{ $_->[0] }++ } @acked;
is(scalar(@dups), 0, 'each order_id was acknowledged once');
my @bad = grep { $_->[2] !~ /^\d+$/ || $_->[3] ne 'applied' } @acked;
is(scalar(@bad), 0, 'every acknowledgement says applied, with an event_id')
  or diag(join("\n", map { join("\t", @$_) } @bad[ 0 .. ($#bad < 5 ? $#bad : 4) ]));
diag sprintf('acknowledged: %d (%d before SIGKILL), other answers: %d',
	scalar(@acked), $acked_at_kill, @answers - @acked);
cmp_ok(scalar(@acked), '>=', 400, 'hundreds of deliveries acknowledged');

$node->safe_psql('postgres',
	'CREATE TABLE acked (order_id text PRIMARY KEY, event_id bigint NOT NULL)');
for (my $i = 0; $i < @acked; $i += 2000)
{
	my $last = $i + 1999 < $#acked ? $i + 1999 : $#acked;
	$node->safe_psql('postgres',
		    'INSERT INTO acked VALUES '
		  . join(',', map { "('$_->[0]', $_->[2])" } @acked[ $i .. $last ]));
}
is($node->safe_psql('postgres', 'SELECT count(*) FROM acked'),
	scalar(@acked), 'acknowledged ids loaded');

is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM acked a
  LEFT JOIN (SELECT order_id, count(*) AS n FROM biteship_webhook.events
              GROUP BY order_id) e USING (order_id)
 WHERE e.n IS DISTINCT FROM 1}),
	'0',
	'every acknowledged delivery is in the events log exactly once');
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM acked a
  JOIN biteship_webhook.events e ON e.order_id = a.order_id
 WHERE e.id <> a.event_id OR e.state <> 'applied' OR e.delivery_count <> 1}),
	'0',
	'... under the event_id it was acknowledged with, applied, delivered once');
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM biteship_webhook.events
 GROUP BY webhook_id, body_sha256 HAVING count(*) > 1}),
	'',
	'no body hash is stored twice');
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM acked a
 WHERE NOT EXISTS (SELECT FROM biteship_webhook.orders o
                    WHERE o.environment = 'live' AND o.order_id = a.order_id
                      AND o.last_event_id = a.event_id)}),
	'0',
	'every acknowledged delivery has its order row');

$node->stop;
done_testing();
