# Copyright (c) biteship_webhook authors
#
# scripts/send against a live listener: a whole lifecycle over HTTP (orders,
# history, events, the redelivery counted once, the late status), several
# instant orders at a rate, a wrong secret (exit status 1, the 401
# printed), usage errors, and HTTPS with a CA file, without one, and
# --insecure.  The certificates are made here with the openssl command.
use strict;
use warnings;

use lib 't';
use BiteshipNode;
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;

my $dir = PostgreSQL::Test::Utils::tempdir();

my $node = bw_node(
	'send', conf => qq{
biteship_webhook.listener_workers = 1
});
bw_setup_webhook($node);
my $url = "http://127.0.0.1:$node->{bw_port}/biteship/live";

sub sql { return $node->safe_psql('postgres', shift); }

# send(secret, args...) -> (exit status, stdout, stderr)
sub send_cmd
{
	my ($secret, @args) = @_;
	my ($out, $err) = ('', '');
	local $ENV{BITESHIP_SIGNATURE_SECRET} = $secret;
	IPC::Run::run([ 'python3', 'scripts/send', @args ], '<', \'', '>', \$out, '2>', \$err);
	return ($? >> 8, $out, $err);
}

# --- one order, the whole lifecycle -------------------------------------
my ($rc, $out, $err) = send_cmd($SECRET, '--order-id', 'send-order-1', $url);
is($rc, 0, 'send exits 0 when every answer is 2xx') or diag($out, $err);
my @answers = grep { /^order\./ } split /\n/, $out;
my ($total) = $out =~ /^(\d+) deliveries of 1 order\(s\), \1 answered 2xx, 0 not$/m;
ok($total && @answers == $total, "each of the $total answers is printed, and a summary");
is(scalar(grep { /\s200 \{"ok":true,"event_id":\d+,"state":"applied"\}$/ } @answers),
	$total - 1, 'all applied but one');
like($answers[-1], qr/^order\.status\s+delivered\s+send-order-1\s+200 .*"state":"duplicate"/,
	'the last is the redelivery of delivered, a duplicate');
like($answers[-2], qr/^order\.status\s+dropping_off\s/, 'after the late dropping_off');
ok((grep { /^order\.waybill_id\s+allocated\s/ } @answers), 'a waybill event was sent');

