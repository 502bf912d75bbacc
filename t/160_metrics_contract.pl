# Copyright (c) biteship_webhook authors
#
# The monitoring contract: every metric name that the Grafana dashboard
# (contrib/grafana/biteship_webhook.json) and the Prometheus alerting rules
# (contrib/prometheus/alerts.yml) use is exported by a live listener's
# GET /metrics.  The listener first sees the activity that makes its
# labelled series appear: an applied delivery, a failed apply, a rejected
# delivery past the log rate, outbox messages delivered and dead against the
# mock receiver, and an order synced from the mock Biteship API (both on
# 127.0.0.1).  Histograms are used through their _bucket, _sum and _count
# series; a bare histogram name, which Prometheus never stores, fails.
use strict;
use warnings;

use lib 't';
use BiteshipNode;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;

my $PREFIX = 'biteship_webhook_';

# --- the names the dashboard and the rules use ---------------------------

# identifiers of a PromQL expression that start with the prefix (string
# literals, where label values and job names live, are left out)
sub promql_names
{
	my ($expr) = @_;
	$expr =~ s/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/""/g;
	return $expr =~ /(?<![A-Za-z0-9_:])(\Q$PREFIX\E[A-Za-z0-9_:]*)/g;
}

# the PromQL expressions of a Grafana dashboard: the targets of every
# panel (rows nest theirs) and the queries of the template variables
sub dashboard_exprs
{
	my ($d) = @_;
	my @exprs;
	my @panels = @{ $d->{panels} // [] };
	while (my $p = shift @panels)
	{
		push @panels, @{ $p->{panels} // [] };
		push @exprs, map { $_->{expr} } grep { defined $_->{expr} } @{ $p->{targets} // [] };
	}
	for my $v (@{ $d->{templating}{list} // [] })
	{
		next unless ($v->{type} // '') eq 'query';
		push @exprs, ref $v->{query} ? $v->{query}{query} : $v->{query};
		push @exprs, $v->{definition} if defined $v->{definition};
	}
	return grep { defined && length } @exprs;
}

# the expr: values of a rules file, plain or block scalars (| and >), and
# how many rules it has; the caller checks that each rule gave one
sub rules_exprs
{
	my ($text) = @_;
	my @lines = split /\n/, $text;
	my (@exprs, $rules);
	for (my $i = 0; $i < @lines; $i++)
	{
		$rules++ if $lines[$i] =~ /^\s*-\s+(?:alert|record):/;
		next unless $lines[$i] =~ /^(\s*)(?:-\s+)?expr:\s*(.*?)\s*$/;
		my ($indent, $value) = (length $1, $2);
		if ($value =~ /^[|>][-+]?$/)
		{
			my @block;
			while ($i + 1 < @lines
				&& ($lines[ $i + 1 ] =~ /^\s*$/ || $lines[ $i + 1 ] =~ /^(\s*)/ && length($1) > $indent))
			{
				push @block, $lines[ ++$i ];
			}
			$value = join("\n", @block);
		}
		$value =~ s/^'(.*)'$/$1/s or $value =~ s/^"(.*)"$/$1/s;
		push @exprs, $value;
	}
	return ($rules // 0, @exprs);
}

my $dashboard_file = 'contrib/grafana/biteship_webhook.json';
my $rules_file = 'contrib/prometheus/alerts.yml';

my @dash_exprs = dashboard_exprs(decode_json(slurp_file($dashboard_file)));
cmp_ok(scalar(@dash_exprs), '>=', 20, "$dashboard_file: its PromQL expressions are found");
my ($nrules, @rule_exprs) = rules_exprs(slurp_file($rules_file));
cmp_ok($nrules, '>=', 4, "$rules_file: its rules are found");
is(scalar(@rule_exprs), $nrules, 'with one expression each');

# name -> where it is used
my %used;
for my $e (@dash_exprs)
{
	push @{ $used{$_} }, 'dashboard' for promql_names($e);
}
for my $e (@rule_exprs)
{
	push @{ $used{$_} }, 'alerts' for promql_names($e);
}
my $ndash = grep { grep { $_ eq 'dashboard' } @{ $used{$_} } } keys %used;
my $nalert = grep { grep { $_ eq 'alerts' } @{ $used{$_} } } keys %used;
cmp_ok($ndash, '>=', 25, "the dashboard uses $ndash metric names (an empty parse would not pass)");
cmp_ok($nalert, '>=', 5, "the alerting rules use $nalert");
my ($up) = grep { /\bup\{job="biteship_webhook"\}/ } @rule_exprs;
ok($up, 'the listener-down rule reads up{job="biteship_webhook"}');
like(slurp_file('README.md'), qr/job_name: biteship_webhook\b/,
	'README.md documents that scrape job name');

# --- a listener that has seen some activity ------------------------------
my $recv = start_receiver();
my $api = start_api();
my $node = bw_node(
	'metrics', conf => qq{
biteship_webhook.api_base_url = '$api->{url}'
biteship_webhook.api_timeout = '3s'
biteship_webhook.unverified_log_rate = 0
});
bw_setup_webhook($node);
my @sig = ("$SIG_HEADER: $SECRET");

sub sql { return $node->safe_psql('postgres', $_[0]) }

sub delivery
{
	my ($id, $status) = @_;
	return qq({"event":"order.status","order_id":"$id","status":"$status"});
}

# an applied delivery, and one whose application trigger raises
sql(q{
CREATE FUNCTION public.refuse_order() RETURNS trigger LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$ BEGIN IF NEW.order_id = 'metrics-fail-1' THEN RAISE EXCEPTION 'no room'; END IF; RETURN NULL; END $$;
CREATE TRIGGER refuse_order AFTER INSERT ON biteship_webhook.orders
	FOR EACH ROW EXECUTE FUNCTION public.refuse_order();
});
my ($st, $body) = http($node, 'POST', '/biteship/live', body => delivery('metrics-ok-1', 'picked'),
	headers => \@sig);
like("$st $body", qr/^200 .*"state":"applied"/, 'a delivery is applied');
($st, $body) = http($node, 'POST', '/biteship/live', body => delivery('metrics-fail-1', 'picked'),
	headers => \@sig);
like("$st $body", qr/^200 .*"state":"failed"/, 'a delivery whose trigger raises fails');
# a forgery, past the (zero) log rate of unverified deliveries
($st) = http($node, 'POST', '/biteship/live', body => delivery('metrics-forged-1', 'delivered'),
	headers => ["$SIG_HEADER: wrong"]);
is($st, 401, 'a delivery with a wrong signature is rejected');

# outbox: one message delivered, one dead
sql("SELECT biteship_webhook.create_endpoint('shop', '$recv->{url}/ok')");
sql("SELECT biteship_webhook.create_endpoint('broken', '$recv->{url}/status/500', max_attempts => 1)");
my $ok_id = sql(q{SELECT biteship_webhook.send('shop', '{"n":1}')});
my $dead_id = sql(q{SELECT biteship_webhook.send('broken', '{"n":2}')});
ok($node->poll_query_until('postgres',
		"SELECT state = 'delivered' FROM biteship_webhook.outbox WHERE id = $ok_id"),
	'an outbox message is delivered');
ok($node->poll_query_until('postgres',
		"SELECT state = 'dead' FROM biteship_webhook.outbox WHERE id = $dead_id"),
	'and one is dead');

# reconciliation: an API key, and an order synced from the mock API
my $order = '67cd3f0a8e2b1c0012a4f9d1';
sql("SET log_statement = 'none'; SELECT biteship_webhook.set_api_key('live', '$API_KEY')");
api_control($api, "orders/$order", slurp_file('test/data/api/order_dropping_off.json'));
is(sql("SELECT status FROM biteship_webhook.sync_order('$order')"), 'dropping_off',
	'an order is synced from the API');

# --- the scrape -----------------------------------------------------------
# the workers fold their counters in between batches: wait until every
# activity above shows
my $metrics = '';
my @want = (
	qr/^biteship_webhook_requests_total\{status="200",webhook="live"\} [1-9]/m,
	qr/^biteship_webhook_newest_delivery_age_seconds\{webhook="live"\} /m,
	qr/^biteship_webhook_unlogged_deliveries_total\{state="rejected",webhook="live"\} [1-9]/m,
	qr/^biteship_webhook_outbox_attempts_total\{class="2xx",endpoint="shop"\} [1-9]/m,
	qr/^biteship_webhook_outbox_attempts_total\{class="5xx",endpoint="broken"\} [1-9]/m,
	qr/^biteship_webhook_backlog_events\{state="failed"\} [1-9]/m,
	qr/^biteship_webhook_api_requests_total\{environment="live",result="ok"\} [1-9]/m);
ok( wait_for(
		30,
		sub {
			my ($s, $b) = http($node, 'GET', '/metrics');
			$metrics = $b if $s == 200;
			return !grep { $metrics !~ $_ } @want;
		}),
	'GET /metrics shows the activity, with its labels');
for my $re (@want)
{
	like($metrics, $re, "the scrape has $re");
}

# sample names, and the type of each family
my (%samples, %type);
for my $line (split /\n/, $metrics)
{
	if ($line =~ /^# TYPE (\S+) (\S+)/)
	{
		$type{$1} = $2;
	}
	elsif ($line =~ /^([A-Za-z_:][A-Za-z0-9_:]*)/)
	{
		$samples{$1} = 1;
	}
}
cmp_ok(scalar(keys %samples), '>=', 25, 'the scrape has its sample names');

for my $name (sort keys %used)
{
	my %seen;
	my $where = join(', ', grep { !$seen{$_}++ } @{ $used{$name} });
	if (($type{$name} // '') eq 'histogram')
	{
		fail("$name ($where) is a histogram: use ${name}_bucket, _sum or _count");
		next;
	}
	ok($samples{$name}, "$name ($where) is exported");
	if ($name =~ /^(.*)_(bucket|sum|count)$/ && $type{$1})
	{
		is($type{$1}, 'histogram', "and $1 is a histogram");
	}
}

$node->stop;
stop_receiver($recv);
stop_receiver($api);
done_testing();
