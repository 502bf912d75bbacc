# Copyright (c) biteship_webhook authors
#
# HTTPS on the listener: TLS 1.2 and 1.3, refusal of older protocols and of
# clients that do not trust us, client certificates, certificate swaps on
# reload (established connections keep working, a bad new key keeps the old
# context), and robustness against garbage, plain HTTP and stalled
# handshakes.  The CAs, certificates and keys are made here with the
# openssl command, in the test's temporary directory.
use strict;
use warnings;

use lib 't';
use BiteshipNode;
use IO::Socket::INET;
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

my $dir = PostgreSQL::Test::Utils::tempdir();

# --- certificates -------------------------------------------------------

# run(cmd...) -> (ok, stdout, stderr), stdin empty
sub run
{
	my @cmd = @_;
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run(\@cmd, '<', \'', '>', \$out, '2>', \$err);
	return ($ok, $out, $err);
}

sub openssl
{
	my ($ok, $out, $err) = run('openssl', @_);
	die "openssl @_ failed: $err" unless $ok;
	return $out;
}

my @newkey = ('-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes');

sub make_ca
{
	my ($name) = @_;
	openssl('req', '-x509', '-new', @newkey, '-keyout', "$dir/$name.key",
		'-out', "$dir/$name.pem", '-days', '2', '-subj', "/CN=$name",
		'-addext', 'basicConstraints=critical,CA:TRUE',
		'-addext', 'keyUsage=critical,keyCertSign,cRLSign');
	chmod 0600, "$dir/$name.key";
}

sub make_cert
{
	my ($name, $ca, $serial, $cn) = @_;
	my $ext = "$dir/$name.ext";
	open(my $fh, '>', $ext) or die;
	print $fh "basicConstraints=CA:FALSE\n";
	print $fh "subjectAltName=DNS:localhost,IP:127.0.0.1\n";
	close $fh;
	openssl('req', '-new', @newkey, '-keyout', "$dir/$name.key",
		'-out', "$dir/$name.csr", '-subj', "/CN=$cn");
	openssl('x509', '-req', '-in', "$dir/$name.csr", '-CA', "$dir/$ca.pem",
		'-CAkey', "$dir/$ca.key", '-set_serial', $serial, '-days', '2',
		'-extfile', $ext, '-out', "$dir/$name.pem");
	chmod 0600, "$dir/$name.key";
}

make_ca('ca');
make_ca('other-ca');
make_cert('server', 'ca', '0x1001', 'localhost');
make_cert('server2', 'ca', '0x2002', 'localhost');
make_cert('client', 'ca', '0x3003', 'webhook client');
make_cert('stranger', 'other-ca', '0x4004', 'stranger');

# --- the node: extension set up over HTTP, then restarted with TLS ------

my $node = bw_node(
	'tls', conf => qq{
biteship_webhook.request_timeout = '1s'
biteship_webhook.listener_workers = 1
});
bw_setup_webhook($node);
$node->append_conf(
	'postgresql.conf', qq{
biteship_webhook.ssl = on
biteship_webhook.ssl_cert_file = '$dir/server.pem'
biteship_webhook.ssl_key_file = '$dir/server.key'
});
$node->restart;

my @ca = ('--cacert', "$dir/ca.pem");
my @sig = ("$SIG_HEADER: $SECRET");

