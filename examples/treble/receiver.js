// Treble's express sample (seeds/003_0a75c901e5133820.txt, "Ejemplo de Código"), run
// against hookline. Changes from the seed, each marked "hookline:":
//   - the port and the endpoint's signing secret come from env vars (PORT, WEBHOOK_SECRET);
//   - express.json keeps the raw body (verify hook): signatures are over the exact bytes;
//   - isValidRequest is implemented: Standard Webhooks verification with node's crypto;
//   - an accepted webhook is appended to RECEIPTS_FILE (if set), one JSON line each.
const express = require('express');
const crypto = require('crypto'); // hookline:
const fs = require('fs'); // hookline:
const app = express();
app.use(express.json({
    // hookline: keep the exact bytes that were signed.
    verify: (req, res, buf) => {
        req.rawBody = buf;
    },
}));

// hookline: the endpoint's secret (`GET /api/v1/app/{app}/endpoint/{ep}/secret`).
const WEBHOOK_SECRET = process.env.WEBHOOK_SECRET || '';
// hookline: how old a webhook-timestamp may be (replay protection), in seconds.
const TOLERANCE_SECONDS = 5 * 60;

app.post('/webhook', (req, res) => {
    const { event, data } = req.body;

    // Verifica la autenticidad de la solicitud
    if (!isValidRequest(req)) {
        return res.status(401).send('Unauthorized');
    }

    // hookline: record what was accepted, for whoever runs this receiver.
    if (process.env.RECEIPTS_FILE) {
        fs.appendFileSync(process.env.RECEIPTS_FILE, JSON.stringify({
            webhookId: req.get('webhook-id'),
            event,
            data,
        }) + '\n');
    }

    // Procesa el evento
    switch (event) {
        case 'message_read':
            handleMessageRead(data);
            break;
        // Maneja otros eventos
        default:
            console.log('Evento no reconocido:', event);
    }

    res.status(200).send('Evento procesado');
});

// hookline: Standard Webhooks verification. The signed content is
// `${webhook-id}.${webhook-timestamp}.${body}`, the key the base64-decoded part of the
// `whsec_` secret; `webhook-signature` holds one or more space-separated `v1,<base64>`
// signatures (several while a rotated secret is in its grace period).
function isValidRequest(req) {
    const id = req.get('webhook-id');
    const timestamp = req.get('webhook-timestamp');
    const signatures = req.get('webhook-signature');
    if (!id || !timestamp || !signatures || !req.rawBody) {
        return false;
    }
    if (!WEBHOOK_SECRET.startsWith('whsec_')) {
        return false;
    }
    const seconds = Number(timestamp);
    if (!/^[0-9]+$/.test(timestamp) || Math.abs(Date.now() / 1000 - seconds) > TOLERANCE_SECONDS) {
        return false;
    }
    const key = Buffer.from(WEBHOOK_SECRET.slice('whsec_'.length), 'base64');
    const expected = crypto
        .createHmac('sha256', key)
        .update(`${id}.${timestamp}.`)
        .update(req.rawBody)
        .digest();
    return signatures.split(' ').some((entry) => {
        const comma = entry.indexOf(',');
        if (comma < 0 || entry.slice(0, comma) !== 'v1') {
            return false;
        }
        const given = Buffer.from(entry.slice(comma + 1), 'base64');
        return given.length === expected.length && crypto.timingSafeEqual(given, expected);
    });
}

function handleMessageRead(data) {
    console.log('Mensaje leído:', data);
}

// hookline: PORT from the environment (0 = any free port), loopback only; print the port
// actually used.
const server = app.listen(Number(process.env.PORT || 3000), '127.0.0.1', () => {
    console.log('Servidor escuchando en el puerto', server.address().port);
});
