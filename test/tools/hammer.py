#!/usr/bin/env python3
#
# Copyright (c) biteship_webhook authors
#
# hammer.py: send signed order.status deliveries to the listener over
# several keep-alive connections, and record every answer.
#
# Each delivery has its own order_id (PREFIX-THREAD-SEQ), hence its own body.
# One line per answer is appended to OUT, flushed at once:
#
#     order_id <TAB> http_status <TAB> event_id <TAB> state
#
# Connection errors are expected (the server may be killed under it): the
# connection is dropped, the delivery counted as unanswered and the thread
# tries again after a short pause.  The run always ends by itself: at the
# deadline, after MAX requests in all, or as soon as STOP_FILE exists.
#
# Only the Python standard library is used.

import argparse
import http.client
import json
import os
import sys
import threading
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('--host', default='127.0.0.1')
    p.add_argument('--port', type=int, required=True)
    p.add_argument('--path', default='/biteship/live')
    p.add_argument('--header', default='X-Biteship-Signature')
    p.add_argument('--secret', required=True)
    p.add_argument('--threads', type=int, default=8)
    p.add_argument('--duration', type=float, default=30.0,
                   help='hard limit on the run time, in seconds')
    p.add_argument('--max', type=int, default=50000,
                   help='hard limit on the number of requests sent')
    p.add_argument('--prefix', default='hammer')
    p.add_argument('--out', required=True)
    p.add_argument('--stop-file', default=None)
    p.add_argument('--timeout', type=float, default=5.0)
    return p.parse_args()


class Shared:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.sent = 0
        self.acked = 0
        self.errors = 0
        self.other = 0
        self.deadline = time.monotonic() + args.duration
        self.out = open(args.out, 'a', buffering=1)

    def may_send(self):
        if time.monotonic() >= self.deadline:
            return False
        if self.args.stop_file and os.path.exists(self.args.stop_file):
            return False
        with self.lock:
            if self.sent >= self.args.max:
                return False
            self.sent += 1
            return True

    def record(self, order_id, status, event_id, state):
        with self.lock:
            if status == 200:
                self.acked += 1
            else:
                self.other += 1
            self.out.write('%s\t%d\t%s\t%s\n' % (order_id, status, event_id, state))

    def error(self):
        with self.lock:
            self.errors += 1


def body_for(order_id, seq):
    return json.dumps({
        'event': 'order.status',
        'order_id': order_id,
        'courier_tracking_id': 'TRK-' + order_id,
        'courier_waybill_id': 'WYB-' + order_id,
        'courier_company': 'jne',
        'courier_type': 'reg',
        'order_price': 10000 + seq,
        'status': 'confirmed',
        'updated_at': '2025-11-08T09:00:00+07:00',
    }, separators=(',', ':')).encode()


def worker(shared, n):
    args = shared.args
    conn = None
    seq = 0
    headers = {
        'Content-Type': 'application/json',
        args.header: args.secret,
        'Connection': 'keep-alive',
    }
    while shared.may_send():
        seq += 1
        order_id = '%s-%d-%d' % (args.prefix, n, seq)
        body = body_for(order_id, seq)
        try:
            if conn is None:
                conn = http.client.HTTPConnection(args.host, args.port,
                                                  timeout=args.timeout)
            conn.request('POST', args.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            event_id = ''
            state = ''
            try:
                doc = json.loads(data)
                event_id = doc.get('event_id', '')
                state = doc.get('state', doc.get('error', ''))
            except ValueError:
                pass
            shared.record(order_id, resp.status, event_id, state)
            if resp.will_close:
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException):
            shared.error()
            if conn is not None:
                conn.close()
                conn = None
            time.sleep(0.05)
    if conn is not None:
        conn.close()


def main():
    args = parse_args()
    shared = Shared(args)
    threads = [threading.Thread(target=worker, args=(shared, i), daemon=True)
               for i in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        # a thread can be stuck at most args.timeout in one request
        t.join(max(0.0, shared.deadline - time.monotonic()) + 2 * args.timeout)
    shared.out.close()
    print('sent=%d acked=%d other=%d errors=%d' %
          (shared.sent, shared.acked, shared.other, shared.errors))
    return 0


if __name__ == '__main__':
    sys.exit(main())
