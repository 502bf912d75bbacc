# Copyright (c) biteship_webhook authors
#
# Secrets never reach the server log, an answer, or a table: after a run
# that uses every kind of secret the extension handles, the server log and
# the text of every row of every table in the database are searched for
# each of them.  The administration calls that take a secret run with
# log_statement off, as SECURITY.md tells operators to do (PostgreSQL logs
# statement text, and the values in it, before any function sees them).
use strict;
use warnings;

use lib 't';
use BiteshipNode;
use MIME::Base64;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = bw_node(
	'secrets', conf => qq{
log_min_messages = debug1
log_error_verbosity = verbose
});
$node->safe_psql('postgres', 'CREATE EXTENSION biteship_webhook');

# Every secret of this run, with where it was used.
my %secrets = (
	'webhook secret' => 'sEcReT-webhook-7f3a9c21d4e8',
	'rotated webhook secret' => 'sEcReT-rotated-0b6d5e4f3a21',
	'wrong signature sent by a client' => 'sEcReT-forged-9e8d7c6b5a43',
	'Authorization header of a client' => 'Bearer sEcReT-bearer-c0ffee123456',
	'X-Api-Key header of a client' => 'sEcReT-apikey-deadbeef7788',
	'signature header sent to a webhook without a key' => 'sEcReT-stray-11223344aabb',
);
# Secrets the outbox keeps in biteship_webhook.endpoints (readable by its
# owner only): they must be nowhere else.
my $signing = 'whsec_' . MIME::Base64::encode_base64('sEcReT-signing-key-0123456789ab', '');
my %endpoint_secrets = (
	'endpoint token' => 'sEcReT-endpoint-token-a1b2c3d4',
	'endpoint signing secret' => $signing,
	'endpoint signing secret, rotated' => 'whsec_' . MIME::Base64::encode_base64('sEcReT-rotated-signing-key-98765', ''),
);

# administration with a secret: statement logging off for that call
sub admin
{
	my ($sql) = @_;
	$node->safe_psql('postgres', "SET log_statement = 'none'; $sql");
}

admin(qq{SELECT biteship_webhook.create_webhook('live', '/biteship/live',
	signature_key => 'X-Biteship-Signature',
	signature_secret => '$secrets{"webhook secret"}')});
admin(qq{SELECT biteship_webhook.add_webhook_secret('live', '$secrets{"rotated webhook secret"}')});
admin(q{SELECT biteship_webhook.create_webhook('open', '/biteship/open')});
ok(wait_for_http($node, '/healthz', 200), 'listener up');

my $delivery = '{"event":"order.status","order_id":"sec-%d","status":"picked"}';
my $n = 0;
my @answers;

sub post
{
	my ($path, @headers) = @_;
	my ($status, $body) = http($node, 'POST', $path,
		body => sprintf($delivery, ++$n), headers => \@headers);
	push @answers, $body;
	return $status;
}

is(post('/biteship/live', "X-Biteship-Signature: $secrets{'webhook secret'}"), 200,
	'a delivery signed with the secret');
is(post('/biteship/live', "X-Biteship-Signature: $secrets{'rotated webhook secret'}"), 200,
	'a delivery signed with the rotated secret');
is(post('/biteship/live', "X-Biteship-Signature: $secrets{'wrong signature sent by a client'}"), 401,
	'a forged signature');
is( post('/biteship/live', "X-Biteship-Signature: $secrets{'webhook secret'}",
		"Authorization: $secrets{'Authorization header of a client'}",
		"X-Api-Key: $secrets{'X-Api-Key header of a client'}"),
	200, 'a delivery carrying other credentials');
is(post('/biteship/open', "X-Biteship-Signature: $secrets{'signature header sent to a webhook without a key'}"),
	200, 'a signature sent to a webhook that expects none');
is(post('/biteship/live', "X-Biteship-Signature: $secrets{'webhook secret'}", 'Content-Type: text/plain'),
	200, 'and once more');
# an error path: the apply fails
$node->safe_psql('postgres', q{
CREATE FUNCTION public.boom() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'trigger failed for %', NEW.order_id; END $$;
CREATE TRIGGER boom BEFORE INSERT ON biteship_webhook.orders FOR EACH ROW EXECUTE FUNCTION public.boom();
});
is(post('/biteship/live', "X-Biteship-Signature: $secrets{'webhook secret'}"), 200,
	'a delivery whose apply fails');
$node->safe_psql('postgres', 'DROP TRIGGER boom ON biteship_webhook.orders');
# the outbox: an endpoint with a token and a signing secret, a rotation, a
# failing endpoint, and a receiver that answers with a cookie
my $recv = start_receiver(secrets => [$signing]);
admin(qq{SELECT biteship_webhook.create_endpoint('wa', '$recv->{url}/ok',
	headers => '{"Authorization": "Bearer $endpoint_secrets{'endpoint token'}"}',
	signing_secret => '$signing', forward_events => '{order.status}')});
