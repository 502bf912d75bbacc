# Copyright (c) biteship_webhook authors
#
# Helpers shared by the TAP tests: a PostgreSQL::Test::Cluster node with
# biteship_webhook preloaded and its listener on a free loopback port, and
# small HTTP clients (curl, and raw sockets for what curl will not send).
package BiteshipNode;

use strict;
use warnings;

use Exporter 'import';
use IO::Socket::INET;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

our @EXPORT = qw(bw_node bw_setup_webhook http http_raw wait_for_http
  wait_for fixture worker_pids rss_anon_kb cpu_ticks stat_value raw_socket
  start_receiver receiver_log stop_receiver kill9_and_wait
  start_api api_control api_log $SECRET $SIG_HEADER $API_KEY);

our $SECRET = 'tap-secret-1';
our $SIG_HEADER = 'X-Biteship-Signature';
our $API_KEY = 'biteship_live.tap-key-0123456789';

# BW_SANITIZE_PRELOAD (set by scripts/sanitize): the installed library is
# built with sanitizers (make SANITIZE=1), which an uninstrumented server
# loads only with their runtime preloaded.  Every node's pg_ctl start and
# restart, and so its postmaster and every server process, gets LD_PRELOAD
# set to this value; initdb, psql and the other clients run without it.
if (($ENV{BW_SANITIZE_PRELOAD} // '') ne '')
{
	for my $method (qw(start restart))
	{
		my $orig = PostgreSQL::Test::Cluster->can($method);
		no strict 'refs';
		no warnings 'redefine';
		*{"PostgreSQL::Test::Cluster::$method"} = sub {
			local $ENV{LD_PRELOAD} = $ENV{BW_SANITIZE_PRELOAD};
			local $ENV{ASAN_OPTIONS} = $ENV{ASAN_OPTIONS}
			  // 'detect_leaks=0:verify_asan_link_order=0';
			return $orig->(@_);
		};
	}
}

# A free TCP port on 127.0.0.1.
sub free_port
{
	for (1 .. 100)
	{
		my $port = 20000 + int(rand(30000));
		my $s = IO::Socket::INET->new(
			LocalAddr => '127.0.0.1',
			LocalPort => $port,
			Proto => 'tcp',
			ReuseAddr => 0);
		if ($s)
		{
			close($s);
			return $port;
		}
	}
	die "no free port";
}

# bw_node(name, extra_conf) -> node, started, with the listener on
# $node->{bw_port}.
sub bw_node
{
	my ($name, %opts) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(%{ $opts{init} // {} });
	my $port = free_port();
	$node->append_conf(
		'postgresql.conf', qq{
shared_preload_libraries = 'biteship_webhook'
biteship_webhook.listen_addresses = '127.0.0.1'
biteship_webhook.port = $port
biteship_webhook.retry_base_delay = '200ms'
biteship_webhook.api_base_url = 'http://127.0.0.1:9'
log_min_messages = info
# one listener worker unless a test asks for more: the per-worker limits
# (connections, body memory, batches) are asserted against one worker
biteship_webhook.listener_workers = 1
} . ($opts{conf} // ''));
	$node->{bw_port} = $port;
	$node->start unless $opts{no_start};
	return $node;
}

# Install the extension and a signed webhook 'live' at /biteship/live.
sub bw_setup_webhook
{
	my ($node) = @_;
	$node->safe_psql(
		'postgres', qq{
CREATE EXTENSION biteship_webhook;
SELECT biteship_webhook.create_webhook('live', '/biteship/live',
	signature_key => '$SIG_HEADER', signature_secret => '$SECRET');
});
	wait_for_http($node, '/healthz', 200);
}

# The text of a fixture in test/data.
sub fixture
{
	my ($name) = @_;
	return slurp_file("test/data/$name.json");
}

# http(node, method, path, body => ..., headers => [...], curl => [...])
#   -> (status, body, headers)
# Uses curl, so the requests are those of a real HTTP client.
sub http
{
	my ($node, $method, $path, %o) = @_;
	my $url = ($o{scheme} // 'http') . "://127.0.0.1:$node->{bw_port}$path";
	my @cmd = ('curl', '-sS', '-o', '-', '-D', '-', '-X', $method,
		'--max-time', $o{timeout} // 30, @{ $o{curl} // [] });
	push @cmd, '-H', $_ for @{ $o{headers} // [] };
	if (defined $o{body})
	{
		my $f = PostgreSQL::Test::Utils::tempdir() . '/body';
		open(my $fh, '>', $f) or die;
		binmode $fh;
		print $fh $o{body};
		close $fh;
		push @cmd, '--data-binary', "\@$f";
	}
	push @cmd, $url;
	my ($out, $err) = ('', '');
	IPC::Run::run(\@cmd, '>', \$out, '2>', \$err);
	# skip interim 100 Continue responses
	$out =~ s/\AHTTP\/1\.[01] 100[^\r\n]*\r\n(?:[^\r\n]+\r\n)*\r\n//;
	my ($head, $body) = split(/\r\n\r\n/, $out, 2);
	my ($status) = ($head // '') =~ m{^HTTP/1\.[01] (\d{3})};
	return ($status // 0, $body // '', $head // '', $err);
}

# http_raw(node, bytes, %o) -> everything the server sent until it closed
# or until the read timeout (o{timeout}, default 5 s).
sub http_raw
{
	my ($node, $bytes, %o) = @_;
	my $s = IO::Socket::INET->new(
		PeerAddr => '127.0.0.1',
		PeerPort => $node->{bw_port},
		Proto => 'tcp') or die "connect: $!";
	$s->autoflush(1);
	print $s $bytes if length $bytes;
	shutdown($s, 1) if $o{half_close};
	my $deadline = time() + ($o{timeout} // 5);
	my $got = '';
	$s->blocking(0);
	while (time() < $deadline)
	{
		my $buf;
		my $n = sysread($s, $buf, 65536);
		if (defined $n && $n == 0) { last; }
		if (defined $n) { $got .= $buf; next; }
		last if $o{until} && $got =~ $o{until};
		usleep(10_000);
	}
	close($s);
	return $got;
}

# wait_for(seconds, sub { ... }): poll a condition until it holds or the
# time is up; returns its last value.
sub wait_for
{
	my ($secs, $cond) = @_;
	my $deadline = time() + $secs;
	while (time() < $deadline)
	{
		return 1 if $cond->();
		usleep(50_000);
	}
	return $cond->();
}

# Wait until GET path answers the expected status.
sub wait_for_http
{
	my ($node, $path, $want, $secs) = @_;
	my $deadline = time() + ($secs // 30);
	my $status;
	while (time() < $deadline)
	{
		($status) = http($node, 'GET', $path, timeout => 2);
		return 1 if $status == $want;
		usleep(100_000);
	}
	return 0;
}

# worker_pids(node, kind) -> pids of the 'biteship_webhook <kind>' workers
sub worker_pids
{
	my ($node, $kind) = @_;
	my $out = $node->safe_psql('postgres',
		"SELECT string_agg(pid::text, ' ' ORDER BY pid) FROM pg_stat_activity
		  WHERE backend_type = 'biteship_webhook $kind'");
	return split ' ', $out;
}

# Private resident memory of a process, kB (RssAnon in /proc/pid/status).
sub rss_anon_kb
{
	my ($pid) = @_;
	open(my $fh, '<', "/proc/$pid/status") or return undef;
	while (<$fh>)
	{
		return $1 if /^RssAnon:\s+(\d+)\s+kB/;
	}
	return undef;
}

# CPU time a process has used so far, in clock ticks (utime + stime of
# /proc/pid/stat; 100 a second on Linux).
sub cpu_ticks
{
	my ($pid) = @_;
	open(my $fh, '<', "/proc/$pid/stat") or return undef;
	my $stat = <$fh>;
	close $fh;
	$stat =~ s/^.*\) //s;    # past the command name, which may hold spaces
	my @f = split ' ', $stat;
	return $f[11] + $f[12];
}

# stat_value(node, name, labels_sql) -> the value of one row of the stats
# view (0 when absent); labels_sql is an SQL condition on labels.
sub stat_value
{
	my ($node, $name, $cond) = @_;
	$cond //= 'true';
	return $node->safe_psql('postgres',
		"SELECT COALESCE(sum(value), 0)::bigint FROM biteship_webhook.stats
		  WHERE name = '$name' AND $cond");
}

# start_receiver(secrets => [...]) -> receiver: the mock receiver of
# test/tools/receiver.py on a free loopback port; ->{url} is its base URL.
sub start_receiver
{
	my (%o) = @_;
	my $dir = PostgreSQL::Test::Utils::tempdir();
	my $r = { port_file => "$dir/port", log => "$dir/requests.jsonl" };
	my @cmd = ('python3', 'test/tools/receiver.py', '--port-file', $r->{port_file},
		'--log', $r->{log});
	push @cmd, '--secret', $_ for @{ $o{secrets} // [] };
	$r->{handle} = IPC::Run::start(\@cmd, '>', \my $out, '2>', \my $err);
	wait_for(10, sub { -s $r->{port_file} }) or die 'the receiver did not start';
	$r->{port} = slurp_file($r->{port_file});
	$r->{url} = "http://127.0.0.1:$r->{port}";
	return $r;
}

# start_api(key => K) -> the mock Biteship API (test/tools/biteship_api.py)
# on 127.0.0.1: {port, url, log}
sub start_api
{
	my (%o) = @_;
	my $dir = PostgreSQL::Test::Utils::tempdir();
	my $r = { port_file => "$dir/port", log => "$dir/requests.jsonl" };
	my @cmd = ('python3', 'test/tools/biteship_api.py', '--port-file', $r->{port_file},
		'--log', $r->{log}, '--key', $o{key} // $API_KEY);
	$r->{handle} = IPC::Run::start(\@cmd, '>', \my $out, '2>', \my $err);
	wait_for(10, sub { -s $r->{port_file} }) or die 'the mock API did not start';
	$r->{port} = slurp_file($r->{port_file});
	$r->{url} = "http://127.0.0.1:$r->{port}";
	return $r;
}

# api_control(api, path, body): POST to the mock's /_control/ path
sub api_control
{
	my ($api, $path, $body) = @_;
	my $f = PostgreSQL::Test::Utils::tempdir() . '/control';
	open(my $fh, '>', $f) or die;
	binmode $fh;
	print $fh $body;
	close $fh;
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'curl', '-sS', '--max-time', '10', '-o', '/dev/null', '-w', '%{http_code}',
		'--data-binary', "\@$f", "$api->{url}/_control/$path" ], '>', \$out, '2>', \$err);
	die "mock API control $path failed: $out $err" unless $out eq '200';
}

# api_log(api) -> the requests the mock API received so far, decoded
sub api_log
{
	return receiver_log($_[0]);
}

# receiver_log(receiver) -> every request it received so far, decoded
sub receiver_log
{
	my ($r) = @_;
	return () unless -e $r->{log};
	my $text = slurp_file($r->{log});
	$text =~ s/[^\n]*\z//;    # a line being written
	return map { JSON::PP::decode_json($_) } split /\n/, $text;
}

sub stop_receiver
{
	my ($r) = @_;
	$r->{handle}->kill_kill;
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

# kill9_and_wait(node): SIGKILL the postmaster, then wait until it and its
# children are gone (or zombies), so that the node can start again.
sub kill9_and_wait
{
	my ($node) = @_;
	my $pm = $node->{_pid};
	my $before = processes();
	my @children = grep { $before->{$_}[1] == $pm } keys %$before;
	$node->kill9;
	return wait_for(
		30,
		sub {
			my $p = processes();
			return 0 if $p->{$pm};
			return !grep { $p->{$_} && $p->{$_}[0] ne 'Z' } @children;
		});
}

# A connected TCP socket to the listener (blocking, autoflush).
sub raw_socket
{
	my ($node) = @_;
	my $s = IO::Socket::INET->new(
		PeerAddr => '127.0.0.1',
		PeerPort => $node->{bw_port},
		Proto => 'tcp') or die "connect: $!";
	$s->autoflush(1);
	return $s;
}

1;
