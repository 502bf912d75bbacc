# Copyright (c) biteship_webhook authors
#
# The workers run as a superuser: a search_path set on the database must not
# let another role's objects capture their statements, and an asynchronous
# commit setting must not make a 200 less than durable.
use strict;
use warnings;

use lib 't';
use BiteshipNode;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = bw_node('hardening');
bw_setup_webhook($node);
my @sig = ("$SIG_HEADER: $SECRET");

# A trap: an equality operator on text in a schema put first on the
# database's search_path.  Used by the workers' statements, it would fail
# every delivery (and could have run arbitrary code as superuser).
$node->safe_psql(
	'postgres', q{
CREATE ROLE mallory LOGIN;
CREATE SCHEMA trap AUTHORIZATION mallory;
SET ROLE mallory;
CREATE FUNCTION trap.text_eq(text, text) RETURNS boolean LANGUAGE plpgsql
AS $$ BEGIN RAISE EXCEPTION 'trap operator called'; END $$;
CREATE OPERATOR trap.= (LEFTARG = text, RIGHTARG = text, FUNCTION = trap.text_eq);
RESET ROLE;
ALTER DATABASE postgres SET search_path = trap, pg_catalog, public;
ALTER SYSTEM SET synchronous_commit = off;
SELECT pg_reload_conf();
});

# new sessions pick up the database setting: restart the workers
$node->safe_psql('postgres',
	"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type LIKE 'biteship_webhook%'");
ok(wait_for_http($node, '/healthz', 200), 'workers are back');

my ($status, $body) = http($node, 'POST', '/biteship/live',
	body => '{"event":"order.status","order_id":"trap-1","status":"picked"}',
	headers => \@sig);
is($status, 200, 'a delivery is accepted despite the trap on the search_path');
like($body, qr/"state":"applied"/, 'and applied');
unlike(slurp_file($node->logfile), qr/ERROR:\s+trap operator called/, 'the trap operator never ran');

# A session that reads the database settings does see the trap, so the
# test above is not vacuous.
my ($ret, $out, $err) = $node->psql('postgres',
	"SELECT 'a'::text = 'a'::text");
like($err, qr/trap operator called/, 'an ordinary session would have used the trap');

$node->stop;
done_testing();
