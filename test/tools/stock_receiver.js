// A receiver of forwarded events that verifies them with the stock
// Standard Webhooks library for Node.js (npm "standardwebhooks"), the way
// README.md's forwarding recipe does.  The tests start it on 127.0.0.1 and
// read its log: one JSON line per request, {msg_id, ok, error, event}.
//
// Usage: node stock_receiver.js <port-file> <log-file>   (RELAY_SECRET=whsec_...)
'use strict';
const fs = require('fs');
const http = require('http');
const { Webhook } = require('standardwebhooks');

const [portFile, logFile] = process.argv.slice(2);
const wh = new Webhook(process.env.RELAY_SECRET);

http.createServer((req, res) => {
	const chunks = [];
	req.on('data', (c) => chunks.push(c));
	req.on('end', () => {
		const body = Buffer.concat(chunks).toString('utf8');
		let record = { msg_id: req.headers['webhook-id'] };
		try {
			const evt = wh.verify(body, req.headers);	// throws unless signed by our secret
			record.ok = true;
			record.event = evt;
			res.writeHead(204);
		} catch (e) {
			record.ok = false;
			record.error = String(e.message || e);
			res.writeHead(400);
		}
		fs.appendFileSync(logFile, JSON.stringify(record) + '\n');
		res.end();
	});
}).listen(0, '127.0.0.1', function () {
	fs.writeFileSync(portFile + '.tmp', String(this.address().port));
	fs.renameSync(portFile + '.tmp', portFile);
});
