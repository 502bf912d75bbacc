#!/usr/bin/env python3
"""
Real ClientHello seeds for fuzz_tls, captured from openssl s_client.

For each client configuration, an "openssl s_server" is started on
127.0.0.1 with a throw-away P-256 certificate, and s_client connects to it
through a small relay, also on 127.0.0.1, that records what the client
sends.  The first TLS record (the ClientHello) and, for some
configurations, the client's whole stream are written as fuzz_tls inputs
named sc_<configuration>_<hello|stream>_m<mode>: byte 0 is the mode,
bytes 1-2 the split point (big-endian), then the captured bytes (see
fuzz_tls.c).

Nothing leaves the loopback interface.  Usage, from the repository root:

    python3 test/fuzz/tls_seeds.py test/fuzz/corpus/tls

test/fuzz/tls_seeds.py
"""
import os
import select
import socket
import subprocess
import sys
import tempfile
import time

HOST = "127.0.0.1"

# name, s_client options, s_server options, extra (mode, split, what)
# seeds beyond the ClientHello in mode 0
CLIENTS = [
    ("default", [], [], [(3, 0xFFFF, "hello"), (8, 0x0030, "hello")]),
    ("tls12", ["-tls1_2"], [],
     [(4, 0xFFFF, "hello"), (8, 0x0030, "hello"), (0, 0xFFFF, "stream")]),
    ("tls13", ["-tls1_3"], [], []),
    ("sni_alpn", ["-servername", "localhost", "-alpn", "http/1.1,h2"], [], []),
    ("x25519", ["-groups", "X25519"], [], []),
    ("p256", ["-groups", "P-256"], [], []),
    ("hrr", ["-groups", "X25519:P-256"], ["-groups", "P-256"],
     [(0, 0xFFFF, "stream")]),
    ("tls12_ecdsa_gcm", ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"],
     [], []),
    ("tls12_chacha", ["-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"],
     [], []),
    ("tls13_aes128", ["-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256"],
     [], []),
    ("tls11", ["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"],
     ["-cipher", "DEFAULT:@SECLEVEL=0"], [(4, 0xFFFF, "hello")]),
    ("no_ticket_status", ["-no_ticket", "-status"], [], []),
    ("mtls", ["@cert"], ["-Verify", "1"],
     [(3, 0xFFFF, "hello"), (3, 0xFFFF, "stream")]),
]

# Modes (fuzz_tls.c): 0 raw handshake, 3 client certificates required,
# 4 TLS 1.3 minimum, 8 the client half-closes after sending.


def free_port():
    s = socket.socket()
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, proc, secs=10.0):
    end = time.time() + secs
    while time.time() < end:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection((HOST, port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def relay(listener, port, timeout=8.0):
    """Accept one client, relay it to port, return what the client sent."""
    listener.settimeout(timeout)
    cli, _ = listener.accept()
    srv = socket.create_connection((HOST, port))
    sent = bytearray()
    end = time.time() + timeout
    open_ = {cli: True, srv: True}
    while any(open_.values()) and time.time() < end:
        r, _, _ = select.select([s for s in open_ if open_[s]], [], [], 0.2)
        for s in r:
            data = s.recv(65536)
            other = srv if s is cli else cli
            if not data:
                open_[s] = False
                try:
                    other.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                continue
            if s is cli:
                sent += data
            try:
                other.sendall(data)
            except OSError:
                open_[s] = False
    cli.close()
    srv.close()
    return bytes(sent)


def capture(tmp, copts, sopts):
    sport = free_port()
    cert = os.path.join(tmp, "cert.pem")
    key = os.path.join(tmp, "key.pem")
    server = subprocess.Popen(
        ["openssl", "s_server", "-accept", "%s:%d" % (HOST, sport),
         "-cert", cert, "-key", key, "-CAfile", cert, "-naccept", "2",
         "-www", "-quiet"] + sopts,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        if not wait_port(sport, server):
            raise RuntimeError("s_server did not start")
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, 0))
        listener.listen(1)
        lport = listener.getsockname()[1]
        copts = [o for o in copts if o != "@cert"] + \
            (["-cert", cert, "-key", key] if "@cert" in copts else [])
        client = subprocess.Popen(
            ["openssl", "s_client", "-connect", "%s:%d" % (HOST, lport),
             "-quiet", "-ign_eof"] + copts,
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        client.stdin.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n"
                           b"Connection: close\r\n\r\n")
        client.stdin.close()
        stream = relay(listener, sport)
        listener.close()
        try:
            client.wait(timeout=5)
        except subprocess.TimeoutExpired:
            client.kill()
            client.wait()
        return stream
    finally:
        server.kill()
        server.wait()


def first_record(stream):
    if len(stream) < 5 or stream[0] != 0x16:
        return None
    n = 5 + (stream[3] << 8 | stream[4])
    return stream[:n] if len(stream) >= n else None


def seed(mode, split, body):
    return bytes([mode, split >> 8, split & 0xFF]) + body


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "test/fuzz/corpus/tls"
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=localhost",
             "-days", "2", "-keyout", os.path.join(tmp, "key.pem"),
             "-out", os.path.join(tmp, "cert.pem")],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for name, copts, sopts, extra in CLIENTS:
            try:
                stream = capture(tmp, copts, sopts)
            except (OSError, RuntimeError) as e:
                print("%s: skipped (%s)" % (name, e), file=sys.stderr)
                continue
            hello = first_record(stream)
            if hello is None or hello[5] != 0x01:
                print("%s: no ClientHello captured" % name, file=sys.stderr)
                continue
            for mode, split, what in [(0, 0xFFFF, "hello")] + extra:
                body = hello if what == "hello" else stream
                fname = "sc_%s_%s_m%d" % (name, what, mode)
                with open(os.path.join(out, fname), "wb") as f:
                    f.write(seed(mode, split, body))
            print("%s: ClientHello %d bytes, client stream %d bytes"
                  % (name, len(hello), len(stream)))


if __name__ == "__main__":
    main()
