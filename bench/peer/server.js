'use strict';
// A conventional Biteship webhook receiver, written the way a careful
// merchant would today: Fastify, node-postgres with a pool and named
// (prepared) statements, node:cluster.  One transaction per delivery:
// verify the signature header, log the raw event (deduplicated on the
// body's SHA-256), upsert the order only when the status is newer, record
// the status history, COMMIT, and only then answer 200.
//
// Settings (environment):
//   PEER_PORT           port to listen on (127.0.0.1)
//   PEER_WORKERS        worker processes (2)
//   PEER_POOL           pg pool size per worker (16)
//   PEER_PATH           webhook path (/biteship/bench)
//   PEER_HEADER         signature header name
//   PEER_SECRET         signature header value
//   PGHOST PGPORT PGUSER PGDATABASE   as for libpq

const cluster = require('node:cluster');
const crypto = require('node:crypto');

const PORT = parseInt(process.env.PEER_PORT || '3000', 10);
const WORKERS = parseInt(process.env.PEER_WORKERS || '2', 10);
const POOL = parseInt(process.env.PEER_POOL || '16', 10);
const PATH = process.env.PEER_PATH || '/biteship/bench';
const HEADER = (process.env.PEER_HEADER || 'x-biteship-signature').toLowerCase();
const SECRET = process.env.PEER_SECRET || '';