sub https
{
	my ($method, $path, %o) = @_;
	return http($node, $method, $path, %o, scheme => 'https',
		curl => [ @ca, @{ $o{curl} // [] } ]);
}

sub sql { return $node->safe_psql('postgres', shift); }


sub failures
{
	my ($reason) = @_;
	return sql(
		"SELECT coalesce(sum(value), 0)::bigint FROM biteship_webhook.stats
		 WHERE name = 'tls_handshake_failures_total' AND labels->>'reason' = '$reason'");
}

# the counters are flushed by the listener's loop: give it a moment
sub failures_reach
{
	my ($reason, $want) = @_;
	wait_for(5, sub { failures($reason) >= $want });
	return failures($reason);
}

sub listener_pids
{
	return sql(
		"SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity
		 WHERE backend_type = 'biteship_webhook listener'");
}

# serial number of the certificate a new connection gets
sub served_serial
{
	my ($ok, $out) = run('openssl', 's_client', '-connect',
		"127.0.0.1:$node->{bw_port}", '-CAfile', "$dir/ca.pem");
	my ($pem) = $out =~ /(-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----)/s;
	return '' unless $pem;
	my ($out2, $err2) = ('', '');
	IPC::Run::run([ 'openssl', 'x509', '-noout', '-serial' ],
		'<', \"$pem\n", '>', \$out2, '2>', \$err2);
	chomp $out2;
	return $out2;
}

ok(wait_for(20, sub { (https('GET', '/healthz', timeout => 2))[0] == 200 }),
	'the listener serves HTTPS after a restart with ssl = on');
my $pids = listener_pids();
like($pids, qr/^\d+$/, 'one listener');

my ($status, $body, $head, $err);

# --- TLS 1.2 and 1.3 ----------------------------------------------------
($status, $body, $head, $err) = https('POST', '/biteship/live',
	body => fixture('order_status_delivered'), headers => \@sig,
	curl => [ '--tlsv1.2', '--tls-max', '1.2', '-v' ]);
is($status, 200, 'TLS 1.2: a delivery is answered 200');
like($body, qr/"state":"applied"/, 'TLS 1.2: and applied');
like($err, qr/SSL connection using TLSv1\.2/, 'TLS 1.2 was negotiated');

($status, $body, $head, $err) = https('POST', '/biteship/live',
	body => fixture('order_status_docs_example'), headers => \@sig,
	curl => [ '--tlsv1.3', '-v' ]);
is($status, 200, 'TLS 1.3: a delivery is answered 200');
like($body, qr/"state":"applied"/, 'TLS 1.3: and applied');
like($err, qr/SSL connection using TLSv1\.3/, 'TLS 1.3 was negotiated');
like($err, qr/ALPN: server accepted http\/1\.1/i, 'ALPN selects http/1.1');

# --- older protocols are refused and counted ----------------------------
my $proto0 = failures('protocol_version');
($status, $body, $head, $err) = https('GET', '/healthz',
	curl => [ '--tlsv1.1', '--tls-max', '1.1', '--ciphers', 'DEFAULT:@SECLEVEL=0' ]);
is($status, 0, 'TLS 1.1 is refused');
is(failures_reach('protocol_version', $proto0 + 1), $proto0 + 1,
	'and counted as protocol_version');
{
	my ($ok, $out, $serr) = run('openssl', 's_client', '-connect',
		"127.0.0.1:$node->{bw_port}", '-tls1', '-cipher', 'DEFAULT:@SECLEVEL=0');
	ok(!$ok, 'TLS 1.0 is refused');
	is(failures_reach('protocol_version', $proto0 + 2), $proto0 + 2,
		'and counted as protocol_version');
}

# --- a client that does not trust our CA --------------------------------
my $hs0 = failures('handshake');
($status, $body, $head, $err) =
  http($node, 'GET', '/healthz', scheme => 'https',
	curl => [ '--cacert', "$dir/other-ca.pem" ]);
is($status, 0, 'a client with another CA fails');
like($err, qr/certificate/i, 'on certificate verification');
is(failures_reach('handshake', $hs0 + 1), $hs0 + 1, 'counted as a handshake failure');

# --- plain HTTP, garbage: the worker survives ---------------------------
($status, $body) = http($node, 'GET', '/healthz');
is($status, 400, 'plain HTTP on the TLS port: 400');
like($body, qr/plain HTTP request sent to the HTTPS port/, 'saying why');
my $raw = http_raw($node, "POST /biteship/live HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}");
like($raw, qr{^HTTP/1\.1 400 .*Connection: close}s, 'a raw plain-HTTP POST: 400 and close');

srand(4040);
for my $len (1, 7, 300, 5000)
{
	my $junk = join('', map { chr(int(rand(256))) } 1 .. $len);
	$junk =~ s/^[A-Z]/\x00/;    # not a plain-HTTP lookalike
	my $t0 = time();
	http_raw($node, $junk, timeout => 4);
	ok(time() - $t0 < 3.5, "$len random bytes: the connection is closed");
}
http_raw($node, "\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00", timeout => 4);
ok(failures_reach('handshake', $hs0 + 7) >= $hs0 + 7,
	'plain HTTP and garbage count as handshake failures');
is(listener_pids(), $pids, 'the listener process is unchanged');
($status) = https('GET', '/healthz');
is($status, 200, 'and HTTPS still works');

# --- stalled handshakes time out, others are served meanwhile -----------
{
	my $hs1 = failures('handshake');
	my $silent = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
		PeerPort => $node->{bw_port}, Proto => 'tcp') or die;
	my $partial = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
		PeerPort => $node->{bw_port}, Proto => 'tcp') or die;
	# a record header announcing 512 bytes, and the start of a ClientHello
	syswrite($partial, "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03");
	my $t0 = time();
	my $served = 0;
	for (1 .. 3)
	{
		my ($st) = https('GET', '/healthz', timeout => 2);
		$served++ if $st == 200;
	}
	my $elapsed = time() - $t0;
	is($served, 3, 'other clients are served while two handshakes stall');
	ok($elapsed < 1, "promptly (${elapsed}s)");

	my %closed;
	for my $s ([ 'silent', $silent ], [ 'partial', $partial ])
	{
		my ($name, $sock) = @$s;
		my $buf;
		my $rin = '';
		vec($rin, fileno($sock), 1) = 1;
		my $n = select(my $rout = $rin, undef, undef, 4);
		$closed{$name} = $n > 0 && !sysread($sock, $buf, 100) ? time() - $t0 : -1;
	}
	ok($closed{silent} > 0 && $closed{silent} < 3,
		"a silent client is closed after request_timeout ($closed{silent}s)");
	ok($closed{partial} > 0 && $closed{partial} < 3,
		"a partial ClientHello is closed after request_timeout ($closed{partial}s)");
	# the listener publishes its counters when its loop wakes up; after
	# timeouts alone it may be asleep, so give it a request
	https('GET', '/healthz');
	is(failures_reach('handshake', $hs1 + 1), $hs1 + 1,
		'the partial handshake is counted, the silent connection is not');
}

# --- client certificates ------------------------------------------------
$node->append_conf('postgresql.conf', "biteship_webhook.ssl_ca_file = '$dir/ca.pem'\n");
$node->reload;
my @client = ('--cert', "$dir/client.pem", '--key', "$dir/client.key");
ok( wait_for(10, sub { (https('GET', '/healthz'))[0] == 0 }),
	'with ssl_ca_file, a client without a certificate fails');
{
	my $hs2 = failures('handshake');
	my $ca0 = failures('unknown_ca');
	for my $v ([ '--tlsv1.2', '--tls-max', '1.2' ], ['--tlsv1.3'])
	{
		($status) = https('GET', '/healthz', curl => $v);
		is($status, 0, "no client certificate ($v->[0]): refused");
		($status, $body) = https('POST', '/biteship/live', body => '{}',
			curl => [ @$v, @client ]);
		is($status, 200, "a client certificate from our CA ($v->[0]): 200");
		($status) = https('GET', '/healthz',
			curl => [ @$v, '--cert', "$dir/stranger.pem", '--key', "$dir/stranger.key" ]);
		is($status, 0, "a client certificate from an unknown CA ($v->[0]): refused");
	}
	is(failures_reach('handshake', $hs2 + 2), $hs2 + 2,
		'missing client certificates count as handshake failures');
	is(failures_reach('unknown_ca', $ca0 + 2), $ca0 + 2,
		'certificates from an unknown CA count as unknown_ca');
}
$node->append_conf('postgresql.conf', "biteship_webhook.ssl_ca_file = ''\n");
$node->reload;
ok(wait_for(10, sub { (https('GET', '/healthz'))[0] == 200 }),
	'without ssl_ca_file, no client certificate is needed again');

# --- reload swaps the certificate; established connections stay ---------
is(served_serial(), 'serial=1001', 'the first certificate is served');
my ($in, $out, $serr) = ('', '', '');
my $timer = IPC::Run::timer(10);
my $sc = IPC::Run::start(
	[ 'openssl', 's_client', '-quiet', '-connect', "127.0.0.1:$node->{bw_port}",
		'-CAfile', "$dir/ca.pem", '-verify_return_error' ],
	'<', \$in, '>', \$out, '2>', \$serr, $timer);
$in .= "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
$sc->pump until $out =~ /\r\n\r\n\{[^\n]*\}/ || $timer->is_expired;
like($out, qr{^HTTP/1\.1 200 }, 'a keep-alive connection before the reload');

my $logpos = -s $node->logfile;
$node->append_conf(
	'postgresql.conf', qq{
biteship_webhook.ssl_cert_file = '$dir/server2.pem'
biteship_webhook.ssl_key_file = '$dir/server2.key'
});
$node->reload;
ok(wait_for(10, sub { served_serial() eq 'serial=2002' }),
	'after a reload, new connections get the new certificate');
like(slurp_file($node->logfile, $logpos), qr/TLS configuration reloaded/,
	'the reload is logged');

$out = '';
$timer->start(10);
$in .= "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
$sc->pump until $out =~ /\r\n\r\n\{[^\n]*\}/ || $timer->is_expired;
like($out, qr{^HTTP/1\.1 200 }, 'the connection from before the reload still works');
$sc->kill_kill;

# --- a bad new key keeps the old context --------------------------------
sub reload_bad
{
	my ($conf, $want, $what) = @_;
	my $pos = -s $node->logfile;
	$node->append_conf('postgresql.conf', $conf);
	$node->reload;
	ok( wait_for(10, sub { slurp_file($node->logfile, $pos) =~ $want }),
		"$what: the log says why")
	  or diag(slurp_file($node->logfile, $pos));
	like(slurp_file($node->logfile, $pos), qr/keeping the old one/,
		"$what: the old context is kept");
	my ($st) = https('GET', '/healthz');
	is($st, 200, "$what: requests still succeed");
	is(served_serial(), 'serial=2002', "$what: with the old certificate");
}

chmod 0644, "$dir/client.key";
reload_bad(
	"biteship_webhook.ssl_cert_file = '$dir/server.pem'\n"
	  . "biteship_webhook.ssl_key_file = '$dir/client.key'\n",
	qr/private key file "[^"]*client\.key" has group or world access/,
	'a world-readable key');
chmod 0600, "$dir/client.key";
reload_bad(
	"biteship_webhook.ssl_key_file = '$dir/client.key'\n",
	qr/private key file "[^"]*client\.key" does not match certificate file/,
	'a key that does not match');
reload_bad(
	"biteship_webhook.ssl_key_file = '$dir/missing.key'\n",
	qr/could not access private key file "[^"]*missing\.key": No such file/,
	'a missing key');

