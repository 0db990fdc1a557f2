// The README's screenshots of the operator console and the customer portal, taken by
// scripts/screenshots (which starts the hookline this script talks to). It fills the
// server with a little demo data through the API, lets deliveries run to a loopback
// receiver of its own (one endpoint answers 200, one answers 503 and gives up at once,
// so health and charts have something to show), then signs in and saves PNGs of the
// main pages at a fixed viewport into OUT_DIR. It reuses the browser tests' harness
// (Chromium through the pinned playwright-core, the page watcher, the screenshot probe)
// and fails on anything the browser reports as broken or on a blank picture.
//
// Environment: HOOKLINE_URL, HOOKLINE_TOKEN (admin), BROWSER_MODULES, OUT_DIR, CHROMIUM.
import { createServer } from "node:http";
import { env, launch, newReport, pageTools, watch } from "./harness.mjs";

const base = env("HOOKLINE_URL");
const token = env("HOOKLINE_TOKEN");
const viewport = { width: 1280, height: 800 };

async function api(method, path, body) {
  const r = await fetch(`${base}/api/v1${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

// The customers' receivers: /ok answers 200 after a few milliseconds, /down 503.
const receiver = createServer((req, res) => {
  req.resume();
  req.on("end", () => {
    const ok = req.url.startsWith("/ok");
    setTimeout(() => {
      res.writeHead(ok ? 200 : 503, { "content-type": "text/plain" });
      res.end(ok ? "thanks" : "maintenance");
    }, ok ? 5 + Math.floor(Math.random() * 40) : 2);
  });
});
await new Promise((ok) => receiver.listen(0, "127.0.0.1", ok));
const hooks = `http://127.0.0.1:${receiver.address().port}`;

const report = newReport();
const { browser } = await launch();
const context = await browser.newContext({ viewport, colorScheme: "light", deviceScaleFactor: 1 });
let page = watch(report, await context.newPage());
const { screenshot } = pageTools(report, "", context, () => page);
const shot = (name) => screenshot(name, { fullPage: false });

try {
  // The catalog.
  const order = {
    type: "object",
    required: ["orderId", "total"],
    properties: { orderId: { type: "string" }, total: { type: "number" }, currency: { type: "string" } },
    examples: [{ orderId: "ord_1042", total: 59.9, currency: "EUR" }],
  };
  for (const [name, description, schema] of [
    ["order.created", "A customer placed an order", order],
    ["order.paid", "An order's payment went through", order],
    ["order.shipped", "An order left the warehouse", order],
    [
      "customer.created",
      "A new customer signed up",
      { type: "object", properties: { customerId: { type: "string" } }, examples: [{ customerId: "cus_77" }] },
    ],
  ]) {
    await api("POST", "/event-type", { name, description, schemas: { 1: schema } });
  }

  // Three customers; the first with two endpoints, one of them failing.
  const acme = await api("POST", "/app", { name: "Acme Outdoor", uid: "acme-outdoor" });
  await api("POST", "/app", { name: "Globex Retail", uid: "globex" }).then((a) =>
    api("POST", `/app/${a.id}/endpoint`, { url: `${hooks}/ok/globex`, description: "Globex ERP" }),
  );
  await api("POST", "/app", { name: "Initech Books", uid: "initech" });
  const shop = await api("POST", `/app/${acme.id}/endpoint`, {
    url: `${hooks}/ok/orders`,
    description: "Order sync",
    filterTypes: ["order.created", "order.paid", "order.shipped"],
  });
  const crm = await api("POST", `/app/${acme.id}/endpoint`, {
    url: `${hooks}/down/crm`,
    description: "Legacy CRM",
    retryPolicy: { kind: "none" },
  });

  // A few dozen messages.
  const kinds = ["order.created", "order.paid", "order.shipped", "customer.created"];
  let lastOrder = null;
  for (let i = 0; i < 36; i++) {
    const eventType = kinds[i % kinds.length];
    const payload =
      eventType === "customer.created"
        ? { customerId: `cus_${100 + i}`, email: `buyer${i}@example.com` }
        : { orderId: `ord_${1000 + i}`, total: 19.9 + i * 3, currency: "EUR" };
    const m = await api("POST", `/app/${acme.id}/msg`, { eventType, payload, eventId: `evt_${1000 + i}` });
    if (eventType === "order.paid") lastOrder = m;
  }
  // Every delivery made its attempt (36 to the CRM, 27 to the order sync).
  for (let i = 0; ; i++) {
    const [a, b] = await Promise.all([
      api("GET", `/app/${acme.id}/attempt/endpoint/${shop.id}?limit=100`),
      api("GET", `/app/${acme.id}/attempt/endpoint/${crm.id}?limit=100`),
    ]);
    if (a.data.length >= 27 && b.data.length >= 36) break;
    if (i > 200) throw new Error("the deliveries did not run within 20 s");
    await new Promise((ok) => setTimeout(ok, 100));
  }

  // The console.
  await page.goto(`${base}/`);
  await shot("console-sign-in");
  await page.fill("#token", token);
  await page.click("button[type=submit]");
  await page.waitForURL("**/apps");
  await shot("console-applications");
  await page.goto(`${base}/apps/${acme.id}`);
  await shot("console-application");
  await page.goto(`${base}/apps/${acme.id}/endpoints/${shop.id}`);
  await page.locator("#activity").scrollIntoViewIfNeeded();
  await shot("console-endpoint");
  await page.goto(`${base}/apps/${acme.id}/msgs/${lastOrder.id}`);
  await shot("console-message");
  await page.goto(`${base}/system`);
  await shot("console-system");

  // The portal, as Acme's customer opens it.
  const access = await api("POST", `/auth/app-portal-access/${acme.id}`, {});
  const portal = await browser.newContext({ viewport, colorScheme: "light", deviceScaleFactor: 1 });
  page = watch(report, await portal.newPage());
  await page.goto(access.url);
  await page.waitForURL(`${base}/portal/${acme.id}`);
  await page.locator("h1").waitFor();
  await shot("portal-home");
  await page.goto(`${base}/portal/${acme.id}/endpoints/${shop.id}`);
  await shot("portal-endpoint");
  await portal.close();
} catch (e) {
  report.error = String(e && e.stack ? e.stack : e);
  report.at = page.url();
} finally {
  receiver.close();
  await browser.close();
}

// Judge here: this is a tool, not a test with a Rust side.
const problems = [];
if (report.error) problems.push(`stopped at ${report.at}: ${report.error}`);
for (const e of report.pageErrors) problems.push(`page error: ${e}`);
for (const f of report.failedRequests) {
  if (!(f.error === "net::ERR_ABORTED" && f.url.endsWith("/favicon.svg"))) problems.push(`failed request: ${f.url} ${f.error}`);
}
for (const r of report.errorResponses) problems.push(`error response: ${r.status} ${r.url}`);
for (const s of report.screenshots) {
  if (s.colors <= 20 || s.notBackground <= 0.05) problems.push(`${s.name} looks blank: ${JSON.stringify(s)}`);
}
for (const s of report.screenshots) console.log(`${s.path} (${s.width}x${s.height})`);
if (problems.length) {
  console.error(problems.join("\n"));
  process.exit(1);
}
