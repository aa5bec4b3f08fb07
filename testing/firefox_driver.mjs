// Debian's Firefox ESR for the Python page tests (testing/firefox.py), over WebDriver BiDi with npm
// puppeteer-core: no geckodriver, no downloaded browser.
//
// Usage: node testing/firefox_driver.mjs '<launch options as JSON>'
//   launch options: {executablePath, prefs: {...}} (prefs are Firefox about:config preferences)
// Then one JSON command per stdin line, {"id": 1, "op": "goto", "args": ["http://127.0.0.1:.../"]},
// and one JSON answer per stdout line, {"id": 1, "ok": true, "value": ...} or {"id": 1, "ok": false, "error": "..."}.
// The first stdout line is {"ready": true, "version": "..."} once the browser runs (or an error, then exit 1).
import process from "node:process";
import { createInterface } from "node:readline";
import puppeteer from "puppeteer-core";

const options = JSON.parse(process.argv[2] || "{}");
const requests = []; // every request the page made: {url, method, headers}; postData() throws under BiDi
const consoleLines = [];

function send(message) {
  process.stdout.write(JSON.stringify(message) + "\n");
}

let browser;
let page;
try {
  browser = await puppeteer.launch({
    browser: "firefox",
    executablePath: options.executablePath || "/usr/bin/firefox-esr",
    headless: true,
    extraPrefsFirefox: options.prefs || {},
  });
  page = await browser.newPage();
  page.on("request", (r) => requests.push({ url: r.url(), method: r.method(), headers: r.headers() }));
  page.on("console", (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  send({ ready: true, version: await browser.version() });
} catch (err) {
  send({ ready: false, error: String(err && err.stack ? err.stack : err) });
  process.exit(1);
}

// `source` is a function's source text; it is called in the page with `arg` and may return a promise.
// The answer travels as JSON (undefined becomes null).
async function evaluate(source, arg) {
  const json = await page.evaluate(
    `(async () => JSON.stringify((await (${source})(${JSON.stringify(arg ?? null)})) ?? null))()`,
  );
  return JSON.parse(json);
}

const ops = {
  goto: (url) => page.goto(url, { waitUntil: "load" }).then(() => null),
  reload: () => page.reload({ waitUntil: "load" }).then(() => null),
  evaluate,
  click: (selector) => page.click(selector),
  fill: async (selector, value) => {
    await page.$eval(selector, (el) => { el.value = ""; });
    await page.type(selector, value);
  },
  // A phone-sized window (CSS pixels); Firefox has no touch emulation over BiDi, the width is what counts.
  viewport: (width, height) => page.setViewport({ width, height }).then(() => null),
  screenshot: (path) => page.screenshot({ path }).then(() => null),
  requests: () => requests,
  console: () => consoleLines,
  version: () => browser.version(),
};

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  const { id, op, args = [] } = JSON.parse(line);
  if (op === "close") break;
  try {
    if (!(op in ops)) throw new Error(`unknown op ${op}`);
    send({ id, ok: true, value: (await ops[op](...args)) ?? null });
  } catch (err) {
    send({ id, ok: false, error: String(err && err.message ? err.message : err) });
  }
}
await browser.close();
process.exit(0);
