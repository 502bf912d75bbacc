#!/usr/bin/env python3
"""Generate a realistic stream of Biteship webhook deliveries.

Writes one delivery per line, tab separated, in delivery order:

    lane  flags  gen_pos  body

lane     the order's sequence number (0-based).  A client that splits the
         stream between connections or threads keeps every order in one lane
         (lane % nthreads), so an order's events go through one connection in
         sequence.
flags    "n" first delivery of a new order, "d" exact redelivery of an earlier
         body, "l" a status delivered after a newer status of the same order,
         "-" anything else.
gen_pos  1-based byte offset in body of the two hex digits of the order id
         that a client replaces to replay the stream as a new generation of
         orders once it has sent every line (see replay.lua).  Generation 0
         is the body as written.
body     the JSON body, exactly as Biteship would send it (compact, fields in
         Biteship's order, the misspelt shippment_fee included).

Also writes <out>.meta.json with the counts.  Only the standard library is
used; the output is deterministic for a given --seed.
"""

import argparse
import json
import random
import string
import sys
from datetime import datetime, timedelta, timezone

COURIERS = [
    # company, types, instant (driver fields filled all along), weight
    ("jne", ["reg", "yes", "oke"], False, 20),
    ("sicepat", ["reg", "best", "gokil"], False, 18),
    ("jnt", ["ez"], False, 16),
    ("anteraja", ["reg", "next_day"], False, 10),
    ("ninja", ["standard"], False, 6),
    ("idexpress", ["reg"], False, 5),
    ("gojek", ["instant", "same_day"], True, 12),
    ("grab", ["instant", "same_day"], True, 9),
    ("lalamove", ["motorcycle"], True, 4),
]

FIRST_NAMES = ["Budi", "Siti", "Agus", "Dewi", "Eko", "Rina", "Andi", "Putri",
               "Joko", "Wahyu", "Yusuf", "Indah", "Rizky", "Fitri", "Hendra"]
LAST_NAMES = ["Santoso", "Wijaya", "Saputra", "Lestari", "Pratama", "Hidayat",
              "Nugroho", "Kurniawan", "Setiawan", "Permata", "Gunawan"]
PLATE_AREAS = ["B", "D", "L", "F", "AB", "N", "BK", "DK"]

ALNUM = string.ascii_letters + string.digits


