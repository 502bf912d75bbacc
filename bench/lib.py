#!/usr/bin/env python3
"""Helpers of bench/run: CPU accounting, parsing and the summary.

Subcommands:
  ports N                 print N free TCP ports on 127.0.0.1
  cpu-run [opts] -- CMD   run the load client CMD and account CPU time
  pgbench-latency PREFIX  percentiles of pgbench's per-transaction logs
  metrics FILE            the batch-size sum and count of a /metrics answer
  record [opts]           append one run's results to runs.jsonl
  summary DIR             write DIR/summary.md from DIR/*.jsonl

Only the standard library is used.
"""

import argparse
import glob
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time

CLK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- /proc

def proc_stat(pid):
    """(ppid, utime+stime, cutime+cstime) in clock ticks, or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    rest = s[s.rindex(")") + 2:].split()
    # rest[0] is field 3 (state); field k is rest[k - 3]
    return (int(rest[1]), int(rest[11]) + int(rest[12]), int(rest[13]) + int(rest[14]))


def all_pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def children_of(root):
    out = []
    for pid in all_pids():
        st = proc_stat(pid)
        if st is not None and st[0] == root:
            out.append(pid)
    return out


def tree_ticks(root, exclude=()):
    """CPU ticks of a process tree (root and its direct children).

    The root's cutime/cstime hold the CPU of children it has already reaped,
    so children that exit during a measurement are still counted when the
    same sum is taken before and after: delta = delta(root incl. reaped
    children) + delta(sum over live children).  Processes in exclude are
    left out (their CPU is accounted elsewhere).
    """
    st = proc_stat(root)
    if st is None:
        return None, {}
    per = {}
    total = st[1] + st[2]
    for pid in children_of(root):
        if pid in exclude:
            continue
        c = proc_stat(pid)
        if c is not None:
            per[pid] = c[1]
            total += c[1]
    return total, per


def pids_ticks(pids):
    total = 0
    per = {}
    for pid in pids:
        st = proc_stat(pid)
        if st is not None:
            per[pid] = st[1]
            total += st[1]
    return total, per


def intlist(s):
    return [int(x) for x in s.split(",") if x.strip()] if s else []


def cmd_cpu_run(args):
    """Run the client, account CPU of client, receiver and PostgreSQL."""
    exclude = set(intlist(args.exclude))
    receivers = intlist(args.receivers)

    def snap():
        pg = tree_ticks(args.postmaster, exclude)[0] if args.postmaster else None
        rc = 0
        if receivers:
            rc += pids_ticks(receivers)[0]
        if args.receiver_tree:
            t = tree_ticks(args.receiver_tree)[0]
            rc += t if t is not None else 0
        return pg, rc

    before_children = set(children_of(args.postmaster)) if args.postmaster else set()
    pg0, rc0 = snap()
    t0 = time.monotonic()
    child = subprocess.Popen(args.command, stdout=sys.stdout, stderr=sys.stderr)
    try:
        _, status, ru = os.wait4(child.pid, 0)
    except KeyboardInterrupt:
        child.send_signal(signal.SIGINT)
        _, status, ru = os.wait4(child.pid, 0)
    t1 = time.monotonic()
    settle_s = 0.0
    if args.settle:
        s0 = time.monotonic()
        subprocess.run(["bash", "-c", args.settle], timeout=args.settle_timeout + 30,
                       stdout=sys.stderr)
        settle_s = time.monotonic() - s0
    if args.postmaster:
        # Backends that the client opened (pgbench) exit after it does; their
        # CPU reaches the postmaster's cutime only once they are reaped, so
        # wait until every process that was not there before is gone.
        deadline = time.monotonic() + args.reap_timeout
        while time.monotonic() < deadline:
            if not (set(children_of(args.postmaster)) - before_children):
                break
            time.sleep(0.05)
    pg1, rc1 = snap()
    code = os.waitstatus_to_exitcode(status)
    res = {
        "client_cpu_ms": round((ru.ru_utime + ru.ru_stime) * 1000, 1),
        "receiver_cpu_ms": round((rc1 - rc0) * 1000 / CLK, 1) if (receivers or args.receiver_tree) else None,
        "postgres_cpu_ms": round((pg1 - pg0) * 1000 / CLK, 1) if pg0 is not None and pg1 is not None else None,
        "client_wall_s": round(t1 - t0, 3),
        "settle_s": round(settle_s, 3),
        "client_exit": code,
        "client_maxrss_kb": ru.ru_maxrss,
    }
    with open(args.out, "w") as f:
        json.dump(res, f)
        f.write("\n")
    return 0 if code == 0 else code


# ---------------------------------------------------------------- parsing

def parse_bench_line(path):
    """The BENCH line printed by replay.lua's done()."""
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("BENCH "):
                out = {}
                for kv in line.split()[1:]:
                    k, _, v = kv.partition("=")
                    try:
                        out[k] = float(v) if "." in v else int(v)
                    except ValueError:
                        out[k] = v
                return out
    return None


def percentile(sorted_vals, p):
    if not sorted_vals:
        return None
    k = (len(sorted_vals) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo)


