// Drives hookline's customer portal in headless Chromium (Debian's package) with
// playwright-core, as a sender's customer would, and prints one JSON report on stdout
// for the Rust end-to-end test (crates/hookline/tests/e2e/portal.rs) to assert on. The
// script records what the browser saw; the test judges.
//
// Environment: HOOKLINE_URL; PORTAL_URL and PORTAL_URL_RO (the `url`s app-portal-access
// returned, read-write and read-only, for application A); APP_A, EP_A, MSG_A (A's
// endpoint, whose first attempt failed, and that message); APP_B, EP_B, MSG_B (another
// application's ids); RECEIVER_URL (a loopback receiver answering 200, for the new
// endpoint); EMBED_PORT (the loopback port of the one origin the server lets frame the
// portal); BROWSER_MODULES; OUT_DIR (screenshots); CHROMIUM (default /usr/bin/chromium).
import { createServer } from "node:http";
import { env, launch, newReport, pageTools, stopped, watch } from "./harness.mjs";

const base = env("HOOKLINE_URL");
const portalUrl = env("PORTAL_URL");
const portalUrlRo = env("PORTAL_URL_RO");
const [appA, epA, msgA] = [env("APP_A"), env("EP_A"), env("MSG_A")];
const [appB, epB, msgB] = [env("APP_B"), env("EP_B"), env("MSG_B")];
const receiver = env("RECEIVER_URL");
const embedPort = Number(env("EMBED_PORT"));
// The embedding pages' servers, closed however the script ends (an open one would keep
// node running).
const servers = [];

const report = newReport();
const { browser, axeSource } = await launch();
const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, colorScheme: "light" });
let page = watch(report, await context.newPage());
const { axe, screenshot, text } = pageTools(report, axeSource, context, () => page);
const home = `${base}/portal/${appA}`;

// What a page offers that could change something.
const actions = async () => ({
  forms: await page.locator("form").count(),
  buttons: await page.locator("button, input[type=submit], input[type=button]").count(),
  inputs: await page.locator("input:not([type=hidden]), textarea, select").count(),
});

