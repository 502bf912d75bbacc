#!/usr/bin/env python3
#
# A mock receiver for the outbox tests: an HTTP/1.1 keep-alive server on
# 127.0.0.1 that answers as its path tells it, verifies Standard Webhooks
# signatures with the secrets it is given, and logs every request as one
# JSON line.  Standard library only.
#
# Paths:
#   /ok                    200
#   /status/<code>         that status (a 3xx carries Location: /ok)
#   /flaky/<n>             503 for the first n attempts of each webhook-id, then 200
#   /flaky429/<n>/<secs>   429 with Retry-After: <secs> for the first n, then 200
#   /gone-once             410 for the first request to the path, then 200
#   /slow/<ms>             200 after <ms> milliseconds
#   /big                   200 with a 100 kB body and a Set-Cookie header
#   /echo/<code>           that status, echoing the request's headers in the
#                          body and its credential in an X-Echo header
#   /bad-retry-after       503 with a Retry-After that is not text
#
# Usage: receiver.py --port-file F --log F [--secret whsec_...]...
import argparse
import base64
import hashlib
import hmac
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument('--port-file', required=True)
parser.add_argument('--log', required=True)
parser.add_argument('--secret', action='append', default=[])
parser.add_argument('--tolerance', type=int, default=300)
args = parser.parse_args()

keys = [base64.b64decode(s[len('whsec_'):]) for s in args.secret]
lock = threading.Lock()
attempts = {}
logf = open(args.log, 'a', buffering=1)


def verify(msg_id, ts, body, sigheader):
    """Index of the first secret that verifies one of the signatures, or None."""
    if msg_id is None or ts is None or sigheader is None:
        return None
    try:
        if abs(time.time() - int(ts)) > args.tolerance:
            return None
    except ValueError:
        return None
    signed = msg_id.encode() + b'.' + ts.encode() + b'.' + body
    for entry in sigheader.split(' '):
        version, _, sig = entry.partition(',')
        if version != 'v1':
            continue
        for i, key in enumerate(keys):
            expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
            if hmac.compare_digest(expected, sig):
                return i
    return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, *a):
        pass

    def do_POST(self):
        self.handle_any()

    def do_GET(self):
        self.handle_any()

    def handle_any(self):
        length = int(self.headers.get('Content-Length') or 0)
        body = self.rfile.read(length) if length else b''
        msg_id = self.headers.get('webhook-id')
        parts = [p for p in self.path.split('?')[0].split('/') if p]
        with lock:
            key = (self.path, msg_id)
            attempts[key] = attempts.get(key, 0) + 1
            n = attempts[key]
            attempts[self.path] = attempts.get(self.path, 0) + 1
            n_path = attempts[self.path]
        status, extra, payload = 200, {}, b'{"ok":true}'
        if parts[:1] == ['status']:
            status = int(parts[1])
            if 300 <= status < 400:
                extra['Location'] = '/ok'
        elif parts[:1] == ['flaky'] and n <= int(parts[1]):
            status = 503
        elif parts[:1] == ['flaky429'] and n <= int(parts[1]):
            status = 429
            extra['Retry-After'] = parts[2]
        elif parts[:1] == ['gone-once'] and n_path == 1:
            status = 410
        elif parts[:1] == ['slow']:
            time.sleep(int(parts[1]) / 1000.0)
        elif parts[:1] == ['big']:
            payload = b'b' * 100000
            extra['Set-Cookie'] = 'session=sEcReT-cookie-from-receiver'
        elif parts[:1] == ['echo']:
            status = int(parts[1])
            payload = json.dumps({'you sent': dict(self.headers.items())}).encode()
            extra['X-Echo'] = (self.headers.get('Authorization')
                               or self.headers.get('X-Api-Key') or '')
        elif parts[:1] == ['bad-retry-after']:
            status = 503
            extra['Retry-After'] = '7\xff\xfex'    # sent as those bytes (latin-1)
        record = {
            't': time.time(),
            'path': self.path,
            'method': self.command,
            'headers': {k.lower(): v for k, v in self.headers.items()},
            'body': body.decode('utf-8', 'replace'),
            'msg_id': msg_id,
            'attempt_seen': n,
            'verified_with': verify(msg_id, self.headers.get('webhook-timestamp'), body,
                                    self.headers.get('webhook-signature')),
            'status': status,
        }
        with lock:
            logf.write(json.dumps(record) + '\n')
        self.send_response(status)
        for k, v in extra.items():
            self.send_header(k, v)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
server.daemon_threads = True
tmp = args.port_file + '.tmp'
with open(tmp, 'w') as f:
    f.write(str(server.server_address[1]))
os.rename(tmp, args.port_file)
server.serve_forever()