is( sql("SELECT status, is_final, courier_company, courier_type, courier_waybill_id ~ '^JX[0-9]{12}\$'
	       FROM biteship_webhook.orders WHERE order_id = 'send-order-1'"),
	'delivered|t|jne|reg|t', 'the order ends delivered, with its waybill');
is( sql("SELECT string_agg(status, ',' ORDER BY occurred_at)
	       FROM biteship_webhook.order_status_history WHERE order_id = 'send-order-1'"),
	'confirmed,allocated,picking_up,picked,dropping_off,delivered',
	'every status once, in the order they happened');
is( sql("SELECT count(*), sum(delivery_count), max(delivery_count)
	       FROM biteship_webhook.events WHERE order_id = 'send-order-1'"),
	($total - 1) . "|$total|2", 'the redelivery is one event, delivered twice');
is( sql("SELECT DISTINCT headers->>'user-agent' || ' ' || (headers->>'x-biteship-signature')
	       FROM biteship_webhook.events WHERE order_id = 'send-order-1'"),
	'biteship_webhook-send/0.4.0 [redacted]', 'signed, and the secret is not logged');

# --- several instant orders at a rate ------------------------------------
($rc, $out, $err) = send_cmd($SECRET, '--count', '3', '--rate', '100', '--courier', 'gojek',
	'--instant', '--no-duplicates', '--no-late', '--quiet', $url);
is($rc, 0, 'three instant orders: exit 0') or diag($out, $err);
like($out, qr/\A\d+ deliveries of 3 order\(s\), (\d+) answered 2xx, 0 not\n\z/,
	'--quiet prints only the summary');
is( sql("SELECT count(*), bool_and(status = 'delivered'), bool_and(courier_type = 'instant'),
	            bool_and(courier_driver_name IS NOT NULL AND courier_driver_phone ~ '^628'
	                     AND courier_driver_plate_number IS NOT NULL
	                     AND courier_driver_photo_url LIKE 'https://%'),
	            bool_and(order_id ~ '^[0-9a-f]{24}\$')
	       FROM biteship_webhook.orders WHERE courier_company = 'gojek'"),
	'3|t|t|t|t', 'three delivered instant orders with drivers, random ObjectId-like ids');
is( sql("SELECT count(*) FROM biteship_webhook.events e
	      JOIN biteship_webhook.orders o USING (order_id)
	     WHERE o.courier_company = 'gojek' AND e.delivery_count > 1"),
	'0', '--no-duplicates: no redelivery');

# --- a wrong secret --------------------------------------------------------
($rc, $out, $err) = send_cmd('not-the-secret', '--order-id', 'send-forged', $url);
is($rc, 1, 'a wrong secret: exit 1');
like($out, qr/^order\.status\s+confirmed\s+send-forged\s+401 \{"ok":false,"error":"signature does not match"/m,
	'the 401 is printed');
unlike($out, qr/not-the-secret/, 'the secret is not printed');
is(sql("SELECT count(*) FROM biteship_webhook.orders WHERE order_id = 'send-forged'"),
	'0', 'and no order was made');

# --- usage ---------------------------------------------------------------
($rc, $out, $err) = send_cmd($SECRET, '--help');
is($rc, 0, '--help exits 0');
like($out, qr/--rate R.*--count N.*--order-id ID.*--courier.*--instant.*--no-duplicates.*--no-late.*--cacert FILE.*--insecure/s,
	'--help describes the options');
($rc, $out, $err) = send_cmd($SECRET, '--courier', 'fedex', $url);
is($rc, 2, 'an unknown courier: exit 2');
like($err, qr/unknown courier "fedex"/, 'with the reason');
($rc, $out, $err) = send_cmd($SECRET, '--instant', $url);
is($rc, 2, '--instant with jne: exit 2');
like($err, qr/courier "jne" has no instant service/, 'with the reason');
($rc, $out, $err) = send_cmd($SECRET, '--order-id', 'x', '--count', '2', $url);
is($rc, 2, '--order-id with --count 2: exit 2');
($rc, $out, $err) = send_cmd($SECRET, "http://127.0.0.1:$node->{bw_port}/biteship/nowhere");
is($rc, 1, 'a path that is no webhook: exit 1');
like($out, qr/\s404 /, 'the 404 is printed');

# --- HTTPS ---------------------------------------------------------------
sub openssl
{
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'openssl', @_ ], '<', \'', '>', \$out, '2>', \$err)
	  or die "openssl @_ failed: $err";
}
my @newkey = ('-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes');
openssl('req', '-x509', '-new', @newkey, '-keyout', "$dir/ca.key", '-out', "$dir/ca.pem",
	'-days', '2', '-subj', '/CN=send test CA',
	'-addext', 'basicConstraints=critical,CA:TRUE',
	'-addext', 'keyUsage=critical,keyCertSign,cRLSign');
open(my $fh, '>', "$dir/server.ext") or die;
print $fh "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n";
close $fh;
openssl('req', '-new', @newkey, '-keyout', "$dir/server.key", '-out', "$dir/server.csr",
	'-subj', '/CN=localhost');
openssl('x509', '-req', '-in', "$dir/server.csr", '-CA', "$dir/ca.pem", '-CAkey', "$dir/ca.key",
	'-set_serial', '0x1001', '-days', '2', '-extfile', "$dir/server.ext", '-out', "$dir/server.pem");
chmod 0600, "$dir/server.key", "$dir/ca.key";

$node->append_conf(
	'postgresql.conf', qq{
biteship_webhook.ssl = on
biteship_webhook.ssl_cert_file = '$dir/server.pem'
biteship_webhook.ssl_key_file = '$dir/server.key'
});
$node->restart;
my $https = "https://127.0.0.1:$node->{bw_port}/biteship/live";
ok( wait_for(
		30,
		sub {
			my ($status) = http($node, 'GET', '/healthz', scheme => 'https',
				curl => [ '--cacert', "$dir/ca.pem" ], timeout => 2);
			return $status == 200;
		}),
	'the listener serves HTTPS');

($rc, $out, $err) = send_cmd($SECRET, '--order-id', 'send-tls-1', '--cacert', "$dir/ca.pem", $https);
is($rc, 0, 'HTTPS with --cacert: exit 0') or diag($out, $err);
is(sql("SELECT status FROM biteship_webhook.orders WHERE order_id = 'send-tls-1'"),
	'delivered', 'and the order is delivered');

($rc, $out, $err) = send_cmd($SECRET, '--order-id', 'send-tls-2', '--no-duplicates', $https);
is($rc, 1, 'HTTPS to a server the system bundle does not trust: exit 1');
like($out, qr/request failed: .*CERTIFICATE_VERIFY_FAILED/, 'the reason is printed');
is(sql("SELECT count(*) FROM biteship_webhook.orders WHERE order_id = 'send-tls-2'"),
	'0', 'nothing was delivered');

($rc, $out, $err) = send_cmd($SECRET, '--order-id', 'send-tls-3', '--insecure', '--courier', 'grab', $https);
is($rc, 0, 'HTTPS with --insecure: exit 0') or diag($out, $err);
is( sql("SELECT status, courier_type, courier_driver_name IS NOT NULL
	       FROM biteship_webhook.orders WHERE order_id = 'send-tls-3'"),
	'delivered|same_day|t', 'a same-day order of an instant courier, with a driver');

done_testing();
