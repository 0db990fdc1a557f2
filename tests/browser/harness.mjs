// What the console's and the portal's browser scripts share: reading the environment,
// launching Debian's Chromium through playwright-core, and recording into one JSON
// report what the browser saw (errors, failed requests, error responses, dialogs,
// axe-core violations, measured screenshots). The scripts record; the Rust tests judge.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { join } from "node:path";

// A required environment variable.
export const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};

// The report every script prints, with the lists `watch` and the tools fill in.
export const newReport = () => ({
  steps: {},
  consoleErrors: [],
  pageErrors: [],
  failedRequests: [],
  errorResponses: [],
  requestUrls: [],
  dialogs: [],
  axe: {},
  screenshots: [],
});

// Headless Chromium (CHROMIUM, default /usr/bin/chromium) and the axe-core source, from
// the pinned packages in BROWSER_MODULES.
export async function launch() {
  const require = createRequire(join(env("BROWSER_MODULES"), "noop.js"));
  const { chromium } = require("playwright-core");
  const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-background-networking"],
  });
  return { browser, axeSource };
}

// Makes every event of `page` that the tests judge land in `report`; answers the page.
export function watch(report, page) {
  page.setDefaultTimeout(10000);
  page.on("console", (m) => {
    if (m.type() === "error") report.consoleErrors.push({ page: page.url(), url: m.location()?.url, text: m.text() });
  });
  page.on("pageerror", (e) => report.pageErrors.push(String(e)));
  page.on("request", (r) => report.requestUrls.push(r.url()));
  page.on("requestfailed", (r) => report.failedRequests.push({ url: r.url(), error: r.failure()?.errorText }));
  page.on("response", (r) => {
    if (r.status() >= 400) report.errorResponses.push({ url: r.url(), status: r.status() });
  });
  page.on("dialog", async (d) => {
    report.dialogs.push({ type: d.type(), message: d.message() });
    await d.dismiss();
  });
  return page;
}

// `axe(name)` and `screenshot(name)` for whatever page `current()` answers at the time;
// screenshots go to OUT_DIR and are measured in a blank page of `probeContext`.
export function pageTools(report, axeSource, probeContext, current) {
  const outDir = env("OUT_DIR");
  async function axe(name) {
    const page = current();
    await page.evaluate(axeSource);
    // eslint-disable-next-line no-undef
    const result = await page.evaluate(() => axe.run(document, { resultTypes: ["violations"] }));
    report.axe[name] = result.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.length }));
  }
  // A screenshot (the full page, or only the viewport with `{ fullPage: false }`),
  // measured: how many distinct colours, and how much of it is not the background colour.
  async function screenshot(name, { fullPage = true } = {}) {
    const path = join(outDir, `${name}.png`);
    const png = await current().screenshot({ path, fullPage });
    const probe = await probeContext.newPage();
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
  const text = async (sel) => (await current().locator(sel).first().textContent())?.trim();
  return { axe, screenshot, text };
}

// Records where and why a script stopped.
export async function stopped(report, page, e) {
  report.error = String(e && e.stack ? e.stack : e);
  report.at = page.url();
  report.errorsShown = await page.locator(".error, .field-error").allTextContents().catch(() => []);
}