if (cluster.isPrimary) {
  if (!SECRET) {
    console.error('peer: PEER_SECRET is not set');
    process.exit(2);
  }
  let stopping = false;
  for (let i = 0; i < WORKERS; i++) cluster.fork();
  cluster.on('exit', (worker, code, signal) => {
    if (!stopping) {
      console.error(`peer: worker ${worker.process.pid} died (${signal || code}), restarting`);
      cluster.fork();
    } else if (Object.keys(cluster.workers).length === 0) {
      process.exit(0);
    }
  });
  const stop = () => {
    stopping = true;
    for (const id in cluster.workers) cluster.workers[id].process.kill('SIGTERM');
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else {
  main().catch((err) => {
    console.error('peer: worker failed to start:', err);
    process.exit(1);
  });
}

const SQL_INSERT_EVENT = {
  name: 'insert_event',
  text: `INSERT INTO peer.events
           (event, order_id, payload, raw_body, body_sha256, body_size, headers, remote_addr, state)
         VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7::jsonb, $8::inet, $9)
         ON CONFLICT (body_sha256) DO NOTHING
         RETURNING id`,
};

const SQL_UPSERT_STATUS = {
  name: 'upsert_status',
  text: `INSERT INTO peer.orders AS o
           (order_id, status, courier_company, courier_type, courier_tracking_id,
            courier_waybill_id, courier_link, courier_driver_name, courier_driver_phone,
            courier_driver_photo_url, courier_driver_plate_number, order_price,
            status_updated_at, last_event_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
         ON CONFLICT (order_id) DO UPDATE SET
           status = EXCLUDED.status,
           courier_company = COALESCE(EXCLUDED.courier_company, o.courier_company),
           courier_type = COALESCE(EXCLUDED.courier_type, o.courier_type),
           courier_tracking_id = COALESCE(EXCLUDED.courier_tracking_id, o.courier_tracking_id),
           courier_waybill_id = COALESCE(EXCLUDED.courier_waybill_id, o.courier_waybill_id),
           courier_link = COALESCE(EXCLUDED.courier_link, o.courier_link),
           courier_driver_name = COALESCE(EXCLUDED.courier_driver_name, o.courier_driver_name),
           courier_driver_phone = COALESCE(EXCLUDED.courier_driver_phone, o.courier_driver_phone),
           courier_driver_photo_url = COALESCE(EXCLUDED.courier_driver_photo_url, o.courier_driver_photo_url),
           courier_driver_plate_number = COALESCE(EXCLUDED.courier_driver_plate_number, o.courier_driver_plate_number),
           order_price = COALESCE(EXCLUDED.order_price, o.order_price),
           status_updated_at = EXCLUDED.status_updated_at,
           last_event_id = EXCLUDED.last_event_id,
           updated_at = now()
         WHERE o.status_updated_at IS NULL OR o.status_updated_at <= EXCLUDED.status_updated_at`,
};

const SQL_INSERT_HISTORY = {
  name: 'insert_history',
  text: `INSERT INTO peer.order_status_history (order_id, status, occurred_at, event_id)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT DO NOTHING`,
};

const SQL_UPSERT_WAYBILL = {
  name: 'upsert_waybill',
  text: `INSERT INTO peer.orders AS o (order_id, courier_tracking_id, courier_waybill_id, last_event_id)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (order_id) DO UPDATE SET
           courier_tracking_id = COALESCE(EXCLUDED.courier_tracking_id, o.courier_tracking_id),
           courier_waybill_id = COALESCE(EXCLUDED.courier_waybill_id, o.courier_waybill_id),
           last_event_id = EXCLUDED.last_event_id,
           updated_at = now()`,
};

const SQL_UPSERT_PRICE = {
  name: 'upsert_price',
  text: `INSERT INTO peer.orders AS o
           (order_id, price, shipment_fee, cash_on_delivery_fee, proof_of_delivery_fee, last_event_id)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (order_id) DO UPDATE SET
           price = COALESCE(EXCLUDED.price, o.price),
           shipment_fee = COALESCE(EXCLUDED.shipment_fee, o.shipment_fee),
           cash_on_delivery_fee = COALESCE(EXCLUDED.cash_on_delivery_fee, o.cash_on_delivery_fee),
           proof_of_delivery_fee = COALESCE(EXCLUDED.proof_of_delivery_fee, o.proof_of_delivery_fee),
           last_event_id = EXCLUDED.last_event_id,
           updated_at = now()`,
};

const STATUS_ALIASES = {
  pickingUp: 'picking_up',
  droppingOff: 'dropping_off',
  returnInTransit: 'return_in_transit',
  onHold: 'on_hold',
  courierNotFound: 'courier_not_found',
};

function str(v) {
  if (v === undefined || v === null) return null;
  return typeof v === 'string' ? v : String(v);
}

function num(v) {
  if (typeof v === 'number' && Number.isFinite(v)) return v;
  if (typeof v === 'string' && v.trim() !== '' && Number.isFinite(Number(v))) return v;
  return null;
}

function time(v) {
  if (typeof v !== 'string') return null;
  const t = Date.parse(v);
  return Number.isNaN(t) ? null : v;
}

function sha256(data) {
  return crypto.createHash('sha256').update(data).digest();
}

async function main() {
  const { Pool } = require('pg');
  const Fastify = require('fastify');

  const secretDigest = sha256(SECRET);
  let errorsLogged = 0;
  const pool = new Pool({ max: POOL, idleTimeoutMillis: 0 });
  pool.on('error', (err) => console.error('peer: idle client error:', err.message));

  const app = Fastify({ logger: false, bodyLimit: 1024 * 1024 });

  // Keep the body as the exact string received: its digest is the dedup
  // key and it is what gets logged.
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => done(null, body));
  app.addContentTypeParser('*', { parseAs: 'string' }, (req, body, done) => done(null, body));

  function verified(req) {
    const got = req.headers[HEADER];
    if (typeof got !== 'string') return false;
    return crypto.timingSafeEqual(sha256(got), secretDigest);
  }

  app.get('/healthz', async () => ({ ok: true }));

  app.post(PATH, async (req, reply) => {
    const raw = typeof req.body === 'string' ? req.body : '';

    // Biteship's installation check: an empty body (or {}), with or
    // without the signature header.  It must get a 200.
    const trimmed = raw.trim();
    if (trimmed === '' || trimmed === '{}') {
      return reply.code(200).send({ ok: true, state: 'ping' });
    }
    if (!verified(req)) {
      return reply.code(401).send({ ok: false, error: 'bad or missing signature header' });
    }
    let p;
    try {
      p = JSON.parse(raw);
    } catch (e) {
      return reply.code(400).send({ ok: false, error: 'body is not JSON' });
    }
    if (p === null || typeof p !== 'object' || Array.isArray(p)) {
      return reply.code(400).send({ ok: false, error: 'body is not a JSON object' });
    }

    const event = str(p.event);
    const orderId = str(p.order_id);
    const known = event === 'order.status' || event === 'order.waybill_id' || event === 'order.price';
    const applicable = known && orderId !== null && orderId !== '';
    const headers = {};
    for (const [k, v] of Object.entries(req.headers)) headers[k] = k === HEADER ? '[redacted]' : v;

    const client = await pool.connect();
    let state;
    let eventId = null;
    try {
      await client.query('BEGIN');
      const ins = await client.query({
        ...SQL_INSERT_EVENT,
        values: [event, orderId, raw, raw, sha256(raw), Buffer.byteLength(raw),
          JSON.stringify(headers), req.ip || null, applicable ? 'applied' : 'ignored'],
      });
      if (ins.rowCount === 0) {
        state = 'duplicate';
      } else {
        eventId = ins.rows[0].id;
        state = applicable ? 'applied' : 'ignored';
        if (applicable && event === 'order.status') {
          let status = str(p.status);
          if (status !== null && STATUS_ALIASES[status]) status = STATUS_ALIASES[status];
          const at = time(p.updated_at) || new Date().toISOString();
          await client.query({
            ...SQL_UPSERT_STATUS,
            values: [orderId, status, str(p.courier_company), str(p.courier_type),
              str(p.courier_tracking_id), str(p.courier_waybill_id), str(p.courier_link),
              str(p.courier_driver_name), str(p.courier_driver_phone),
              str(p.courier_driver_photo_url), str(p.courier_driver_plate_number),
              num(p.order_price), at, eventId],
          });
          if (status !== null && status !== '') {
            await client.query({ ...SQL_INSERT_HISTORY, values: [orderId, status, at, eventId] });
          }
        } else if (applicable && event === 'order.waybill_id') {
          await client.query({
            ...SQL_UPSERT_WAYBILL,
            values: [orderId, str(p.courier_tracking_id), str(p.courier_waybill_id), eventId],
          });
        } else if (applicable && event === 'order.price') {
          await client.query({
            ...SQL_UPSERT_PRICE,
            values: [orderId, num(p.price), num(p.shippment_fee !== undefined ? p.shippment_fee : p.shipment_fee),
              num(p.cash_on_delivery_fee), num(p.proof_of_delivery_fee), eventId],
          });
        }
      }
      await client.query('COMMIT');
      client.release();
    } catch (err) {
      try {
        await client.query('ROLLBACK');
        client.release();
      } catch (e) {
        client.release(true);
      }
      if (errorsLogged++ < 5) console.error(`peer: ${process.pid}: ${err.message}`);
      return reply.code(503).send({ ok: false, error: 'database error' });
    }
    return reply.code(200).send({ ok: true, event_id: eventId === null ? null : Number(eventId), state });
  });

  const stop = async () => {
    try {
      await app.close();
      await pool.end();
    } finally {
      process.exit(0);
    }
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);

  await app.listen({ port: PORT, host: '127.0.0.1' });
}
