# Copyright (c) biteship_webhook authors
#
# The workers run as a superuser: a search_path set on the database, or an
# operator that the owner of public creates there, must not let another
# role's objects capture their statements, and an asynchronous commit
# setting must not make a 200 less than durable.
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

# Traps in public, which on PostgreSQL 15 belongs to the database owner: an
# operator for each mixed-type expression the workers evaluate when a retry
# is scheduled (float8 * numeric, float8 * int4).  With public on their
# search_path, an exact match there would beat pg_catalog's implicit casts.
$node->safe_psql(
	'postgres', q{
CREATE ROLE owner_of_public LOGIN;
ALTER SCHEMA public OWNER TO owner_of_public;
SET ROLE owner_of_public;
CREATE FUNCTION public.trap_f8_num(float8, numeric) RETURNS float8 LANGUAGE plpgsql
AS $$ BEGIN RAISE EXCEPTION 'public trap float8 * numeric called'; END $$;
CREATE OPERATOR public.* (LEFTARG = float8, RIGHTARG = numeric, FUNCTION = public.trap_f8_num);
CREATE FUNCTION public.trap_f8_int(float8, integer) RETURNS float8 LANGUAGE plpgsql
AS $$ BEGIN RAISE EXCEPTION 'public trap float8 * int4 called'; END $$;
CREATE OPERATOR public.* (LEFTARG = float8, RIGHTARG = integer, FUNCTION = public.trap_f8_int);
RESET ROLE;
});

# new sessions pick up the database setting: restart the workers
$node->safe_psql('postgres',
	"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type LIKE 'biteship_webhook%'");
ok(wait_for_http($node, '/healthz', 200), 'workers are back');

my ($ret, $out, $err);
my ($status, $body) = http($node, 'POST', '/biteship/live',
	body => '{"event":"order.status","order_id":"trap-1","status":"picked"}',
	headers => \@sig);
is($status, 200, 'a delivery is accepted despite the trap on the search_path');
like($body, qr/"state":"applied"/, 'and applied');
unlike(slurp_file($node->logfile), qr/ERROR:\s+trap operator called/, 'the trap operator never ran');

# A failed apply schedules a retry (float8 * numeric in the delay), and the
# dispatcher computes when to wake up (float8 * int4).
($status, $body) = http($node, 'POST', '/biteship/live',
	body => '{"event":"order.status","status":"picked"}', headers => \@sig);
like($body, qr/"state":"failed"/, 'a delivery without order_id fails');
my ($failed_id) = $body =~ /"event_id":(\d+)/;
is( $node->safe_psql('postgres',
		"SELECT next_attempt_at > received_at FROM biteship_webhook.events WHERE id = $failed_id"),
	't', 'its retry is scheduled');
ok( $node->poll_query_until('postgres',
		"SELECT attempts >= 2 FROM biteship_webhook.events WHERE id = $failed_id"),
	'and the dispatcher retries it');
unlike(slurp_file($node->logfile), qr/ERROR:  public trap/, 'no operator in public ever ran');
($ret, $out, $err) = $node->psql('postgres',
	"SET search_path = pg_catalog, public; SELECT 2::float8 * 3::numeric");
like($err, qr/public trap float8 \* numeric called/,
	'while a session with public on its path would have used it');

# A session that reads the database settings does see the trap, so the
# test above is not vacuous.
($ret, $out, $err) = $node->psql('postgres',
	"SELECT 'a'::text = 'a'::text");
like($err, qr/trap operator called/, 'an ordinary session would have used the trap');

$node->stop;
done_testing();
