// The official Svix JavaScript SDK (npm `svix`, pinned in package.json beside this file)
// in headless Chromium, on a page of another loopback origin than hookline's: with an
// app-portal token it lists that application's endpoints through CORS. Prints one JSON
// report for the Rust end-to-end test (crates/hookline/tests/e2e/console.rs) to judge.
//
// The SDK ships as an ES module that imports `standardwebhooks`, a CommonJS package, so
// no browser can load it from node_modules as it is: esbuild (pinned too) bundles it into
// one browser module under target/browser-tests/svix-browser/ first, and a tiny static
// server of this script serves that and the page. No CDN, nothing but loopback.
//
// Environment: RUNS, a JSON list of {name, serverUrl, token, app}: each is opened in a
// fresh browser context (so no preflight is cached across them) and reports what the
// page listed or the error it got; BROWSER_MODULES; OUT_DIR (unused: no screenshots);
// CHROMIUM (default /usr/bin/chromium).
import { createServer } from "node:http";
import { mkdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { env, launch, newReport, stopped, watch } from "./harness.mjs";

const runs = JSON.parse(env("RUNS"));
const modules = env("BROWSER_MODULES");
const require = createRequire(join(modules, "noop.js"));

// The SDK as one browser module, built from the installed packages each run (it takes
// tens of milliseconds) so it can never be older than they are.
const bundle = join(dirname(modules), "svix-browser", "svix.mjs");
mkdirSync(dirname(bundle), { recursive: true });
const { buildSync } = require("esbuild");
buildSync({
  stdin: { contents: 'export { Svix } from "svix";', resolveDir: modules, loader: "js" },
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  outfile: bundle,
  logLevel: "error",
});
const sdkVersion = JSON.parse(readFileSync(join(modules, "svix", "package.json"), "utf8")).version;

// The customer's own page: it reads where to go from its fragment, lists the endpoints
// with the SDK and writes them into the document, or the error it got.
const page = `<!doctype html>
<html lang="en"><meta charset="utf-8"><title>Our product: webhooks</title>
<h1>Your webhook endpoints</h1>
<ul id="endpoints"></ul>
<p id="error" hidden></p>
<script type="module">
import { Svix } from "/svix.mjs";
const cfg = JSON.parse(decodeURIComponent(location.hash.slice(1)));
const svix = new Svix(cfg.token, { serverUrl: cfg.serverUrl });
try {
  const out = await svix.endpoint.list(cfg.app, { limit: 50 });
  for (const ep of out.data) {
    const li = document.createElement("li");
    li.dataset.id = ep.id;
    li.textContent = ep.url;
    document.getElementById("endpoints").append(li);
  }
  document.body.dataset.done = String(out.done);
} catch (e) {
  const p = document.getElementById("error");
  p.hidden = false;
  p.textContent = e.name + ": " + e.message;
  document.body.dataset.done = "error";
}
</script>
</html>`;

const static_ = createServer((req, res) => {
  if (req.url === "/svix.mjs") {
    res.writeHead(200, { "content-type": "text/javascript" });
    res.end(readFileSync(bundle));
  } else if (req.url === "/") {
    res.writeHead(200, { "content-type": "text/html" });
    res.end(page);
  } else {
    res.writeHead(404);
    res.end();
  }
});
await new Promise((ok) => static_.listen(0, "127.0.0.1", ok));
const origin = `http://127.0.0.1:${static_.address().port}`;

const report = newReport();
report.steps.sdkVersion = sdkVersion;
report.steps.origin = origin;
const { browser } = await launch();
let current = null;
try {
  for (const run of runs) {
    const context = await browser.newContext();
    current = watch(report, await context.newPage());
    // The requests this page sent to hookline (as sent: `allHeaders`), and what the
    // answers allowed.
    const sent = [];
    current.on("requestfinished", async (r) => {
      if (!r.url().startsWith(run.serverUrl)) return;
      const h = await r.allHeaders();
      const answer = await r.response();
      sent.push({
        method: r.method(),
        url: r.url(),
        origin: h.origin ?? null,
        cookie: "cookie" in h,
        status: answer?.status() ?? null,
        allowOrigin: (await answer?.headerValue("access-control-allow-origin")) ?? null,
      });
    });
    const cfg = encodeURIComponent(JSON.stringify({ token: run.token, serverUrl: run.serverUrl, app: run.app }));
    await current.goto(`${origin}/#${cfg}`);
    await current.locator("body[data-done]").waitFor();
    report.steps[run.name] = {
      done: await current.locator("body").getAttribute("data-done"),
      endpoints: await current
        .locator("#endpoints li")
        .evaluateAll((l) => l.map((li) => ({ id: li.dataset.id, url: li.textContent }))),
      error: (await current.locator("#error:not([hidden])").textContent().catch(() => null)) ?? null,
      sent,
    };
    await context.close();
  }
} catch (e) {
  if (current) await stopped(report, current, e);
  else report.error = String(e && e.stack ? e.stack : e);
} finally {
  static_.close();
  await browser.close();
}
console.log(JSON.stringify(report));
