# Copyright (c) biteship_webhook authors
#
# What a hostile client can make the listener hold, and strict framing on
# the wire:
# - clients that pipeline requests and never read the answers: the
#   listener's private memory stays flat and the clients are cut off;
# - bodies for paths nobody reads are not buffered;
# - bodies for webhooks are bounded by body_memory_limit (503 beyond it);
# - requests that RFC 9112 forbids are refused and close the connection,
#   so nothing pipelined after them is ever parsed;
# - a connection that never sends a byte is closed at request_timeout;
# - running out of file descriptors pauses accepting instead of spinning,
#   and the fd budget of the server is respected.
use strict;
use warnings;

use lib 't';
use BiteshipNode;
use IO::Socket::INET;
use IO::Select;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

my $node = bw_node(
	'limits', conf => qq{
biteship_webhook.request_timeout = '1s'
biteship_webhook.keepalive_timeout = '30s'
biteship_webhook.max_connections = 64
biteship_webhook.max_body_size = '1MB'
biteship_webhook.body_memory_limit = '4MB'
});
bw_setup_webhook($node);
my @sig = ("$SIG_HEADER: $SECRET");

sub sql { return $node->safe_psql('postgres', shift); }

my ($lpid) = worker_pids($node, 'listener');
ok($lpid, 'the listener runs');

# Open n non-blocking sockets.
sub open_sockets
{
	my ($n) = @_;
	my @s;
	for (1 .. $n)
	{
		my $s = raw_socket($node);
		$s->blocking(0);
		push @s, $s;
	}
	return @s;
}

# Everything a socket has to read now (non-blocking), and whether it ended.
sub drain
{
	my ($s) = @_;
	my ($got, $eof) = ('', 0);
	while (1)
	{
		my $buf;
		my $n = sysread($s, $buf, 65536);
		if (defined $n && $n == 0) { $eof = 1; last; }
		if (!defined $n)
		{
			$eof = 1 unless $!{EAGAIN} || $!{EWOULDBLOCK};    # reset: closed
			last;
		}
		$got .= $buf;
	}
	return ($got, $eof);
}

# Wait until every socket has been closed by the server, or time is up.
sub all_closed
{
	my ($secs, @socks) = @_;
	my %open = map { $_ => $_ } @socks;
	my $deadline = time() + $secs;
	while (%open && time() < $deadline)
	{
		for my $k (keys %open)
		{
			my (undef, $eof) = drain($open{$k});
			delete $open{$k} if $eof;
		}
		usleep(50_000);
	}
	return !%open;
}

# --- clients that pipeline and never read -------------------------------
{
	# warm up: the first /metrics and batches allocate what they keep
	http($node, 'GET', '/metrics') for 1 .. 20;
	my $before = rss_anon_kb($lpid);
	my $peak = $before;
	my @attackers = open_sockets(16);
	my $burst = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" x 64
	  . "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" x 64;
	my $sent = 0;
	my $t_end = time() + 6;
	while (time() < $t_end)
	{
		for my $s (@attackers)
		{
			my $n = syswrite($s, $burst);
			$sent += $n if defined $n;
		}
		my $rss = rss_anon_kb($lpid) // 0;
		$peak = $rss if $rss > $peak;
		usleep(20_000);
	}
	note "pipelined $sent bytes of requests; RssAnon $before kB -> peak $peak kB";
	cmp_ok($sent, '>', 1_000_000, 'the clients pipelined more than a megabyte of requests');
	cmp_ok($peak - $before, '<', 8192,
		'the listener\'s private memory stayed within 8 MB of where it started');
	# never reading them, watch the listener's side
	ok(wait_for(30, sub { stat_value($node, 'open_connections') == 0 }),
		'clients that do not read are cut off at the write timeout');
	close($_) for @attackers;
	my ($status) = http($node, 'GET', '/healthz');
	is($status, 200, 'the listener still serves others');
}