def pgbench_latency(prefix):
    vals = []
    for fn in glob.glob(prefix + "*"):
        with open(fn) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2].isdigit():
                    vals.append(int(parts[2]))
    vals.sort()
    if not vals:
        return {}
    return {
        "p50_ms": percentile(vals, 50) / 1000.0,
        "p90_ms": percentile(vals, 90) / 1000.0,
        "p99_ms": percentile(vals, 99) / 1000.0,
        "p999_ms": percentile(vals, 99.9) / 1000.0,
        "max_ms": vals[-1] / 1000.0,
        "mean_ms": sum(vals) / len(vals) / 1000.0,
        "logged": len(vals),
    }


def cmd_pgbench_latency(args):
    json.dump(pgbench_latency(args.prefix), sys.stdout)
    sys.stdout.write("\n")


def parse_pgbench_out(path):
    out = {}
    with open(path, errors="replace") as f:
        txt = f.read()
    m = re.search(r"number of transactions actually processed: (\d+)", txt)
    if m:
        out["requests"] = int(m.group(1))
    m = re.search(r"number of failed transactions: (\d+)", txt)
    if m:
        out["failed"] = int(m.group(1))
    m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", txt)
    if m:
        out["rps"] = float(m.group(1))
    m = re.search(r"duration: (\d+) s", txt)
    if m:
        out["duration_s"] = int(m.group(1))
    return out


def metrics_batch(path):
    """(sum, count) of biteship_webhook_batch_size from a /metrics answer."""
    s = c = None
    try:
        with open(path, errors="replace") as f:
            for line in f:
                if line.startswith("#"):
                    continue
                m = re.match(r"^biteship_webhook_batch_size_(sum|count)(\{[^}]*\})?\s+(\S+)", line)
                if m:
                    v = float(m.group(3))
                    if m.group(1) == "sum":
                        s = (s or 0) + v
                    else:
                        c = (c or 0) + v
    except FileNotFoundError:
        pass
    return s, c


def cmd_metrics(args):
    s, c = metrics_batch(args.file)
    print(json.dumps({"sum": s, "count": c}))


# ---------------------------------------------------------------- record

def load_json(path):
    if not path:
        return {}
    try:
        with open(path) as f:
            txt = f.read().strip()
        return json.loads(txt) if txt else {}
    except (FileNotFoundError, ValueError):
        return {}


