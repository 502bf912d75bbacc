#!/usr/bin/env python3
#
# A mock of Biteship's REST API for the reconciliation tests: an HTTP/1.1
# keep-alive server on 127.0.0.1 that serves the recorded answer shapes of
# test/data/api/, checks the authorization header, misbehaves as told, and
# logs every request as one JSON line (time, path, answer), from which the
# tests count requests per second.  Standard library only.
#
#   GET /v1/orders/<id>          the order stored for <id>; 400/40002057 if none
#   POST /_control/orders/<id>   store the JSON body as the answer for <id>
#   POST /_control/fail/<id>     JSON {"status": 429|500|401|..., "code": N,
#                                "retry_after": "2", "times": N, "slow_ms": N}:
#                                misbehave for the next <times> requests of <id>
#   POST /_control/key           the body (text) is the valid key from now on
#   GET /_control/per_second     {"<unix second>": requests, ...} of /v1/orders/
#
# Authorization: the raw key, or "Bearer <key>".  No header: 401/40101001;
# a wrong key: 400/40000001 (the bodies of test/data/api/).
#
# Usage: biteship_api.py --port-file F --log F --key K [--data DIR]
import argparse
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument('--port-file', required=True)
parser.add_argument('--log', required=True)
parser.add_argument('--key', required=True)
parser.add_argument('--data', default='test/data/api')
args = parser.parse_args()


def fixture(name):
    with open(os.path.join(args.data, name), 'rb') as f:
        return f.read()


NOT_FOUND = fixture('error_order_not_found.json')
BAD_KEY = fixture('error_invalid_key.json')
NO_KEY = fixture('error_missing_key.json')

lock = threading.Lock()
orders = {}
fails = {}
state = {'key': args.key}
per_second = {}
logf = open(args.log, 'a', buffering=1)


class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, *a):
        pass

    def answer(self, status, body, headers=()):
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        n = int(self.headers.get('Content-Length') or 0)
        return self.rfile.read(n) if n else b''

    def do_POST(self):
        parts = self.path.split('/')
        data = self.body()
        with lock:
            if self.path.startswith('/_control/orders/'):
                orders[parts[3]] = data
            elif self.path.startswith('/_control/fail/'):
                fails[parts[3]] = json.loads(data)
            elif self.path == '/_control/key':
                state['key'] = data.decode()
            else:
                self.answer(404, b'{}')
                return
        self.answer(200, b'{"ok":true}')

    def do_GET(self):
        t = time.time()
        if self.path == '/_control/per_second':
            with lock:
                body = json.dumps(per_second).encode()
            self.answer(200, body)
            return
        auth = self.headers.get('Authorization')
        status, body, headers, slow = 200, b'', [], 0
        oid = self.path[len('/v1/orders/'):] if self.path.startswith('/v1/orders/') else None
        with lock:
            if oid is not None:
                per_second[str(int(t))] = per_second.get(str(int(t)), 0) + 1
            key = state['key']
            fail = fails.get(oid) if oid else None
            if fail is not None:
                fail['times'] = fail.get('times', 1) - 1
                if fail['times'] <= 0:
                    del fails[oid]
            stored = orders.get(oid) if oid else None
        if auth is not None and auth.startswith('Bearer '):
            auth = auth[len('Bearer '):]
        if oid is None:
            status, body = 404, b'{"success":false,"error":"no such route"}'
        elif auth is None:
            status, body = 401, NO_KEY
        elif auth != key:
            status, body = 400, BAD_KEY
        elif fail is not None:
            slow = fail.get('slow_ms', 0)
            status = fail.get('status', 200)
            if status == 200:
                body = stored if stored is not None else NOT_FOUND
                if stored is None:
                    status = 400
            elif 'code' in fail:
                body = json.dumps({'success': False, 'error': 'as told',
                                   'code': fail['code']}).encode()
            else:
                body = b'{"success":false,"error":"as told"}'
            if 'retry_after' in fail:
                headers.append(('Retry-After', str(fail['retry_after'])))
        elif stored is None:
            status, body = 400, NOT_FOUND
        else:
            body = stored
        logf.write(json.dumps({'t': t, 'path': self.path, 'status': status,
                               'auth': self.headers.get('Authorization') is not None}) + '\n')
        if slow:
            time.sleep(slow / 1000.0)
        try:
            self.answer(status, body, headers)
        except (BrokenPipeError, ConnectionResetError):
            pass


server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
server.daemon_threads = True
with open(args.port_file + '.tmp', 'w') as f:
    f.write(str(server.server_address[1]))
os.rename(args.port_file + '.tmp', args.port_file)
server.serve_forever()