# --- bodies nobody reads are not buffered -------------------------------
{
	my $before = rss_anon_kb($lpid);
	my @s = open_sockets(16);
	my $chunk = 'x' x 65536;
	for my $s (@s)
	{
		$s->blocking(1);
		print $s "POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n";
		print $s $chunk for 1 .. 14;    # 917,504 of the 1,000,000 bytes
	}
	usleep(300_000);
	my $after = rss_anon_kb($lpid);
	note "16 x 900 kB bodies to an unknown path: RssAnon $before kB -> $after kB";
	cmp_ok($after - $before, '<', 4096, 'bodies for an unknown path are read and dropped');
	close($_) for @s;

	# the body is read off the wire: the connection stays in step
	my $k = raw_socket($node);
	print $k "POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
	  . ('x' x 1_000_000) . "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
	$k->blocking(0);
	my $got = '';
	my $t = time() + 5;
	while ($got !~ /200 OK.*\r\n\r\n\{"ok":true\}/s && time() < $t)
	{
		my ($g) = drain($k);
		$got .= $g;
		usleep(20_000);
	}
	like($got, qr{^HTTP/1\.1 404 .*Connection: keep-alive.*HTTP/1\.1 200 }s,
		'a dropped body keeps the framing: 404, then the next request on the same connection');
	close($k);
}

# --- the body budget of the worker --------------------------------------
{
	my $before = rss_anon_kb($lpid);
	my @s = open_sockets(8);
	for my $s (@s)
	{
		syswrite($s, "POST /biteship/live HTTP/1.1\r\nHost: x\r\n$sig[0]\r\n"
			  . "Content-Length: 900000\r\n\r\n" . ('{' x 100));
	}
	usleep(500_000);
	my @answers = map { (drain($_))[0] } @s;
	my $refused = grep { /^HTTP\/1\.1 503 / && /Retry-After: \d+/ } @answers;
	is($refused, 4, 'beyond body_memory_limit (4 MB), 900 kB bodies are refused with 503 and Retry-After');
	like((grep { /503/ } @answers)[0] // '', qr/"error":"too much request data buffered, retry later"/,
		'with a JSON error');
	my $after = rss_anon_kb($lpid);
	note "8 x 900 kB declared bodies: RssAnon $before kB -> $after kB";
	cmp_ok($after - $before, '<', 4096 + 2048, 'memory stays within the budget');
	close($_) for @s;
}