def iso_ms(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (t.microsecond // 1000)


def dumps(obj):
    return json.dumps(obj, separators=(",", ":"))


class Gen:
    def __init__(self, seed, orders, dup_rate, late_rate, start):
        self.r = random.Random(seed)
        self.norders = orders
        self.dup_rate = dup_rate
        self.late_rate = late_rate
        self.start = start
        self.process_ids = ["%08x" % self.r.getrandbits(32) for _ in range(8)]
        self.counter = self.r.getrandbits(16)

    def order_id(self, created):
        # An ObjectId: 4 bytes of seconds, 5 bytes per process, 3 bytes of
        # counter.  The last byte of the per-process part is the generation
        # byte; it is "00" here.
        self.counter += 1
        return "%08x%s00%06x" % (int(created.timestamp()),
                                  self.r.choice(self.process_ids),
                                  self.counter & 0xFFFFFF)

    def waybill(self, company):
        r = self.r
        if company == "jne":
            return "".join(r.choice(string.digits) for _ in range(16))
        if company == "sicepat":
            return "00" + "".join(r.choice(string.digits) for _ in range(10))
        if company == "jnt":
            return "JP" + "".join(r.choice(string.digits) for _ in range(10))
        if company == "anteraja":
            return "1000" + "".join(r.choice(string.digits) for _ in range(11))
        if company == "ninja":
            return "NLIDAP" + "".join(r.choice(string.digits) for _ in range(9))
        if company == "idexpress":
            return "IDS" + "".join(r.choice(string.digits) for _ in range(12))
        # instant couriers: booking codes
        return company.upper()[:2] + "-" + "".join(r.choice(string.digits) for _ in range(13))

    def driver(self, instant, present):
        r = self.r
        if not present:
            return (None, None, None, None)
        name = "%s %s" % (r.choice(FIRST_NAMES), r.choice(LAST_NAMES))
        phone = "628" + "".join(r.choice(string.digits) for _ in range(r.randint(8, 10)))
        plate = "%s %d %s" % (r.choice(PLATE_AREAS), r.randint(1000, 9999),
                              "".join(r.choice(string.ascii_uppercase) for _ in range(r.randint(1, 3))))
        photo = "https://storage.googleapis.com/biteship-driver/%s.jpg" % "".join(
            r.choice(ALNUM) for _ in range(20))
        return (name, phone, photo, plate)

    def path(self):
        r = self.r.random()
        base = ["confirmed", "allocated", "picking_up", "picked", "dropping_off"]
        if r < 0.84:
            p = base + ["delivered"]
        elif r < 0.91:
            p = base + ["return_in_transit", "returned"]
        elif r < 0.95:
            p = ["confirmed", "cancelled"]
        elif r < 0.97:
            p = ["confirmed", "allocated", "cancelled"]
        elif r < 0.98:
            p = ["confirmed", "allocated", "courier_not_found"]
        else:
            p = ["confirmed", "allocated", "picking_up", "picked", "on_hold",
                 "dropping_off", "delivered"]
        if self.r.random() < 0.05:
            p = [p[0], "scheduled"] + p[1:]
        return p

    def order_events(self, seq):
        """All deliveries of one order: list of (delivery_time, body, kind)."""
        r = self.r
        created = self.start + timedelta(seconds=r.uniform(0, 3 * 86400))
        oid = self.order_id(created)
        company, types, instant, _ = r.choices(COURIERS, weights=[c[3] for c in COURIERS])[0]
        ctype = r.choice(types)
        tracking = "".join(r.choice(ALNUM) for _ in range(24))
        link = "https://track.biteship.com/%s?environment=production" % tracking
        price = r.randrange(9000, 120000, 500) if not instant else r.randrange(12000, 250000, 1000)
        waybill_late = r.random() < 0.6          # waybill only known after allocation
        waybill = None if waybill_late else self.waybill(company)
        drv = self.driver(instant, instant)
        out = []
        t = created
        path = self.path()
        for idx, status in enumerate(path):
            if idx > 0:
                if instant:
                    t += timedelta(seconds=r.uniform(30, 1200), milliseconds=r.randint(0, 999))
                else:
                    t += timedelta(seconds=r.uniform(600, 14 * 3600), milliseconds=r.randint(0, 999))
            if waybill is None and status in ("allocated", "picking_up"):
                waybill = self.waybill(company)
                wt = t + timedelta(milliseconds=r.randint(50, 4000))
                out.append((wt, {
                    "order_id": oid,
                    "courier_tracking_id": tracking,
                    "courier_waybill_id": waybill,
                    "event": "order.waybill_id",
                    "status": status,
                }, "waybill"))
            if not instant and status == "picking_up":
                drv = self.driver(False, True)
            if not instant and status == "dropping_off" and r.random() < 0.5:
                drv = self.driver(False, True)
            body = {
                "event": "order.status",
                "order_id": oid,
                "order_price": price,
                "courier_tracking_id": tracking,
                "courier_waybill_id": waybill,
                "courier_company": company,
                "courier_type": ctype,
                "courier_driver_name": drv[0],
                "courier_driver_phone": drv[1],
                "courier_driver_plate_number": drv[3],
                "courier_driver_photo_url": drv[2],
                "courier_link": link,
                "status": status,
                "updated_at": iso_ms(t),
            }
            out.append((t + timedelta(milliseconds=r.randint(80, 2500)), body, "status"))
            if status == "picked" and r.random() < 0.15:
                # actual weight differs from the declared one: a new price
                fee = max(5000, price + r.choice([-2000, 1000, 3000, 5000, 8000, 12000]))
                cod_fee = r.choice([0, 0, 0, 0, r.randrange(2000, 15000, 500)])
                pod_fee = r.choice([0, 0, 0, 2000])
                out.append((t + timedelta(seconds=r.uniform(60, 3600)), {
                    "cash_on_delivery_fee": cod_fee,
                    "courier_tracking_id": tracking,
                    "courier_waybill_id": waybill,
                    "event": "order.price",
                    "order_id": oid,
                    "price": fee + cod_fee + pod_fee,
                    "proof_of_delivery_fee": pod_fee,
                    "shippment_fee": fee,
                    "status": "picked",
                }, "price"))
            if status == "dropping_off" and r.random() < 0.05:
                # hand-over to a second courier: a new waybill
                waybill = self.waybill(company)
                out.append((t + timedelta(seconds=r.uniform(60, 1800)), {
                    "order_id": oid,
                    "courier_tracking_id": tracking,
                    "courier_waybill_id": waybill,
                    "event": "order.waybill_id",
                    "status": status,
                }, "waybill"))
        out.sort(key=lambda e: e[0])
        return oid, out

    def build(self):
        deliveries = []   # (delivery_time, lane, tiebreak, body_str, flag, kind)
        statuses = []     # indexes of status deliveries that are not the first of their order
        per_order = []
        tie = 0
        for seq in range(self.norders):
            oid, evs = self.order_events(seq)
            idxs = []
            for k, (dt, body, kind) in enumerate(evs):
                s = dumps(body)
                deliveries.append([dt, seq, tie, s, "n" if k == 0 else "-", kind, oid])
                idxs.append(len(deliveries) - 1)
                tie += 1
            per_order.append(idxs)
        total_base = len(deliveries)

        # ~late_rate of all deliveries: a status (not the first delivery of its
        # order) arrives after the next delivery of the same order.
        nlate = int(round(total_base * self.late_rate))
        cands = []
        for idxs in per_order:
            for a, b in zip(idxs[1:], idxs[2:]):
                if deliveries[a][5] == "status":
                    cands.append((a, b))
        self.r.shuffle(cands)
        used = set()
        late = 0
        for a, b in cands:
            if late >= nlate:
                break
            if a in used or b in used:
                continue
            used.add(a)
            used.add(b)
            deliveries[a][0] = deliveries[b][0] + timedelta(milliseconds=self.r.randint(200, 90000))
            deliveries[a][4] = "l"
            late += 1

        # ~dup_rate of all deliveries: an exact redelivery ("Resend" in the
        # dashboard) minutes to hours after the original.
        ndup = int(round(total_base * self.dup_rate))
        picks = self.r.sample(range(1, total_base), ndup)
        for i in picks:
            d = deliveries[i]
            tie += 1
            deliveries.append([d[0] + timedelta(seconds=self.r.uniform(30, 6 * 3600)), d[1], tie,
                               d[3], "d", d[5], d[6]])

        deliveries.sort(key=lambda d: (d[0], d[2]))
        # The first delivery of an order (in delivery order) carries "n".  It
        # is never a redelivery (those come after their original) nor a late
        # status (those come after a later delivery of the same order).
        seen = set()
        for d in deliveries:
            if d[1] not in seen:
                seen.add(d[1])
                assert d[4] in ("n", "-"), d
                d[4] = "n"
            elif d[4] == "n":
                d[4] = "-"
        return deliveries, late, ndup


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--orders", type=int, default=10000)
    ap.add_argument("--dup-rate", type=float, default=0.02)
    ap.add_argument("--late-rate", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=20251108)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    g = Gen(args.seed, args.orders, args.dup_rate, args.late_rate,
            datetime(2025, 11, 3, 0, 0, 0, tzinfo=timezone.utc))
    deliveries, late, ndup = g.build()
    kinds = {}
    flags = {"n": 0, "d": 0, "l": 0}
    with open(args.out, "w", encoding="utf-8") as f:
        for d in deliveries:
            body = d[3]
            oid = d[6]
            pos = body.index('"order_id":"%s"' % oid) + len('"order_id":"') + 16 + 1
            assert body[pos - 1:pos + 1] == "00", body
            f.write("%d\t%s\t%d\t%s\n" % (d[1], d[4], pos, body))
            kinds[d[5]] = kinds.get(d[5], 0) + 1
            for c in d[4]:
                if c in flags:
                    flags[c] += 1
    meta = {
        "orders": args.orders,
        "deliveries": len(deliveries),
        "distinct_bodies": len(deliveries) - flags["d"],
        "redeliveries": flags["d"],
        "late_statuses": flags["l"],
        "by_event": kinds,
        "seed": args.seed,
        "dup_rate": args.dup_rate,
        "late_rate": args.late_rate,
    }
    with open(args.out + ".meta.json", "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    json.dump(meta, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
