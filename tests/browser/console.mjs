// Drives hookline's operator console in headless Chromium (Debian's package) with
// playwright-core, as an operator would, and prints one JSON report on stdout for the
// Rust end-to-end test (crates/hookline/tests/e2e/console.rs) to assert on. The script
// itself judges nothing it can leave to the test; it records what the browser saw.
//
// Environment: HOOKLINE_URL, HOOKLINE_TOKEN (admin), RECEIVER_URL (a loopback receiver
// answering 200), BROWSER_MODULES (the node_modules folder holding playwright-core and
// axe-core), OUT_DIR (screenshots), CHROMIUM (default /usr/bin/chromium).
import { createRequire } from "node:module";
import { createServer } from "node:http";
import { readFileSync } from "node:fs";
import { join } from "node:path";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const base = env("HOOKLINE_URL");
const token = env("HOOKLINE_TOKEN");
const receiver = env("RECEIVER_URL");
const outDir = env("OUT_DIR");
const require = createRequire(join(env("BROWSER_MODULES"), "noop.js"));
const { chromium } = require("playwright-core");
const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

const report = {
  steps: {},
  consoleErrors: [],
  pageErrors: [],
  failedRequests: [],
  errorResponses: [],
  dialogs: [],
  axe: {},
  screenshots: [],
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-background-networking"],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
const page = await context.newPage();
page.setDefaultTimeout(10000);
page.on("console", (m) => {
  if (m.type() === "error") report.consoleErrors.push({ page: page.url(), url: m.location()?.url, text: m.text() });
});
page.on("pageerror", (e) => report.pageErrors.push(String(e)));
page.on("requestfailed", (r) =>
  report.failedRequests.push({ url: r.url(), error: r.failure()?.errorText }),
);
page.on("response", (r) => {
  if (r.status() >= 400) report.errorResponses.push({ url: r.url(), status: r.status() });
});
page.on("dialog", async (d) => {
  report.dialogs.push({ type: d.type(), message: d.message() });
  await d.dismiss();
});

async function axe(name) {
  await page.evaluate(axeSource);
  const result = await page.evaluate(() =>
    // eslint-disable-next-line no-undef
    axe.run(document, { resultTypes: ["violations"] }),
  );
  report.axe[name] = result.violations.map((v) => ({
    id: v.id,
    impact: v.impact,
    help: v.help,
    nodes: v.nodes.length,
  }));
}

// Saves a full-page screenshot and measures it in a blank page: how many distinct
// colours, and how much of it is not the background colour.
async function screenshot(name) {
  const path = join(outDir, `${name}.png`);
  const png = await page.screenshot({ path, fullPage: true });
  const probe = await context.newPage();
  const stats = await probe.evaluate(async (data) => {
    const img = new Image();
    img.src = `data:image/png;base64,${data}`;
    await img.decode();
    const canvas = document.createElement("canvas");
    canvas.width = img.width;
    canvas.height = img.height;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(img, 0, 0);
    const px = ctx.getImageData(0, 0, img.width, img.height).data;
    const counts = new Map();
    for (let i = 0; i < px.length; i += 4) {
      const k = (px[i] << 16) | (px[i + 1] << 8) | px[i + 2];
      counts.set(k, (counts.get(k) || 0) + 1);
    }
    const top = Math.max(...counts.values());
    return { width: img.width, height: img.height, colors: counts.size, notBackground: 1 - top / (px.length / 4) };
  }, png.toString("base64"));
  await probe.close();
  report.screenshots.push({ name, path, ...stats });
}

const text = async (sel) => (await page.locator(sel).first().textContent())?.trim();

try {
  // A wrong token: an error, and no data.
  await page.goto(base + "/");
  await axe("login");
  await screenshot("console-login");
  await page.fill("#token", "sk_not_a_real_token_0123456789");
  await page.click("button[type=submit]");
  report.steps.wrongToken = {
    url: page.url(),
    error: await text(".field-error"),
    tables: await page.locator("table").count(),
    signOut: await page.locator("form.signout").count(),
  };

  // Sign in.
  await page.fill("#token", token);
  await page.click("button[type=submit]");
  await page.waitForURL("**/apps");
  const cookies = await context.cookies(base);
  const cookie = cookies.find((c) => c.name === "hookline_console");
  report.steps.signIn = {
    url: page.url(),
    cookie: cookie && { httpOnly: cookie.httpOnly, sameSite: cookie.sameSite, secure: cookie.secure },
    tokenInCookie: cookies.some((c) => c.value.includes(token)),
  };

  // Create an application.
  await page.fill("#f-name", "Acme Support");
  await page.fill("#f-uid", "acme-support");
  await page.click("form[method=post][action='/apps'] button[type=submit]");
  await page.waitForURL(/\/apps\/app_/);
  const appUrl = page.url().split("?")[0];
  report.steps.createApp = { url: appUrl, heading: await text("h1"), notice: await text(".notice") };

  // The API's validation message shows next to the field.
  await page.click("text=Add an endpoint");
  await page.fill("#f-url", "not a url");
  await page.click("form[action$='/endpoints'] button[type=submit]");
  report.steps.badEndpoint = { error: await text("#f-url-error") };

  // An endpoint pointing at the loopback receiver.
  await page.fill("#f-url", receiver);
  await page.fill("#f-description", "loopback receiver");
  await page.click("form[action$='/endpoints'] button[type=submit]");
  await page.waitForURL(/\/endpoints\/ep_/);
  const endpointUrl = page.url().split("?")[0];
  report.steps.createEndpoint = { url: endpointUrl, notice: await text(".notice") };
  await axe("endpoint");
  await screenshot("console-endpoint");

  // Send an example and see its attempt with status 200.
  await page.fill("#f-eventType", "console.example");
  await page.fill("#f-payload", '{"hello": "world"}');
  await page.click("form[action$='/send-example'] button[type=submit]");
  await page.waitForURL(/\/msgs\/msg_/);
  const messageUrl = page.url().split("?")[0];
  let status = null;
  for (let i = 0; i < 40 && status !== "200"; i++) {
    if (i > 0) {
      await page.waitForTimeout(250);
      await page.goto(messageUrl);
    }
    status = (await page.locator("table.attempts td.status").first().textContent().catch(() => null))?.trim() ?? null;
  }
  report.steps.example = {
    url: messageUrl,
    attemptStatus: status,
    delivery: await text("td .badge"),
  };
  await axe("message");
  await screenshot("console-message");

  // Resend from the message page.
  await page.click("button:has-text('Resend')");
  await page.waitForURL(/done=resent/);
  report.steps.resend = { notice: await text(".notice") };

  // Reveal, rotate, reveal again.
  await page.goto(endpointUrl);
  await page.click("button:has-text('Reveal secret')");
  await page.locator("#secret-value:not([hidden])").waitFor();
  const first = await text("#secret-value");
  await page.click("button:has-text('Rotate secret')");
  await page.waitForURL(/done=rotated/);
  const rotatedNotice = await text(".notice");
  await page.click("button:has-text('Reveal secret')");
  await page.locator("#secret-value:not([hidden])").waitFor();
  const second = await text("#secret-value");
  report.steps.secret = {
    firstPrefix: first.slice(0, 6),
    secondPrefix: second.slice(0, 6),
    changed: first !== second,
    first,
    second,
    notice: rotatedNotice,
    inPageSource: (await page.content()).includes(second) && !(await page.locator("#secret-value").isVisible()),
  };

  // Disable the endpoint.
  await page.click("button:has-text('Disable endpoint')");
  await page.waitForURL(/done=disabled/);
  report.steps.disable = { badge: await text(".ids .badge"), notice: await text(".notice") };

  // A payload with a script renders as text, and no dialog opens.
  await page.goto(appUrl);
  await axe("application");
  await page.click("text=Create a message");
  await page.fill("#f-eventType", "xss.test");
  await page.fill("#f-payload", '{"z": "<script>alert(1)</script>", "a": "<img src=x onerror=alert(2)>"}');
  await page.click("form[action$='/messages'] button[type=submit]");
  await page.waitForURL(/\/msgs\/msg_/);
  await page.waitForTimeout(300);
  const payload = await text("pre.payload");
  report.steps.xss = {
    payload,
    scripts: await page.locator("script").count(),
    images: await page.locator("img").count(),
    keyOrderKept: payload.indexOf('"z"') < payload.indexOf('"a"'),
  };

  // The API refuses a request that carries only the console's cookie.
  report.steps.cookieOnly = await page.evaluate(async () => {
    const r = await fetch("/api/v1/app", { credentials: "include" });
    return { status: r.status, body: await r.json() };
  });

  // 404 for an application that does not exist.
  const missing = await page.goto(base + "/apps/app_doesnotexist");
  report.steps.missingApp = { status: missing.status(), heading: await text("h1") };

  // Applications list, searched.
  await page.goto(base + "/apps?q=acme");
  report.steps.search = { rows: await page.locator("tbody tr").count(), first: await text("tbody tr td a") };
  await page.goto(base + "/apps");
  await axe("applications");
  await screenshot("console-applications");
  await page.goto(appUrl);
  await screenshot("console-application");

  // Keyboard: Tab from the top reaches the skip link, then the navigation.
  await page.keyboard.press("Tab");
  report.steps.keyboard = { first: await page.evaluate(() => document.activeElement?.textContent?.trim()) };

  // Sign out: the console asks for a token again.
  await page.click("form.signout button");
  await page.waitForURL(base + "/");
  await page.goto(base + "/apps");
  report.steps.signOut = { url: page.url(), tokenField: await page.locator("#token").count() };

  // Another loopback origin calls the API with a bearer token (CORS preflight).
  const other = createServer((req, res) => {
    res.writeHead(200, { "content-type": "text/html" });
    res.end("<!doctype html><title>other origin</title><p>dashboard</p>");
  });
  await new Promise((ok) => other.listen(0, "127.0.0.1", ok));
  const otherOrigin = `http://127.0.0.1:${other.address().port}`;
  await page.goto(otherOrigin + "/");
  report.steps.cors = await page.evaluate(
    async ({ base, token }) => {
      const r = await fetch(base + "/api/v1/app?limit=10", {
        headers: { Authorization: "Bearer " + token, "Content-Type": "application/json" },
      });
      const body = await r.json();
      return { origin: location.origin, status: r.status, names: body.data.map((a) => a.name) };
    },
    { base, token },
  );
  other.close();
} catch (e) {
  report.error = String(e && e.stack ? e.stack : e);
  report.at = page.url();
  report.errorsShown = await page.locator(".error, .field-error").allTextContents().catch(() => []);
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