def cmd_record(args):
    rec = {"scenario": args.scenario, "kind": args.kind, "concurrency": args.concurrency,
           "apply_mode": args.apply_mode, "workers": args.workers, "tls": args.tls,
           "status": args.status, "note": args.note, "scale": args.scale}
    if args.ab:
        rec["ab"] = args.ab
    if args.status != "ok":
        with open(args.out, "a") as f:
            f.write(json.dumps(rec) + "\n")
        return 0
    cpu = load_json(args.cpu)
    rows = load_json(args.rows)
    rec.update({"cpu": cpu, "rows": rows})
    if args.kind in ("listener", "node"):
        b = parse_bench_line(args.client_out) or {}
        rec["client"] = b
        requests = b.get("requests", 0)
        rec["rps"] = b.get("rps")
        for k in ("p50_ms", "p99_ms", "p999_ms"):
            rec[k] = b.get(k)
        errs = sum(b.get(k, 0) for k in ("err_connect", "err_read", "err_write", "err_timeout"))
        rec["non2xx"] = b.get("non2xx", 0)
        rec["socket_errors"] = errs
        ok2xx = b.get("ok2xx", 0)
        slack = args.concurrency
        new_ev, new_ord = b.get("sent_new_events", 0), b.get("sent_new_orders", 0)
        ev = rows.get("events")
        od = rows.get("orders")
        checks = []
        if ev is None or od is None:
            checks.append("no row counts")
        else:
            if ev > ok2xx + slack:
                checks.append("events %d > 200s %d + in-flight %d" % (ev, ok2xx, slack))
            if not (new_ev - slack <= ev <= new_ev):
                checks.append("events %d not in [%d, %d]" % (ev, new_ev - slack, new_ev))
            if not (new_ord - slack <= od <= new_ord):
                checks.append("orders %d not in [%d, %d]" % (od, new_ord - slack, new_ord))
            if rows.get("pending", 0):
                checks.append("%d events still pending" % rows["pending"])
            if rows.get("failed", 0):
                checks.append("%d events failed" % rows["failed"])
            if rows.get("rejected", 0):
                checks.append("%d events rejected" % rows["rejected"])
            if rows.get("errors"):
                checks.append("first error: %s" % (rows["errors"][0].get("error") or "")[:160])
        rec["rows_ok"] = not checks
        rec["rows_note"] = "; ".join(checks)
    else:  # pgbench, floor: one transaction is deliveries_per_tx deliveries
        p = parse_pgbench_out(args.client_out)
        lat = pgbench_latency(args.pgbench_log_prefix) if args.pgbench_log_prefix else {}
        rec["client"] = dict(p, **lat)
        per_tx = args.deliveries_per_tx
        rec["deliveries_per_tx"] = per_tx
        requests = p.get("requests", 0) * per_tx
        rec["rps"] = p.get("rps") * per_tx if p.get("rps") is not None else None
        for k in ("p50_ms", "p99_ms", "p999_ms"):
            rec[k] = lat.get(k)
        rec["non2xx"] = rows.get("non2xx", 0) + p.get("failed", 0)
        rec["socket_errors"] = 0
        checks = []
        if rows.get("calls") != p.get("requests", 0):
            checks.append("calls %s != transactions %s" % (rows.get("calls"), p.get("requests", 0)))
        if rows.get("events") != rows.get("expected_events"):
            checks.append("events %s != expected %s" % (rows.get("events"), rows.get("expected_events")))
        if rows.get("orders") != rows.get("expected_orders"):
            checks.append("orders %s != expected %s" % (rows.get("orders"), rows.get("expected_orders")))
        if "expected_history" in rows and rows.get("history") != rows.get("expected_history"):
            checks.append("history %s != expected %s" % (rows.get("history"), rows.get("expected_history")))
        if rows.get("failed", 0):
            checks.append("%d events failed" % rows["failed"])
        if rows.get("errors"):
            checks.append("first error: %s" % (rows["errors"][0].get("error") or "")[:160])
        rec["rows_ok"] = not checks
        rec["rows_note"] = "; ".join(checks)
    rec["requests"] = requests
    k = requests / 1000.0 if requests else None

    def per_k(v):
        return round(v / k, 1) if (v is not None and k) else None

    rec["cpu_client_ms_per_1k"] = per_k(cpu.get("client_cpu_ms"))
    rec["cpu_receiver_ms_per_1k"] = per_k(cpu.get("receiver_cpu_ms"))
    rec["cpu_postgres_ms_per_1k"] = per_k(cpu.get("postgres_cpu_ms"))
    if args.metrics_before and args.metrics_after:
        s0, c0 = metrics_batch(args.metrics_before)
        s1, c1 = metrics_batch(args.metrics_after)
        if None not in (s0, c0, s1, c1) and c1 > c0:
            rec["mean_batch"] = round((s1 - s0) / (c1 - c0), 2)
        else:
            rec["mean_batch"] = None
    with open(args.out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print("  %-34s c=%-4s %9s req/s  p50 %s ms  p99 %s ms  p99.9 %s ms  non2xx %s  rows %s%s" % (
        args.scenario, args.concurrency, fmt(rec.get("rps"), 0), fmt(rec.get("p50_ms"), 2),
        fmt(rec.get("p99_ms"), 2), fmt(rec.get("p999_ms"), 2), rec.get("non2xx"),
        "ok" if rec["rows_ok"] else "NOT OK", (" (" + rec["rows_note"] + ")") if rec["rows_note"] else ""))
    return 0


# ---------------------------------------------------------------- summary

def fmt(v, nd=1):
    if v is None or v == "":
        return "-"
    if isinstance(v, (int, float)):
        return ("{:,.%df}" % nd).format(v)
    return str(v)


def read_jsonl(path):
    out = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass
    return out


def ratio_line(label, a, b):
    if not a or not b or not a.get("rps") or not b.get("rps"):
        return "- %s: not available (%s)" % (label, "run missing" if not (a and b) else "no rate")
    tr = a["rps"] / b["rps"]
    pr = (a["p99_ms"] / b["p99_ms"]) if a.get("p99_ms") and b.get("p99_ms") else None
    return "- %s: throughput x%s (%s vs %s req/s), p99 x%s (%s vs %s ms)" % (
        label, fmt(tr, 2), fmt(a["rps"], 0), fmt(b["rps"], 0), fmt(pr, 2),
        fmt(a.get("p99_ms"), 2), fmt(b.get("p99_ms"), 2))


def server_us(r):
    """PostgreSQL plus receiver CPU per delivery, in microseconds (= ms per 1,000)."""
    pg = r.get("cpu_postgres_ms_per_1k")
    if pg is None:
        return None
    rc = r.get("cpu_receiver_ms_per_1k") if r.get("kind") == "listener" else None
    return pg + (rc or 0)


def plain_listener(r, c=None):
    """A listener run of the main grid: not paced, TLS, on the filled log or an A/B arm."""
    return (r.get("kind") == "listener" and r.get("status") == "ok" and not r.get("tls")
            and not r.get("scale") and not r.get("ab") and "paced" not in r.get("scenario", "")
            and (c is None or r.get("concurrency") == c))


def cpu_per_delivery(runs):
    """The listener (inline, 1 worker), the pgbench ceiling and the set-based
    floor, per concurrency: deliveries/s, CPU per delivery, ratio to the floor."""
    ok = [r for r in runs if r.get("status") == "ok" and not r.get("scale") and not r.get("tls")]
    floors = {r["concurrency"]: r for r in ok if r.get("kind") == "floor"}
    if not floors:
        return []
    L = ["", "## CPU per delivery, against the set-based floor", "",
         "Server CPU: PostgreSQL (every process under the postmaster) plus, for the listener, "
         "its workers; the load client (wrk, pgbench) is shown apart. The floor writes the same "
         "three rows per delivery set-based, %s deliveries per statement and per commit "
         "(`floor.pgbench`)." % (next(iter(floors.values())).get("deliveries_per_tx") or "?"), "",
         "| case | c | deliveries/s | server CPU µs/delivery | client CPU µs/delivery | server CPU vs floor | rows ok |",
         "|---|---:|---:|---:|---:|---:|---|"]
    for c in sorted(floors):
        fl = floors[c]
        lis, lis2 = (next((r for r in ok if plain_listener(r, c) and r.get("apply_mode") == "inline"
                           and r.get("workers") == w), None) for w in (1, 2))
        pgb = next((r for r in ok if r.get("kind") == "pgbench" and r.get("concurrency") == c), None)
        cte = next((r for r in ok if r.get("kind") == "cte" and r.get("concurrency") == c), None)
        f = server_us(fl)
        for label, r in (("listener (inline, 1 worker)", lis), ("listener (inline, 2 workers)", lis2),
                         ("pgbench ingest() ceiling, 1 per statement", pgb),
                         ("one-statement ceiling (the peer's writes as one CTE)", cte),
                         ("set-based floor", fl)):
            if r is None and label.startswith("listener (inline, 2"):
                continue
            if r is None:
                L.append("| %s | %s | not run |  |  |  |  |" % (label, c))
                continue
            u = server_us(r)
            L.append("| %s | %s | %s | %s | %s | %s | %s |" % (
                label, c, fmt(r.get("rps"), 0), fmt(u, 1), fmt(r.get("cpu_client_ms_per_1k"), 1),
                "x" + fmt(u / f, 2) if (u is not None and f) else "-",
                "yes" if r.get("rows_ok") else "NO: " + r.get("rows_note", "")))
    return L


def goals(runs, extra):
    """The ingest goals, each computed from this run's own records."""
    ok = [r for r in runs if r.get("status") == "ok" and r.get("rows_ok")]

    def one(kind, c, **kw):
        for r in ok:
            if r.get("kind") == kind and r.get("concurrency") == c and not r.get("scale") \
                    and all(r.get(k) == v for k, v in kw.items()):
                return r
        return None

    def best(c):
        cand = [r for r in ok if plain_listener(r, c)]
        return max(cand, key=lambda r: r.get("rps") or 0) if cand else None

    def cfg(r):
        return "%s, %s worker%s" % (r.get("apply_mode"), r.get("workers"), "" if r.get("workers") == 1 else "s")

    def verdict(b):
        return "-" if b is None else ("met" if b else "**not met**")

    rows = []
    for c in (32, 128):
        fl = one("floor", c)
        f = server_us(fl) if fl else None
        parts, met = [], None
        for w in (1, 2):
            lis = next((r for r in ok if plain_listener(r, c) and r.get("apply_mode") == "inline"
                        and r.get("workers") == w), None)
            u = server_us(lis) if lis else None
            if u is not None and f:
                parts.append("%d worker%s: %s vs %s µs, x%s" % (w, "" if w == 1 else "s", fmt(u, 1), fmt(f, 1),
                                                                fmt(u / f, 2)))
                met = (met or False) or u / f <= 1.2
        rows.append(("CPU per delivery at most 1.2x the set-based floor, c=%d" % c,
                     "; ".join(parts) or "not run", verdict(met if parts else None)))
    for c, kind, label, need in ((32, "cte", "the one-statement (CTE) ceiling", 2.0),
                                 (128, "node", "the 5-round-trip Node peer", 6.0)):
        b, o = best(c), one(kind, c)
        if b and o and o.get("rps"):
            x = b["rps"] / o["rps"]
            rows.append(("c=%d: at least %gx %s" % (c, need, label),
                         "%s vs %s req/s: x%s (best: %s)" % (fmt(b["rps"], 0), fmt(o["rps"], 0), fmt(x, 2), cfg(b)),
                         verdict(x >= need)))
        else:
            rows.append(("c=%d: at least %gx %s" % (c, need, label), "not run", "-"))
    l2 = next((r for r in ok if plain_listener(r, 32) and r.get("apply_mode") == "inline"
               and r.get("workers") == 2), None)
    if l2:
        rows.append(("p99 at c=32 with 2 workers at most 5 ms", "%s ms" % fmt(l2.get("p99_ms"), 2),
                     verdict((l2.get("p99_ms") or 1e9) <= 5)))
        rows.append(("p99.9 at c=32 with 2 workers at most 20 ms", "%s ms" % fmt(l2.get("p999_ms"), 2),
                     verdict((l2.get("p999_ms") or 1e9) <= 20)))
    paced = [r for r in ok if r.get("kind") == "listener" and "paced" in r.get("scenario", "")]
    if paced:
        rows.append(("p99 at half the peak rate at most 2 ms",
                     "; ".join("%s: %s ms at %s req/s" % (r["scenario"].replace("listener inline, ", ""),
                                                          fmt(r.get("p99_ms"), 2), fmt(r.get("rps"), 0))
                               for r in paced),
                     verdict(all((r.get("p99_ms") or 1e9) <= 2 for r in paced))))
    sc = (extra.get("scale") or {}).get("listener")
    if sc:
        rows.append(("5M-event log right after a checkpoint within 15% of the empty log",
                     "%s vs %s req/s: %+.1f%%" % (fmt(sc.get("full_rps"), 0), fmt(sc.get("empty_rps"), 0),
                                                  sc.get("change_pct") or 0.0),
                     verdict(sc.get("within_15pct"))))
    rss = extra.get("rss")
    if rss and rss.get("status") == "ok":
        rows.append(("RSS flat over a million requests",
                     "RssAnon %s -> %s kB over %s requests" % (fmt(rss.get("anon_small_kb"), 0),
                                                               fmt(rss.get("anon_large_kb"), 0),
                                                               fmt(rss.get("at_large"), 0)),
                     verdict(None if rss.get("anon_growth_kb") is None else rss["anon_growth_kb"] < 2048)))
    idle = extra.get("idle")
    if idle and idle.get("status") == "ok":
        rows.append(("idle workers make zero wake-ups",
                     ", ".join("%s %s" % (p["name"], p["switches"]) for p in idle.get("procs", [])) +
                     " context switches in %s s" % idle.get("seconds"),
                     verdict(all(p["switches"] == 0 for p in idle.get("procs", [])))))
    if not rows:
        return []
    L = ["", "## Ingest goals, from this run", "", "| goal | result | verdict |", "|---|---|---|"]
    for g, r, v in rows:
        L.append("| %s | %s | %s |" % (g, r, v))
    return L


def median(vals):
    v = sorted(x for x in vals if x is not None)
    if not v:
        return None
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def ab_section(runs, d):
    """PARTS=ab: the two arms round by round, and B against A."""
    arms = [r for r in runs if r.get("ab")]
    if not arms:
        return []
    cfg = load_json(os.path.join(d, "ab.json"))
    L = ["", "## A/B, alternating rounds", "",
         "A: `%s`; B: `%s`. %s, %s worker(s), c=%s, %s s per arm; the server restarts before every "
         "arm. Server CPU as in the table above (PostgreSQL plus the listener)." % (
             cfg.get("A", "?"), cfg.get("B", "?"), cfg.get("apply_mode", "?"), cfg.get("workers", "?"),
             cfg.get("concurrency", "?"), cfg.get("duration", "?")), "",
         "| round | A req/s | B req/s | B/A | A µs/delivery | B µs/delivery | B/A | A p99 ms | B p99 ms | rows ok |",
         "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    rounds, cur = [], {}
    for r in arms:
        if r["ab"] in cur:
            rounds.append(cur)
            cur = {}
        cur[r["ab"]] = r
        if len(cur) == 2:
            rounds.append(cur)
            cur = {}
    if cur:
        rounds.append(cur)

    def q(b, a):
        return b / a if (a and b is not None) else None

    rr, ru = [], []
    for i, pair in enumerate(rounds, 1):
        a, b = pair.get("A") or {}, pair.get("B") or {}
        if a.get("status") != "ok" or b.get("status") != "ok":
            L.append("| %d | %s | %s |  |  |  |  |  |  |  |" % (
                i, a.get("note") or a.get("status") or "-", b.get("note") or b.get("status") or "-"))
            continue
        x, y = q(b.get("rps"), a.get("rps")), q(server_us(b), server_us(a))
        rr.append(x)
        ru.append(y)
        L.append("| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            i, fmt(a.get("rps"), 0), fmt(b.get("rps"), 0), fmt(x, 3), fmt(server_us(a), 1),
            fmt(server_us(b), 1), fmt(y, 3), fmt(a.get("p99_ms"), 2), fmt(b.get("p99_ms"), 2),
            "yes" if a.get("rows_ok") and b.get("rows_ok") else "NO"))
    if rr:
        ok = [p for p in rounds if all((p.get(k) or {}).get("status") == "ok" for k in "AB")]
        L.append("")
        L.append("Medians over %d round(s): A %s req/s, %s µs; B %s req/s, %s µs. B/A per round: req/s "
                 "%s (median %s), CPU per delivery %s (median %s); B used less CPU per delivery in "
                 "%d of %d rounds." % (
                     len(ok), fmt(median(p["A"].get("rps") for p in ok), 0),
                     fmt(median(server_us(p["A"]) for p in ok), 1),
                     fmt(median(p["B"].get("rps") for p in ok), 0),
                     fmt(median(server_us(p["B"]) for p in ok), 1),
                     "%s-%s" % (fmt(min(rr), 3), fmt(max(rr), 3)), fmt(median(rr), 3),
                     "%s-%s" % (fmt(min(x for x in ru if x is not None), 3),
                                fmt(max(x for x in ru if x is not None), 3)) if any(x is not None for x in ru) else "-",
                     fmt(median(ru), 3), sum(1 for x in ru if x is not None and x < 1), len(ru)))
    return L


def cmd_summary(args):
    d = args.dir
    runs = read_jsonl(os.path.join(d, "runs.jsonl"))
    extra = load_json(os.path.join(d, "extra.json"))
    env = load_json(os.path.join(d, "env.json"))
    L = []
    L.append("# biteship_webhook benchmark, %s" % env.get("started", os.path.basename(d)))
    L.append("")
    L.append("Mode: %s. Machine: %s. PostgreSQL: %s. Data: %s." % (
        "QUICK smoke" if env.get("quick") else "full", env.get("machine", "?"),
        env.get("postgres", "?"), env.get("data", "?")))
    L.append("fsync=on, synchronous_commit=on: every 2xx is a committed transaction. "
             "Per-run duration %s s." % env.get("duration", "?"))
    L.append("")
    L.append("| scenario | c | req/s | p50 ms | p99 ms | p99.9 ms | non-2xx | CPU ms/1k client | CPU ms/1k receiver | CPU ms/1k postgres | mean batch | rows ok |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in runs:
        if r.get("status") != "ok":
            why = r.get("note") or r.get("status") or ""
            if len(why) > 90:
                why = why[:87] + "..."
            L.append("| %s | %s | skipped: %s |  |  |  |  |  |  |  |  |  |" % (
                r["scenario"], r.get("concurrency") or "-", why.replace("|", "/")))
            continue
        nb = r.get("non2xx", 0)
        if r.get("socket_errors"):
            nb = "%s (+%s socket errors)" % (nb, r["socket_errors"])
        rows = "yes" if r.get("rows_ok") else "NO: " + r.get("rows_note", "")
        L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            r["scenario"], r["concurrency"], fmt(r.get("rps"), 0), fmt(r.get("p50_ms"), 2),
            fmt(r.get("p99_ms"), 2), fmt(r.get("p999_ms"), 2), nb,
            fmt(r.get("cpu_client_ms_per_1k")), fmt(r.get("cpu_receiver_ms_per_1k")),
            fmt(r.get("cpu_postgres_ms_per_1k")), fmt(r.get("mean_batch"), 2), rows))
    L.append("")
    L.append("## Ratios at c=32")
    L.append("")
    lis = next((r for r in runs if plain_listener(r, 32) and r.get("apply_mode") == "inline"
                and r.get("workers") == 1), None)
    node = next((r for r in runs if r.get("kind") == "node" and r.get("status") == "ok"
                 and r.get("concurrency") == 32), None)
    pgb = next((r for r in runs if r.get("kind") == "pgbench" and r.get("status") == "ok"
                and r.get("concurrency") == 32 and not r.get("scale")), None)
    L.append(ratio_line("listener (inline, 1 worker) vs Node peer", lis, node))
    L.append(ratio_line("listener (inline, 1 worker) vs pgbench ceiling", lis, pgb))
    best = None
    for r in runs:
        if plain_listener(r, 32):
            if best is None or (r.get("rps") or 0) > (best.get("rps") or 0):
                best = r
    if best is not None and best is not lis:
        L.append(ratio_line("best listener config (%s) vs Node peer" % best["scenario"], best, node))
        L.append(ratio_line("best listener config (%s) vs pgbench ceiling" % best["scenario"], best, pgb))
    cte = next((r for r in runs if r.get("kind") == "cte" and r.get("status") == "ok"
                and r.get("concurrency") == 32), None)
    if cte is not None:
        L.append(ratio_line("listener (inline, 1 worker) vs one-statement (CTE) ceiling", lis, cte))
    L.extend(cpu_per_delivery(runs))
    L.append("")
    L.append("## Scale and cost")
    L.append("")
    sc = extra.get("scale")
    if sc:
        L.append("- events log filled to: %s" % sc.get("load", "-"))
        for key, label in (("listener", "listener c=32"), ("pgbench", "pgbench c=32")):
            s = sc.get(key)
            if s:
                ok = s.get("within_15pct")
                L.append("- %s: %s req/s on an empty log, %s req/s with the filled log: %+.1f%% (%s)" % (
                    label, fmt(s.get("empty_rps"), 0), fmt(s.get("full_rps"), 0),
                    s.get("change_pct") or 0.0,
                    "target met: less than 15% slower" if ok else
                    ("target NOT met: more than 15% slower" if ok is False else "n/a")))
            elif sc.get(key + "_note"):
                L.append("- %s: %s" % (label, sc[key + "_note"]))
        if sc.get("explain"):
            L.append("- EXPLAIN (ANALYZE, BUFFERS) of the ingest statements: `%s`" % sc["explain"])
    else:
        L.append("- filled events log: %s" % extra.get("scale_note", "not run"))
    rss = extra.get("rss")
    if rss and rss.get("status") == "ok":
        L.append("- listener VmRSS: %s kB after %s requests, %s kB after %s requests (growth %s kB)%s" % (
            fmt(rss.get("rss_small_kb"), 0), fmt(rss.get("at_small"), 0),
            fmt(rss.get("rss_large_kb"), 0), fmt(rss.get("at_large"), 0), fmt(rss.get("growth_kb"), 0),
            "; stopped at the time cap before %s requests" % fmt(rss.get("target"), 0)
            if rss.get("capped") else ""))
        L.append("- listener RssAnon (private memory, without touched shared buffers): %s kB, then %s kB (growth %s kB)" % (
            fmt(rss.get("anon_small_kb"), 0), fmt(rss.get("anon_large_kb"), 0), fmt(rss.get("anon_growth_kb"), 0)))
    else:
        L.append("- listener RSS: %s" % ((rss or {}).get("note") or extra.get("rss_note", "not run")))
    rh = extra.get("rss_hostile")
    if rh and rh.get("status") == "ok":
        g = rh.get("good") or {}
        L.append("- listener RssAnon with hostile clients (pid %s): %s kB at start, %s kB with only the hostile "
                 "clients, %s kB after %s good requests, %s kB after %s good requests%s, %s kB once the clients "
                 "left; peak %s kB (sampled every second, %s samples)" % (
                     rh.get("pid"), fmt(rh.get("anon_start_kb"), 0), fmt(rh.get("anon_hostile_only_kb"), 0),
                     fmt(rh.get("anon_small_kb"), 0), fmt(rh.get("at_small"), 0),
                     fmt(rh.get("anon_end_kb"), 0), fmt(rh.get("at_large"), 0),
                     " (stopped at the time cap)" if rh.get("capped") else "",
                     fmt(rh.get("anon_after_kb"), 0), fmt(rh.get("anon_peak_kb"), 0), rh.get("samples")))
        L.append("- good load during it: %s req/s, p99 %s ms, non-2xx %s, socket errors %s" % (
            fmt(g.get("rps"), 0), fmt(g.get("p99_ms"), 2), g.get("non2xx"), g.get("errors") or "none"))
        h = (rh.get("hostile") or {}).get("counts") or {}
        for key, label in (("nonreader_sent", "non-readers wrote"), ("nonreader", "non-reader connections"),
                           ("malformed_sent", "malformed sent"), ("malformed_answers", "malformed answers"),
                           ("slowloris", "slowloris"), ("slowloris_answers", "slowloris answers")):
            if h.get(key):
                L.append("- %s: %s" % (label, ", ".join("%s %s" % (k, fmt(v, 0)) for k, v in h[key].items())))
        L.append("- listener answers by status over the part (requests_total): %s" % ", ".join(
            "%s: %s" % (k, fmt(v, 0)) for k, v in (rh.get("listener_answers_by_status") or {}).items()))
        sl = rh.get("server_log") or {}
        L.append("- listener %s; server log: %d crash line(s), %d out-of-memory line(s)" % (
            "still running (same pid)" if rh.get("listener_alive") else "NOT the same process at the end",
            len(sl.get("crashes") or []), len(sl.get("out_of_memory") or [])))
    else:
        L.append("- listener RssAnon with hostile clients: %s" % ((rh or {}).get("note") or "not run"))
    idle = extra.get("idle")
    if idle and idle.get("status") == "ok":
        for p in idle.get("procs", []):
            L.append("- idle %s (pid %s): %s context switches in %s s = %s wake-ups/s%s" % (
                p["name"], p["pid"], p["switches"], idle["seconds"], fmt(p["per_s"], 2),
                "" if p.get("perf") is None else " (perf sched:sched_switch: %s)" % p["perf"]))
        L.append("- target: zero; %s" % ("met" if all(p["switches"] == 0 for p in idle.get("procs", [])) else "NOT met"))
    else:
        L.append("- idle wake-ups: %s" % ((idle or {}).get("note") or "not run"))
    L.extend(goals(runs, extra))
    L.extend(ab_section(runs, d))
    prof = extra.get("profile")
    if prof:
        L.append("")
        L.append("## Profile of the listener at c=32 (inline, 1 worker)")
        L.append("")
        L.append("`perf record -g` of the listener worker in an extra run; functions by inclusive share "
                 "(`%s`, at least 2%%):" % prof)
        L.append("")
        L.append("```")
        try:
            with open(os.path.join(d, prof)) as f:
                lines = [x.rstrip() for x in f if x.strip() and not x.startswith("#")]
            L.extend(lines[:45])
        except OSError:
            L.append("(missing)")
        L.append("```")
    notes = extra.get("notes") or []
    if notes:
        L.append("")
        L.append("## Notes")
        L.append("")
        for n in notes:
            L.append("- " + n)
    L.append("")
    txt = "\n".join(L)
    with open(os.path.join(d, "summary.md"), "w") as f:
        f.write(txt)
    sys.stdout.write(txt)