try {
  // Open the link: the key leaves the address bar, a session cookie arrives.
  await page.goto(portalUrl);
  await page.waitForURL(home);
  await page.locator("h1:has-text('Webhooks for')").waitFor();
  const cookies = await context.cookies(home);
  const cookie = cookies.find((c) => c.name === "hookline_portal");
  const key = portalUrl.split("#key=")[1];
  report.steps.open = {
    url: page.url(),
    heading: await text("h1"),
    historyHasKey: await page.evaluate(() => location.href.includes("key=")),
    cookie: cookie && { httpOnly: cookie.httpOnly, sameSite: cookie.sameSite, path: cookie.path },
    keyInCookie: cookies.some((c) => c.value.includes(key)),
    scriptSeesCookie: await page.evaluate(() => document.cookie.includes("hookline_portal")),
    endpoints: await page.locator("table.endpoints tbody tr td:first-child a").allTextContents(),
    endpointHints: await page.locator("table.endpoints tbody tr td:first-child .hint").allTextContents(),
    messages: await page.locator("#messages ~ table tbody tr td:first-child code").allTextContents(),
    scripts: await page.locator("script").count(),
    images: await page.locator("img").count(),
  };
  await axe("home");
  await screenshot("portal-home");

  // Add an endpoint, choosing an event type from the catalog (with its schema shown).
  await page.click("summary:has-text('Add an endpoint')");
  report.steps.catalog = {
    types: await page.locator("fieldset.types input[type=checkbox]").evaluateAll((l) => l.map((i) => i.value)),
    descriptions: await page.locator("fieldset.types .type .hint").allTextContents(),
    schemas: await page.locator("fieldset.types details.schema").count(),
  };
  await page.click("fieldset.types details.schema summary");
  report.steps.catalog.firstSchema = await text("fieldset.types details.schema pre");
  await page.fill("#f-url", "not a url");
  await page.check("input[value='order.created']");
  await page.click("form[action$='/portal/" + appA + "'] button[type=submit]");
  report.steps.badEndpoint = {
    error: await text("#f-url-error"),
    stillChecked: await page.isChecked("input[value='order.created']"),
  };
  await page.fill("#f-url", receiver);
  await page.fill("#f-description", "added in the portal");
  await page.click("form[action$='/portal/" + appA + "'] button[type=submit]");
  await page.waitForURL(/\/endpoints\/ep_/);
  const newEndpoint = page.url().split("?")[0];
  report.steps.addEndpoint = {
    url: newEndpoint,
    notice: await text(".notice"),
    types: await text("dl.props dd:nth-of-type(3)"),
  };
  await axe("endpoint");
  await screenshot("portal-endpoint");

  // Reveal and rotate its secret.
  await page.click("button:has-text('Reveal secret')");
  await page.locator("#secret-value:not([hidden])").waitFor();
  const first = await text("#secret-value");
  await page.click("button:has-text('Rotate secret')");
  await page.waitForURL(/done=rotated/);
  const rotated = await text(".notice");
  await page.click("button:has-text('Reveal secret')");
  await page.locator("#secret-value:not([hidden])").waitFor();
  const second = await text("#secret-value");
  report.steps.secret = { first, second, notice: rotated };

  // Send a test event: the event type's schema example, to this endpoint only.
  await page.selectOption("#f-eventType", "order.created");
  await page.click("form[action$='/send-example'] button[type=submit]");
  await page.waitForURL(/\/msgs\/msg_/);
  const example = page.url().split("?")[0];
  let exampleStatus = null;
  for (let i = 0; i < 40 && exampleStatus !== "200"; i++) {
    if (i > 0) {
      await page.waitForTimeout(250);
      await page.goto(example);
    }
    exampleStatus = (await page.locator("table.attempts td.status").first().textContent().catch(() => null))?.trim() ?? null;
  }
  report.steps.example = { url: example, payload: await text("pre.payload"), attemptStatus: exampleStatus };

  // The failed message: resend it (the receiver answers 200 now).
  await page.goto(home);
  await page.click(`a:has-text('${msgA}')`);
  await page.waitForURL(`**/msgs/${msgA}`);
  const before = await page.locator("table.attempts tbody tr").count();
  const firstStatus = await text("table.attempts td.status");
  const payload = await text("pre.payload");
  await axe("message");
  await screenshot("portal-message");
  await page.click("button:has-text('Resend')");
  await page.waitForURL(/done=resent/);
  const resentNotice = await text(".notice");
  let manual = null;
  for (let i = 0; i < 40 && !manual; i++) {
    if (i > 0) {
      await page.waitForTimeout(250);
      await page.goto(`${home}/msgs/${msgA}`);
    }
    manual = await page.evaluate(() =>
      [...document.querySelectorAll("table.attempts tbody tr")]
        .map((tr) => [...tr.cells].map((c) => c.textContent.trim()))
        .find((cells) => cells[4] === "manual" && cells[2] === "200") || null,
    );
  }
  report.steps.resend = { attemptsBefore: before, firstStatus, notice: resentNotice, manual };

  // A payload (and a description) with a script is text; no dialog opens.
  report.steps.xss = {
    payload,
    scripts: await page.locator("script").count(),
    images: await page.locator("img").count(),
  };

  // Another application's ids typed into the URL: not found.
  const notFound = async (path) => {
    const r = await page.goto(base + path);
    return { status: r.status(), heading: await text("h1"), forms: await page.locator("form").count() };
  };
  report.steps.otherApp = {
    endpoint: await notFound(`/portal/${appA}/endpoints/${epB}`),
    message: await notFound(`/portal/${appA}/msgs/${msgB}`),
    otherEndpoint: await notFound(`/portal/${appB}/endpoints/${epB}`),
    otherHome: await notFound(`/portal/${appB}`),
  };
  await page.waitForTimeout(200);
  report.steps.otherApp.otherHome.heading = await text("h1");
  report.steps.otherApp.otherHome.text = await text("#opening");
  await screenshot("portal-not-found");

  // Keyboard: Tab from the top reaches the skip link.
  await page.goto(home);
  await page.keyboard.press("Tab");
  report.steps.keyboard = { first: await page.evaluate(() => document.activeElement?.textContent?.trim()) };

  // The page follows the embedding page's colour scheme.
  const background = () => page.evaluate(() => getComputedStyle(document.documentElement).backgroundColor);
  const light = await background();
  await page.emulateMedia({ colorScheme: "dark" });
  const dark = await background();
  await screenshot("portal-home-dark");
  await page.emulateMedia({ colorScheme: "light" });
  report.steps.colorScheme = { light, dark };

  // A read-only link, in a browser with no portal cookie yet: nothing to act on.
  const roContext = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = watch(report, await roContext.newPage());
  await page.goto(portalUrlRo);
  await page.waitForURL(home);
  await page.locator("h1:has-text('Webhooks for')").waitFor();
  const ro = { badge: await text("header .badge"), home: await actions() };
  ro.endpoints = await page.locator("table.endpoints tbody tr").count();
  await page.goto(`${home}/endpoints/${epA}`);
  ro.endpoint = await actions();
  ro.endpointHeading = await text("h1");
  await page.goto(`${home}/msgs/${msgA}`);
  ro.message = await actions();
  ro.messageHeading = await text("h1");
  await axe("read-only message");
  report.steps.readOnly = ro;
  await roContext.close();

  // Embedded: a page of the allowed origin frames the portal link, in a browser that
  // prefers dark; a page of another origin cannot frame it. (This context is not
  // watched: the refused frame's console error is the point.)
  const frameHtml = (src) =>
    `<!doctype html><html lang="en"><title>Product</title><h1>Our product</h1>` +
    `<iframe title="Webhooks" src="${src}" width="1000" height="600"></iframe></html>`;
  const serve = (port) =>
    new Promise((ok) => {
      const srv = createServer((req, res) => {
        res.writeHead(200, { "content-type": "text/html" });
        res.end(frameHtml(portalUrl));
      });
      servers.push(srv);
      srv.listen(port, "127.0.0.1", () => ok(srv));
    });
  await serve(embedPort);
  const other = await serve(0);
  const embedContext = await browser.newContext({ viewport: { width: 1100, height: 800 }, colorScheme: "dark" });
  page = await embedContext.newPage();
  page.setDefaultTimeout(10000);
  await page.goto(`http://127.0.0.1:${embedPort}/`);
  const framed = page.frameLocator("iframe");
  await framed.locator("h1:has-text('Webhooks for')").waitFor();
  const embedded = {
    heading: (await framed.locator("h1").first().textContent()).trim(),
    background: await framed.locator("html").evaluate((el) => getComputedStyle(el).backgroundColor),
  };
  await screenshot("portal-embedded-dark");
  await page.goto(`http://127.0.0.1:${other.address().port}/`);
  await page.waitForTimeout(1500);
  const child = page.frames().find((f) => f !== page.mainFrame());
  embedded.otherOriginFrameUrl = child ? child.url() : null;
  embedded.otherOriginHeading = child ? await child.locator("h1:has-text('Webhooks for')").count().catch(() => -1) : null;
  report.steps.embedded = embedded;
  await embedContext.close();
} catch (e) {
  await stopped(report, page, e);
} finally {
  for (const srv of servers) srv.close();
  await browser.close();
}
console.log(JSON.stringify(report));