admin(qq{SELECT biteship_webhook.create_endpoint('cookie', '$recv->{url}/big',
	headers => '{"X-Api-Key": "$endpoint_secrets{'endpoint token'}"}')});
admin(qq{SELECT biteship_webhook.create_endpoint('down', '$recv->{url}/status/500', max_attempts => 1,
	headers => '{"Authorization": "Bearer $endpoint_secrets{'endpoint token'}"}')});
# receivers that echo the credential they were sent, in the body and a header
admin(qq{SELECT biteship_webhook.create_endpoint('echo', '$recv->{url}/echo/500', max_attempts => 1,
	headers => '{"Authorization": "Bearer $endpoint_secrets{'endpoint token'}"}')});
admin(qq{SELECT biteship_webhook.create_endpoint('echo-key', '$recv->{url}/echo/200',
	headers => '{"X-Api-Key": "$endpoint_secrets{'endpoint token'}"}')});
$node->safe_psql('postgres', q{SELECT biteship_webhook.send(e, '{"n":1}') FROM unnest('{wa,cookie,down,echo,echo-key}'::text[]) e});
admin(qq{SELECT biteship_webhook.set_endpoint_secret('wa', '$endpoint_secrets{'endpoint signing secret, rotated'}')});
$node->safe_psql('postgres', q{SELECT biteship_webhook.send('wa', '{"n":2}')});
is(post('/biteship/live', "X-Biteship-Signature: $secrets{'webhook secret'}"), 200,
	'a delivery that is forwarded');
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 0 FROM biteship_webhook.outbox WHERE state = 'pending'}),
	'the outbox is drained');
like(join("\n", map { $_->{headers}{authorization} // '' } receiver_log($recv)),
	qr/\Q$endpoint_secrets{'endpoint token'}\E/, 'the receiver got the token (so it was used)');
stop_receiver($recv);

my (undef, $metrics) = http($node, 'GET', '/metrics');
push @answers, $metrics;

# Every table of the database, every row, as text.
my $tables = $node->safe_psql('postgres', q{
SELECT string_agg(format('%I.%I', n.nspname, c.relname), ' ')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'v', 'm') AND n.nspname NOT IN ('pg_toast')
   AND has_table_privilege(c.oid, 'SELECT')});
my $all_rows = '';
my $rows_but_endpoints = '';
for my $t (split ' ', $tables)
{
	my $text = $node->safe_psql('postgres', "SELECT t::text FROM $t t") . "\n";
	$all_rows .= $text;
	$rows_but_endpoints .= $text unless $t eq 'biteship_webhook.endpoints';
}
cmp_ok(length($all_rows), '>', 1000, 'the tables were read');
my $log = slurp_file($node->logfile);
cmp_ok(length($log), '>', 1000, 'the server log was read');

for my $what (sort keys %secrets)
{
	my $secret = $secrets{$what};
	(my $core = $secret) =~ s/^Bearer //;
	unlike($log, qr/\Q$core\E/, "$what: not in the server log");
	unlike($all_rows, qr/\Q$core\E/, "$what: not in any table");
	unlike(join("\n", @answers), qr/\Q$core\E/, "$what: not in any answer");
}
like($all_rows, qr/\[redacted\]/, 'credential headers are kept as [redacted]');
unlike($all_rows, qr/sEcReT-cookie-from-receiver/, 'a cookie a receiver set is not kept');
is($node->safe_psql('postgres', q{SELECT count(*) FROM biteship_webhook.outbox_attempts a
	JOIN biteship_webhook.outbox o ON o.id = a.message_id JOIN biteship_webhook.endpoints e ON e.id = o.endpoint_id
	WHERE e.name IN ('echo', 'echo-key') AND a.response_body LIKE '%[redacted]%'
	  AND a.response_headers LIKE '%X-Echo: [redacted]%'}),
	'2', 'what a receiver echoes of its credential is kept as [redacted], in the body and the headers');
for my $what (sort keys %endpoint_secrets)
{
	my $secret = $endpoint_secrets{$what};
	unlike($log, qr/\Q$secret\E/, "$what: not in the server log");
	unlike($rows_but_endpoints, qr/\Q$secret\E/, "$what: in no table but endpoints");
	unlike(join("\n", @answers), qr/\Q$secret\E/, "$what: not in any answer");
}
$node->safe_psql('postgres', 'CREATE ROLE app');
is( $node->safe_psql('postgres',
		q{SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		   WHERE n.nspname = 'biteship_webhook' AND c.relname IN ('endpoints', 'webhook_secrets')
		     AND (has_table_privilege('app', c.oid, 'SELECT')
		          OR has_table_privilege('biteship_webhook_apply', c.oid, 'SELECT')
		          OR has_any_column_privilege('biteship_webhook_outbox', c.oid, 'SELECT')
		             AND has_column_privilege('biteship_webhook_outbox', c.oid, 'headers', 'SELECT'))}),
	'0', 'no application role, nor the apply or outbox role, can read secrets or endpoint headers');

$node->stop;
done_testing();
