// Drives hookline's operator console in headless Chromium (Debian's package) with
// playwright-core, as an operator would, and prints one JSON report on stdout for the
// Rust end-to-end test (crates/hookline/tests/e2e/console.rs) to assert on. The script
// itself judges nothing it can leave to the test; it records what the browser saw.
//
// Environment: HOOKLINE_URL, HOOKLINE_TOKEN (admin), RECEIVER_URL (a loopback receiver
// answering 200), BROWSER_MODULES (the node_modules folder holding playwright-core and
// axe-core), OUT_DIR (screenshots), CHROMIUM (default /usr/bin/chromium).
import { env, launch, newReport, pageTools, stopped, watch } from "./harness.mjs";

const base = env("HOOKLINE_URL");
const token = env("HOOKLINE_TOKEN");
const receiver = env("RECEIVER_URL");

const report = newReport();
const { browser, axeSource } = await launch();
const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
const page = watch(report, await context.newPage());
const { axe, screenshot, text } = pageTools(report, axeSource, context, () => page);

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
  // The attempt is recorded a moment before the delivery's state moves on: wait for both.
  let status = null;
  let delivery = null;
  for (let i = 0; i < 40 && (status !== "200" || delivery !== "success"); i++) {
    if (i > 0) {
      await page.waitForTimeout(250);
      await page.goto(messageUrl);
    }
    status = (await page.locator("table.attempts td.status").first().textContent().catch(() => null))?.trim() ?? null;
    delivery = (await page.locator("td .badge").first().textContent().catch(() => null))?.trim() ?? null;
  }
  report.steps.example = {
    url: messageUrl,
    attemptStatus: status,
    delivery,
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

  // Edit the endpoint's settings: the API's message next to the URL, then saved.
  await page.fill("#f-url", "not a url either");
  await page.click("form[action$='/settings'] button[type=submit]");
  report.steps.editBad = { error: await text("#f-url-error"), url: page.url() };
  await page.fill("#f-url", receiver + "?edited=1");
  await page.fill("#f-timeoutMs", "2000");
  await page.click("form[action$='/settings'] button[type=submit]");
  await page.waitForURL(/done=saved/);
  report.steps.editGood = { notice: await text(".notice"), url: await page.inputValue("#f-url") };

  // The endpoint's charts, now that it has attempts.
  report.steps.charts = {
    okBars: await page.locator("svg.chart rect.bar.ok").count(),
    labels: await page.locator("svg.chart[role=img]").count(),
  };
  await axe("endpoint-activity");
  await screenshot("console-endpoint-activity");

  // Event types: an invalid schema shows the API's message; a valid one is created.
  await page.goto(base + "/event-types");
  await page.fill("#f-name", "order.created");
  await page.fill("#f-description", "An order was placed");
  await page.fill("#f-schemas", '{"1": {"type": "objekt"}}');
  await page.click("form[action='/event-types'] button[type=submit]");
  report.steps.badSchema = { error: await text("#f-schemas-error") };
  await page.fill("#f-schemas", '{"1": {"type": "object", "properties": {"id": {"type": "string"}}}}');
  await page.click("form[action='/event-types'] button[type=submit]");
  await page.waitForURL(/\/event-types\/order\.created/);
  report.steps.eventType = { heading: await text("h1"), notice: await text(".notice") };
  await axe("event-type");
  await screenshot("console-event-type");
  await page.goto(base + "/event-types");
  await page.click("details.schema summary");
  await axe("event-types");
  await screenshot("console-event-types");

  // The system page.
  await page.goto(base + "/system");
  report.steps.system = { heading: await text("h1"), charts: await page.locator("svg.chart").count() };
  await axe("system");
  await screenshot("console-system");

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

  // The message log filtered by event type.
  await page.fill("#f-eventTypes", "xss.test");
  await page.click("form.filters button[type=submit]");
  await page.waitForURL(/eventTypes=xss\.test/);
  report.steps.filter = { rows: await page.locator("section[aria-labelledby=messages] tbody tr").count() };
  await page.goto(appUrl);

  // Keyboard: Tab from the top reaches the skip link, then the navigation.
  const focused = () => page.evaluate(() => document.activeElement?.textContent?.trim());
  await page.keyboard.press("Tab");
  const firstFocus = await focused();
  const nav = [];
  for (let i = 0; i < 4; i++) {
    await page.keyboard.press("Tab");
    nav.push(await focused());
  }
  report.steps.keyboard = { first: firstFocus, nav };

  // Sign out: the console asks for a token again.
  await page.click("form.signout button");
  await page.waitForURL(base + "/");
  await page.goto(base + "/apps");
  report.steps.signOut = { url: page.url(), tokenField: await page.locator("#token").count() };
} catch (e) {
  await stopped(report, page, e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
