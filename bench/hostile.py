#!/usr/bin/env python3
"""Hostile clients for the listener's memory test (bench/run, part rss_hostile).

    hostile.py --port P --path /biteship/bench --header X-Biteship-Signature \
               --secret S --data deliveries.tsv --out hostile.json

Runs until SIGTERM or SIGINT (or --seconds), then writes what it sent and
what came back as JSON to --out.  Python standard library only.

Three kinds of client run at once, against one listener:

non-readers  --nonreaders connections (16) that pipeline `POST /metrics` and
             `POST <path>` requests with bodies (the webhook ones with a wrong
             signature) and never read a byte of the answers.  Each keeps
             writing until the listener stops reading (the socket stays
             unwritable for a second: a "stall"), and is held open, unread,
             until the listener closes it; then it is opened again at once,
             so that --nonreaders of them are open for the whole run.  Their
             receive buffer is set small (--rcvbuf) so that the listener's
             answers back up after a few hundred requests rather than after
             the kernel has buffered megabytes of them.
malformed    --bad-conns connections (4) sending, in turn, bad request lines,
             oversize headers, bad chunked encoding, bodies over
             max_body_size (Content-Length and chunked), bad signatures,
             invalid JSON with a good signature and unknown paths, at
             --bad-rate requests/s in total; every answer is read and counted
             by status, and a connection the listener closes is opened again.
slowloris    --slowloris connections (8) that send a request line and then
             one header byte every --slow-interval seconds (3), until the
             listener answers or closes; then they start over.
"""
import argparse
import collections
import json
import os
import selectors
import signal
import socket
import threading
import time

STOP = threading.Event()


def now():
    return time.monotonic()


class Counter:
    """Thread-safe nested counters: c.add("sent", "bad_json")."""

    def __init__(self):
        self.lock = threading.Lock()
        self.d = collections.defaultdict(collections.Counter)

    def add(self, group, key, n=1):
        with self.lock:
            self.d[group][str(key)] += n

    def snapshot(self):
        with self.lock:
            return {g: dict(sorted(c.items())) for g, c in self.d.items()}


C = Counter()


def load_bodies(path, n=200):
    out = []
    with open(path, "rb") as f:
        for line in f:
            parts = line.rstrip(b"\n").split(b"\t", 3)
            if len(parts) == 4:
                out.append(parts[3])
            if len(out) >= n:
                break
    if not out:
        raise SystemExit("no bodies in %s" % path)
    return out