# ---------------------------------------------------------------- misc

def cmd_ports(args):
    socks = []
    for _ in range(args.n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    print(" ".join(str(s.getsockname()[1]) for s in socks))
    for s in socks:
        s.close()


def cmd_extra(args):
    """Merge a JSON value into extra.json at a dotted key."""
    path = os.path.join(args.dir, "extra.json")
    data = load_json(path)
    val = json.loads(args.value)
    cur = data
    keys = args.key.split(".")
    for k in keys[:-1]:
        cur = cur.setdefault(k, {})
    if keys[-1] == "notes" and len(keys) == 1:
        data.setdefault("notes", []).append(val)
    else:
        cur[keys[-1]] = val
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


def cmd_rss_hostile(args):
    """Assemble the rss_hostile part's figures from its files, as JSON."""
    marks = {}
    with open(args.marks) as f:
        for line in f:
            k, n, anon, rss = line.split()
            marks[k] = {"n": int(n), "anon": int(anon), "rss": int(rss)}
    samples = []
    with open(args.samples) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and all(p.isdigit() for p in parts):
                samples.append([int(p) for p in parts])
    samples = [s for s in samples if s[1] > 0]
    hostile = load_json(args.hostile)
    wrk = parse_bench_line(args.wrk) or {}
    before, after = load_json(args.status_before), load_json(args.status_after)
    statuses = {k: after.get(k, 0) - before.get(k, 0) for k in sorted(set(before) | set(after))}
    statuses = {k: v for k, v in statuses.items() if v}
    crashes, ooms, warnings = [], [], 0
    with open(args.server_log, errors="replace") as f:
        for line in f:
            if "terminated by signal" in line or "was terminated" in line:
                crashes.append(line.strip()[:300])
            if "out of memory" in line.lower():
                ooms.append(line.strip()[:300])
            if " WARNING: " in line or " ERROR: " in line or " FATAL: " in line:
                warnings += 1
    m = lambda k, f: marks.get(k, {}).get(f)
    peak = max(samples, key=lambda s: s[1]) if samples else None
    out = {
        "status": "ok", "pid": args.pid, "listener_alive": args.alive == "true",
        "seconds": args.seconds, "target": args.target,
        "capped": (m("large", "n") or 0) < args.target,
        "anon_start_kb": m("start", "anon"), "rss_start_kb": m("start", "rss"),
        "anon_hostile_only_kb": m("hostile_only", "anon"),
        "anon_small_kb": m("small", "anon"), "at_small": m("small", "n"),
        "anon_end_kb": m("large", "anon"), "rss_end_kb": m("large", "rss"), "at_large": m("large", "n"),
        "anon_after_kb": m("after", "anon"),
        "anon_peak_kb": peak[1] if peak else None, "anon_peak_at_s": peak[0] if peak else None,
        "anon_min_kb": min(s[1] for s in samples) if samples else None,
        "samples": len(samples),
        "good": {"requests": wrk.get("requests"), "rps": wrk.get("rps"), "non2xx": wrk.get("non2xx"),
                 "errors": {k: wrk.get("err_" + k) for k in ("connect", "read", "write", "timeout") if wrk.get("err_" + k)},
                 "p50_ms": wrk.get("p50_ms"), "p99_ms": wrk.get("p99_ms")},
        "listener_answers_by_status": statuses,
        "hostile": hostile,
        "server_log": {"crashes": crashes, "out_of_memory": ooms, "warnings_errors": warnings},
    }
    if out["anon_small_kb"] is not None and out["anon_end_kb"] is not None:
        out["anon_growth_kb"] = out["anon_end_kb"] - out["anon_small_kb"]
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="sub", required=True)

    p = sub.add_parser("ports")
    p.add_argument("n", type=int)
    p.set_defaults(fn=cmd_ports)

    p = sub.add_parser("cpu-run")
    p.add_argument("--postmaster", type=int)
    p.add_argument("--exclude", default="")
    p.add_argument("--receivers", default="")
    p.add_argument("--receiver-tree", type=int)
    p.add_argument("--settle", default="")
    p.add_argument("--settle-timeout", type=int, default=120)
    p.add_argument("--reap-timeout", type=float, default=5.0)
    p.add_argument("--out", required=True)
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_cpu_run)

    p = sub.add_parser("pgbench-latency")
    p.add_argument("prefix")
    p.set_defaults(fn=cmd_pgbench_latency)

    p = sub.add_parser("metrics")
    p.add_argument("file")
    p.set_defaults(fn=cmd_metrics)

    p = sub.add_parser("record")
    p.add_argument("--out", required=True)
    p.add_argument("--scenario", required=True)
    p.add_argument("--kind", choices=["listener", "node", "pgbench", "floor", "cte"], required=True)
    p.add_argument("--deliveries-per-tx", type=int, default=1)
    p.add_argument("--concurrency", type=int)
    p.add_argument("--apply-mode")
    p.add_argument("--workers", type=int)
    p.add_argument("--tls", action="store_true")
    p.add_argument("--status", default="ok")
    p.add_argument("--note", default="")
    p.add_argument("--client-out")
    p.add_argument("--cpu")
    p.add_argument("--rows")
    p.add_argument("--metrics-before")
    p.add_argument("--metrics-after")
    p.add_argument("--pgbench-log-prefix")
    p.add_argument("--scale", action="store_true")
    p.add_argument("--ab", choices=["A", "B"])
    p.set_defaults(fn=cmd_record)

    p = sub.add_parser("summary")
    p.add_argument("dir")
    p.set_defaults(fn=cmd_summary)

    p = sub.add_parser("rss-hostile")
    for o in ("--marks", "--samples", "--hostile", "--wrk", "--status-before", "--status-after", "--server-log"):
        p.add_argument(o, required=True)
    p.add_argument("--target", type=int, required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--alive", default="false")
    p.add_argument("--seconds", type=int, default=0)
    p.set_defaults(fn=cmd_rss_hostile)

    p = sub.add_parser("extra")
    p.add_argument("dir")
    p.add_argument("key")
    p.add_argument("value")
    p.set_defaults(fn=cmd_extra)

    args = ap.parse_args()
    if getattr(args, "command", None) and args.command[0] == "--":
        args.command = args.command[1:]
    sys.exit(args.fn(args) or 0)


if __name__ == "__main__":
    main()