# --- the counters are exported ------------------------------------------
($status, $body) = https('GET', '/metrics');
is($status, 200, 'GET /metrics over HTTPS');
like($body, qr/^biteship_webhook_tls_handshake_failures_total\{reason="protocol_version"\} [1-9]/m,
	'with the protocol_version counter');
like($body, qr/^biteship_webhook_tls_handshake_failures_total\{reason="unknown_ca"\} [1-9]/m,
	'with the unknown_ca counter');
is(listener_pids(), $pids, 'the same listener process all along');

# --- over max_connections: a 503 over TLS, never clear text -------------
# (the certificate in use is still server2, from the reloads above)
$node->append_conf('postgresql.conf', "biteship_webhook.max_connections = 1\n");
$node->reload;
usleep(500_000);
{
	$node->poll_query_until('postgres',
		"SELECT value = 0 FROM biteship_webhook.stats WHERE name = 'open_connections'")
	  or die 'connections of earlier tests did not close';
	my $idle = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $node->{bw_port})
	  or die;
	$node->poll_query_until('postgres',
		"SELECT value >= 1 FROM biteship_webhook.stats WHERE name = 'open_connections'")
	  or die 'the idle connection was not counted';
	my ($st, $b, $h, $err) = https('GET', '/healthz');
	is($st, 503, 'over max_connections, a TLS client gets a 503 it can read');
	like($h, qr/^Retry-After: \d+/mi, 'with Retry-After');
	like($b, qr/"error":"too many open connections"/, 'and the reason');
	close($idle);
}
$node->append_conf('postgresql.conf', "biteship_webhook.max_connections = 256\n");
$node->reload;

$node->stop;
done_testing();