def connect(host, port, rcvbuf=0, timeout=10.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(timeout)
    s.connect((host, port))
    return s


def request(method, path, headers=(), body=b"", chunked=None):
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: 127.0.0.1"]
    lines += ["%s: %s" % h for h in headers]
    if chunked is None:
        lines.append("Content-Length: %d" % len(body))
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    lines.append("Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + chunked


# ------------------------------------------------------------------ non-readers
def nonreaders(a, bodies):
    """One thread, non-blocking sockets, a selector over EVENT_WRITE only."""
    reqs = []
    for i, b in enumerate(bodies[:64]):
        reqs.append(("metrics", request("POST", "/metrics", [("Content-Type", "application/json")], b)))
        reqs.append(("webhook_bad_sig", request("POST", a.path, [
            ("Content-Type", "application/json"), (a.header, "not-the-secret-%d" % i)], b)))
    blob = b"".join(r for _, r in reqs)
    ends, kinds, off = [], [], 0     # offset where each request ends
    for k, r in reqs:
        off += len(r)
        ends.append(off)
        kinds.append(k)
    sel = selectors.DefaultSelector()
    lifetimes, stalled_after = [], []

    class NR:
        pass

    def open_one():
        while not STOP.is_set():
            try:
                s = connect(a.host, a.port, rcvbuf=a.rcvbuf)
                s.setblocking(False)
                break
            except OSError as e:
                C.add("nonreader", "connect_error_" + type(e).__name__)
                time.sleep(0.2)
        else:
            return
        c = NR()
        c.s, c.pos, c.req, c.t0, c.last_write, c.stalled, c.written = s, 0, 0, now(), now(), False, 0
        sel.register(s, selectors.EVENT_WRITE, c)
        C.add("nonreader", "connections_opened")

    for _ in range(a.nonreaders):
        open_one()
    while not STOP.is_set():
        for key, _ in sel.select(timeout=0.5):
            c = key.data
            try:
                i = c.pos % len(blob)
                n = c.s.send(blob[i:i + 65536])
            except BlockingIOError:
                continue
            except OSError as e:
                # the listener closed it (RST: it never got its answers read)
                sel.unregister(c.s)
                c.s.close()
                C.add("nonreader", "closed_by_listener_" + type(e).__name__)
                lifetimes.append(now() - c.t0)
                open_one()
                continue
            c.pos += n
            c.last_write = now()
            if c.stalled:
                C.add("nonreader", "resumed_after_stall")
                c.stalled = False
            # count the requests whose last byte went out
            while True:
                j = c.req % len(ends)
                end = (c.req // len(ends)) * len(blob) + ends[j]
                if end > c.pos:
                    break
                C.add("nonreader_sent", kinds[j])
                c.req += 1
                c.written += 1
        t = now()
        for key in list(sel.get_map().values()):
            c = key.data
            if not c.stalled and t - c.last_write > 1.0:
                c.stalled = True
                C.add("nonreader", "stalls")
                stalled_after.append(c.written)
    open_at_end = len(sel.get_map())
    for key in list(sel.get_map().values()):
        lifetimes.append(now() - key.data.t0)
        key.data.s.close()
    return {"open_at_end": open_at_end,
            "lifetime_s": summary(lifetimes),
            "requests_written_before_stall": summary(stalled_after)}


def summary(xs):
    if not xs:
        return None
    xs = sorted(xs)
    return {"n": len(xs), "min": round(xs[0], 2), "median": round(xs[len(xs) // 2], 2),
            "max": round(xs[-1], 2)}


# ------------------------------------------------------------------ malformed
class Conn:
    def __init__(self, a):
        self.a, self.s, self.buf = a, None, b""

    def ensure(self):
        if self.s is None:
            self.s = connect(self.a.host, self.a.port, timeout=15.0)
            self.buf = b""
            C.add("malformed", "connections_opened")

    def close(self):
        if self.s is not None:
            try:
                self.s.close()
            except OSError:
                pass
        self.s = None

    def _fill(self):
        try:
            d = self.s.recv(65536)
        except ConnectionResetError:
            d = b""
        if not d:
            raise EOFError
        self.buf += d

    def read_answer(self):
        """(status, closes) of the next answer; EOFError if the peer closed."""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdr = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            hdr[k.strip().lower()] = v.strip().lower()
        n = int(hdr.get("content-length", "0"))
        while len(self.buf) < n:
            self._fill()
        self.buf = self.buf[n:]
        return status, hdr.get("connection") == "close"


def malformed_cases(a, bodies):
    sig = (a.header, a.secret)
    ct = ("Content-Type", "application/json")
    big = a.max_body + 65536
    cases = [
        ("bad_request_line", b"GARBAGE\r\n\r\n"),
        ("bad_request_line", b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n"),
        ("bad_request_line", b"POST  " + a.path.encode() + b" HTTP/1.1 extra\r\n\r\n"),
        ("bad_request_line", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64) + b"\r\n\r\n"),
        ("oversize_headers", request("POST", a.path, [ct, sig, ("X-Pad", "a" * (a.max_header + 4096))], bodies[0])),
        ("oversize_headers", request("GET", "/" + "p" * (a.max_header + 100))),
        ("bad_chunked", request("POST", a.path, [ct, sig], chunked=b"zz\r\nhello\r\n0\r\n\r\n")),
        ("bad_chunked", request("POST", a.path, [ct, sig], chunked=b"5\r\nhelloXX\r\n0\r\n\r\n")),
        ("bad_chunked", request("POST", a.path, [ct, sig, ("Content-Length", "5")], chunked=b"5\r\nhello\r\n0\r\n\r\n")),
        ("body_too_large", None),           # Content-Length over the limit, body sent
        ("body_too_large_chunked", None),   # chunks adding up to over the limit
        ("bad_signature", request("POST", a.path, [ct, (a.header, "wrong")], bodies[1])),
        ("bad_signature", request("POST", a.path, [ct], bodies[2])),
        ("invalid_json", request("POST", a.path, [ct, sig], b'{"event": "order.status", "order_id": ')),
        ("invalid_json", request("POST", a.path, [ct, sig], b'\xff\xfe{"event":1}')),
        ("invalid_json", request("POST", a.path, [ct, sig], bodies[3][:-7])),
        ("unknown_path", request("POST", "/biteship/nope", [ct, sig], bodies[4])),
        ("unknown_path", request("GET", "/../../etc/passwd")),
    ]
    return cases, big


def send_big(conn, head, total, chunked):
    """Send head then up to total body bytes, stopping when an answer comes."""
    s = conn.s
    s.sendall(head)
    piece = b"x" * 65536
    sent = 0
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_READ)
    try:
        while sent < total:
            if sel.select(timeout=0):
                break   # answered (413) or closed: stop sending
            if chunked:
                s.sendall(b"10000\r\n" + piece + b"\r\n")
            else:
                s.sendall(piece[:min(len(piece), total - sent)])
            sent += len(piece)
        if chunked and sent >= total:
            s.sendall(b"0\r\n\r\n")
    finally:
        sel.close()
    C.add("malformed_body_bytes", "sent", sent)


def malformed(a, bodies, idx, nconns):
    cases, big = malformed_cases(a, bodies)
    conn = Conn(a)
    interval = nconns / a.bad_rate if a.bad_rate > 0 else 0
    nxt = now()
    i = idx
    while not STOP.is_set():
        kind, raw = cases[i % len(cases)]
        i += nconns
        if interval:
            nxt += interval
            d = nxt - now()
            if d > 0:
                STOP.wait(d)
            elif d < -1:
                nxt = now()
        try:
            conn.ensure()
            if kind == "body_too_large":
                head = ("POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                        "%s: %s\r\nContent-Length: %d\r\n\r\n" % (a.path, a.header, a.secret, big))
                send_big(conn, head.encode(), big, False)
            elif kind == "body_too_large_chunked":
                send_big(conn, request("POST", a.path, [("Content-Type", "application/json"),
                                                         (a.header, a.secret)], chunked=b""),
                         big, True)
            else:
                conn.s.sendall(raw)
            C.add("malformed_sent", kind)
            status, closes = conn.read_answer()
            C.add("malformed_answers", "%s %d" % (kind, status))
            if closes:
                C.add("malformed", "answered_then_closed")
                conn.close()
        except EOFError:
            C.add("malformed_answers", "%s closed-without-answer" % kind)
            conn.close()
        except socket.timeout:
            C.add("malformed_answers", "%s timeout" % kind)
            conn.close()
        except (BrokenPipeError, ConnectionResetError) as e:
            # the listener closed while we were still sending: try for the answer
            try:
                status, _ = conn.read_answer()
                C.add("malformed_answers", "%s %d" % (kind, status))
            except (EOFError, OSError, ValueError, IndexError):
                C.add("malformed_answers", "%s reset-while-sending" % kind)
            C.add("malformed_sent", kind)
            conn.close()
        except (OSError, ValueError, IndexError) as e:
            C.add("malformed_answers", "%s error-%s" % (kind, type(e).__name__))
            conn.close()
    conn.close()


# ------------------------------------------------------------------ slowloris
def slowloris(a):
    sel = selectors.DefaultSelector()
    trickle = b"X-Slow: " + b"a" * 4000
    lifetimes = []

    class SL:
        pass

    def open_one():
        try:
            s = connect(a.host, a.port)
            s.sendall(("POST %s HTTP/1.1\r\n" % a.path).encode())
        except OSError as e:
            C.add("slowloris", "connect_error_" + type(e).__name__)
            return
        s.setblocking(False)
        c = SL()
        c.s, c.t0, c.next, c.pos, c.buf = s, now(), now() + a.slow_interval, 0, b""
        sel.register(s, selectors.EVENT_READ, c)
        C.add("slowloris", "connections_opened")

    def finish(c, what):
        sel.unregister(c.s)
        c.s.close()
        C.add("slowloris_answers", what)
        lifetimes.append(now() - c.t0)

    for _ in range(a.slowloris):
        open_one()
    while not STOP.is_set():
        for key, _ in sel.select(timeout=0.25):
            c = key.data
            try:
                d = c.s.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                d = None
            if d:
                c.buf += d
                if b"\r\n" not in c.buf:
                    continue
                try:
                    what = c.buf.split(b"\r\n", 1)[0].split()[1].decode()
                except (IndexError, UnicodeDecodeError):
                    what = "unparsable"
            else:
                what = "closed-without-answer" if d == b"" else "reset"
            finish(c, what)
            open_one()
        t = now()
        for key in list(sel.get_map().values()):
            c = key.data
            if t >= c.next:
                c.next = t + a.slow_interval
                try:
                    c.s.send(trickle[c.pos % len(trickle):c.pos % len(trickle) + 1])
                    c.pos += 1
                    C.add("slowloris", "header_bytes_sent")
                except OSError:
                    finish(c, "reset-while-sending")
                    open_one()
    open_at_end = len(sel.get_map())
    for key in list(sel.get_map().values()):
        key.data.s.close()
    return {"open_at_end": open_at_end, "lifetime_s": summary(lifetimes)}


# ------------------------------------------------------------------ main
def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--header", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--data", required=True, help="deliveries file written by gen.py")
    p.add_argument("--out", required=True)
    p.add_argument("--seconds", type=float, default=0, help="0: until SIGTERM")
    p.add_argument("--nonreaders", type=int, default=16)
    p.add_argument("--rcvbuf", type=int, default=4096)
    p.add_argument("--bad-conns", type=int, default=4)
    p.add_argument("--bad-rate", type=float, default=400)
    p.add_argument("--slowloris", type=int, default=8)
    p.add_argument("--slow-interval", type=float, default=3)
    p.add_argument("--max-body", type=int, default=1024 * 1024)
    p.add_argument("--max-header", type=int, default=16 * 1024)
    a = p.parse_args()
    bodies = load_bodies(a.data)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: STOP.set())
    res = {}
    threads = []

    def run(name, fn, *args):
        def body():
            r = fn(*args)
            if r is not None:
                res[name] = r
        t = threading.Thread(target=body, name=name, daemon=True)
        t.start()
        threads.append(t)

    t0 = now()
    if a.nonreaders:
        run("nonreaders", nonreaders, a, bodies)
    for i in range(a.bad_conns):
        run("malformed%d" % i, malformed, a, bodies, i, a.bad_conns)
    if a.slowloris:
        run("slowloris", slowloris, a)
    while not STOP.is_set():
        STOP.wait(0.5)
        if a.seconds and now() - t0 >= a.seconds:
            STOP.set()
    for t in threads:
        t.join(timeout=20)
    out = {"seconds": round(now() - t0, 1),
           "settings": {"nonreaders": a.nonreaders, "rcvbuf": a.rcvbuf, "bad_conns": a.bad_conns,
                        "bad_rate": a.bad_rate, "slowloris": a.slowloris,
                        "slow_interval": a.slow_interval},
           "counts": C.snapshot()}
    out.update(res)
    with open(a.out + ".tmp", "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
    os.replace(a.out + ".tmp", a.out)


if __name__ == "__main__":
    main()
