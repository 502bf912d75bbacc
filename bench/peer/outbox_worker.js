// A conventional Node.js outbox worker: the peer of the outbox benchmark.
// It polls bench.peer_outbox for pending rows in batches, locked with
// FOR UPDATE SKIP LOCKED so that several workers can share the table,
// POSTs each with keep-alive fetch (Node's built-in undici), and marks the
// batch delivered in the same transaction.  When a batch comes back short
// it sleeps POLL_MS before polling again.
//
// Environment: PGPORT, PGHOST, TARGET_URL, BATCH (100), POLL_MS (20).
'use strict';
const { Client } = require('pg');
const { setTimeout: sleep } = require('timers/promises');

const target = process.env.TARGET_URL;
const batch = Number(process.env.BATCH || 100);
const pollMs = Number(process.env.POLL_MS || 20);

async function main() {
	const db = new Client({ host: process.env.PGHOST || '127.0.0.1', port: process.env.PGPORT,
		user: 'postgres', database: 'bench' });
	await db.connect();
	let stop = false;
	process.on('SIGTERM', () => { stop = true; });
	while (!stop) {
		await db.query('BEGIN');
		const { rows } = await db.query(
			`SELECT id, body FROM bench.peer_outbox WHERE state = 'pending'
			  ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED`, [batch]);
		const done = [];
		const failed = [];
		await Promise.all(rows.map(async (r) => {
			try {
				const res = await fetch(target, { method: 'POST', body: r.body,
					headers: { 'content-type': 'application/json', 'webhook-id': 'msg_' + r.id } });
				await res.arrayBuffer();
				(res.ok ? done : failed).push(r.id);
			} catch (e) {
				failed.push(r.id);
			}
		}));
		if (done.length > 0)
			await db.query(`UPDATE bench.peer_outbox SET state = 'delivered', delivered_at = clock_timestamp()
			                 WHERE id = ANY($1)`, [done]);
		if (failed.length > 0)
			await db.query(`UPDATE bench.peer_outbox SET attempts = attempts + 1 WHERE id = ANY($1)`, [failed]);
		await db.query('COMMIT');
		if (rows.length < batch)
			await sleep(pollMs);
	}
	await db.end();
}

main().catch((e) => { console.error(e); process.exit(1); });