# --- strict framing: refused, closed, nothing after it parsed -----------
{
	my $smuggled = sub {
		my ($id) = @_;
		my $b = qq({"event":"order.status","order_id":"$id","status":"picked"});
		return "POST /biteship/live HTTP/1.1\r\nHost: x\r\n$sig[0]\r\nContent-Length: "
		  . length($b) . "\r\n\r\n$b";
	};
	my @cases = (
		[ 'whitespace before the colon',
			"POST /biteship/live HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400 ],
		[ 'obsolete line folding',
			"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n", 400 ],
		[ 'whitespace before the first header',
			"GET /healthz HTTP/1.1\r\n Host: x\r\n\r\n", 400 ],
		[ 'no Host on HTTP/1.1', "GET /healthz HTTP/1.1\r\n\r\n", 400 ],
		[ 'two Host headers', "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400 ],
		[ 'a Host with a slash', "GET /healthz HTTP/1.1\r\nHost: a/b\r\n\r\n", 400 ],
		[ 'two Transfer-Encoding headers',
			"POST /biteship/live HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
			  . "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400 ],
		[ 'a transfer coding other than chunked',
			"POST /biteship/live HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501 ],
		[ 'Transfer-Encoding on HTTP/1.0',
			"POST /biteship/live HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400 ],
	);
	my $n = 0;
	for my $case (@cases)
	{
		my ($name, $bytes, $want) = @$case;
		$n++;
		my $raw = http_raw($node, $bytes . $smuggled->("smuggled-$n"), timeout => 3);
		like($raw, qr{^HTTP/1\.1 $want }, "$name: $want");
		my @responses = $raw =~ m{HTTP/1\.1 \d{3} }g;
		is(scalar(@responses), 1, "$name: one answer, then the connection closes");
	}
	is(sql("SELECT count(*) FROM biteship_webhook.events WHERE order_id LIKE 'smuggled-%'"),
		'0', 'no request pipelined after a refused one was ever parsed');
}

# --- a connection that never says anything ------------------------------
{
	my $s = raw_socket($node);
	$s->blocking(0);
	my $t0 = time();
	ok(all_closed(10, $s), 'a silent connection is closed');
	my $took = time() - $t0;
	ok($took > 0.5 && $took < 4,
		sprintf('at request_timeout (1 s), not keepalive_timeout (30 s): %.1f s', $took));

	# after a request, the keep-alive timeout applies
	my $k = raw_socket($node);
	print $k "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
	$k->blocking(0);
	usleep(2_500_000);
	my ($got, $eof) = drain($k);
	like($got, qr{^HTTP/1\.1 200 }, 'a keep-alive connection is answered');
	ok(!$eof, 'and stays open past request_timeout while idle');
	close($k);
}

# --- out of file descriptors: accepting pauses, it does not spin --------
SKIP:
{
	my ($ok) = IPC::Run::run([ 'prlimit', '--version' ], '>', \my $o, '2>', \my $e);
	skip 'prlimit is not available', 5 unless $ok;
	my @fds = glob("/proc/$lpid/fd/*");
	my $limit = scalar(@fds) + 4;
	my ($orig) = `prlimit --pid $lpid --nofile --noheadings --output SOFT` =~ /(\d+)/;
	my $logpos = -s $node->logfile;
	system('prlimit', '--pid', $lpid, "--nofile=$limit:") == 0 or die 'prlimit failed';

	my $cpu = sub {
		open(my $fh, '<', "/proc/$lpid/stat") or return 0;
		my $line = <$fh>;
		close $fh;
		my @f = split ' ', substr($line, rindex($line, ')') + 2);
		return $f[11] + $f[12];    # utime + stime, in clock ticks
	};
	my @s = open_sockets(20);
	usleep(300_000);
	my $c0 = $cpu->();
	usleep(2_000_000);
	my $c1 = $cpu->();
	note "listener CPU over 2 s while out of descriptors: " . ($c1 - $c0) . ' ticks';
	cmp_ok($c1 - $c0, '<', 50, 'the listener does not spin while accept() fails');
	ok(wait_for(5, sub { slurp_file($node->logfile, $logpos) =~ /could not accept a connection: Too many open files; pausing/ }),
		'and says why in the log');
	close($_) for @s;
	system('prlimit', '--pid', $lpid, "--nofile=$orig:") == 0 or die 'prlimit failed';
	ok(wait_for(10, sub { (http($node, 'GET', '/healthz', timeout => 2))[0] == 200 }),
		'accepting resumes once descriptors are free');
	my @still = worker_pids($node, 'listener');
	is($still[0], $lpid, 'the same listener process throughout');
	ok(1, 'prlimit restored');
}

$node->stop;

# --- the server's fd budget: clients never take the backend's files -----
{
	my $small = bw_node(
		'fdbudget', conf => qq{
max_files_per_process = 64
biteship_webhook.max_connections = 200
biteship_webhook.request_timeout = '5s'
});
	bw_setup_webhook($small);
	my @s;
	for (1 .. 60)
	{
		my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $small->{bw_port})
		  or last;
		push @s, $c;
	}
	usleep(500_000);
	my $refused = 0;
	for my $c (@s)
	{
		$c->blocking(0);
		my ($got) = drain($c);
		$refused++ if $got =~ /^HTTP\/1\.1 503 .*too many open connections/s;
	}
	cmp_ok($refused, '>', 0,
		"connections beyond the external fd budget of max_files_per_process are refused with 503 ($refused of 60)");
	close($_) for @s;
	ok(wait_for(10, sub { (http($small, 'GET', '/healthz', timeout => 2))[0] == 200 }),
		'and the listener serves again once they are gone');
	my ($st) = http($small, 'POST', '/biteship/live', headers => \@sig,
		body => '{"event":"order.status","order_id":"fd-1","status":"picked"}');
	is($st, 200, 'deliveries still go through');
	$small->stop;
}

done_testing();
