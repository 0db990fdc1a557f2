// A CablenetAI webhook receiver, as its document asks: verify X-CablenetAI-Signature
// (hex HMAC-SHA256 of the raw body with your secret) before processing; answer 2xx fast.
//
//   CABLENETAI_SECRET=... PORT=9000 node receiver.mjs
//
// Listens on 127.0.0.1:$PORT (PORT=0 picks a free port) and prints
// "listening on http://127.0.0.1:<port>", then one JSON line per request:
// {"path", "valid", "signature", "body"}. Answers 200 when the signature is valid,
// 401 when it is not. Plain Node (http + crypto), no packages.
import { createServer } from "http";
import { verify } from "./verify.mjs";

const secret = process.env.CABLENETAI_SECRET;
if (!secret) {
  console.error("set CABLENETAI_SECRET to the endpoint's secret");
  process.exit(2);
}

const server = createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const rawBody = Buffer.concat(chunks).toString("utf8");
    const signature = req.headers["x-cablenetai-signature"] ?? "";
    let valid;
    try {
      valid = verify(rawBody, signature, secret);
    } catch {
      // timingSafeEqual throws when the header has as many characters as the expected
      // hex but not as many bytes (non-ASCII): that is an invalid signature too.
      valid = false;
    }
    console.log(JSON.stringify({ path: req.url, valid, signature, body: rawBody }));
    res.writeHead(valid ? 200 : 401, { "content-type": "text/plain" });
    res.end(valid ? "ok" : "invalid signature");
  });
});

server.listen(Number(process.env.PORT ?? 9000), "127.0.0.1", () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}`);
});
