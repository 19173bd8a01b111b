// tests/browser/lib.mjs - what the console's browser tests share: Debian's
// chromium driven by playwright-core (from web/node_modules), logging in,
// screenshots, API calls with the test's token, and polling an API-side
// condition. The .t wrapper (tests/e2e/console_*.t) starts real registries
// and `replica serve`, then exports:
//   CONSOLE_URL  http://127.0.0.1:PORT (the console at /, the API at /api/v1)
//   TOKEN        the daemon's admin token
//   ROOT         the repository root (screenshots go to $ROOT/build/screenshots)
// plus the registries' REG_<NAME>_URL, _USER, _PASS.
import { createRequire } from "node:module";
import { mkdirSync } from "node:fs";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = process.env.ROOT || resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const CONSOLE_URL = (process.env.CONSOLE_URL || "").replace(/\/+$/, "");
export const TOKEN = process.env.TOKEN || "";
export const CHROMIUM = process.env.CHROMIUM || "/usr/lib/chromium/chromium";

const require = createRequire(join(ROOT, "web", "package.json"));
const { chromium } = require("playwright-core");

// Runs in every page before its scripts: reports CSP violations as console
// errors, so that they land in `problems` like any other error.
const INIT = () => {
  document.addEventListener("securitypolicyviolation", (e) => {
    const what = e.target && e.target.nodeType === 1 ? ` on <${e.target.localName} class="${e.target.className}">` : "";
    console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || "inline"}${what}` +
      ` at ${e.sourceFile || "?"}:${e.lineNumber || 0}${e.sample ? ` (${e.sample})` : ""}`);
  });
};

// Starts headless chromium with a fresh context and one page. problems
// collects page errors, console errors and CSP violations (each a string);
// a test asserts it stays empty. opts.viewport overrides 1280x900.
export async function launch(opts = {}) {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    chromiumSandbox: false,
    args: ["--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--no-first-run", "--disable-gpu"],
  });
  const context = await browser.newContext({ viewport: opts.viewport || { width: 1280, height: 900 } });
  await context.addInitScript(INIT);
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    const url = (m.location() && m.location().url) || "";
    // the browser asks for /favicon.ico by itself; the console has none
    if (url.endsWith("/favicon.ico")) return;
    problems.push(`console error: ${m.text()}${url ? ` (${url})` : ""}`);
  });
  return { browser, context, page, problems };
}

// Logs in through the login page with token (default TOKEN) and waits for
// the navigation bar of the console.
export async function login(page, token = TOKEN) {
  await page.goto(CONSOLE_URL + "/login");
  await page.locator("#token").fill(token);
  await page.locator("form button[type=submit]").click();
  await page.locator("header.top nav").waitFor();
}

// Saves a full-page screenshot as $ROOT/build/screenshots/<name>.png.
export async function shot(page, name) {
  const dir = join(ROOT, "build", "screenshots");
  mkdirSync(dir, { recursive: true });
  await page.screenshot({ path: join(dir, `${name}.png`), fullPage: true });
}

// Calls the API with TOKEN: api("POST", "/registries", {...}) resolves to
// {status, body}, body decoded from JSON when it is JSON, else the text.
export async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${TOKEN}`, Accept: "application/json" };
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = typeof body === "string" ? body : JSON.stringify(body);
  }
  const res = await fetch(CONSOLE_URL + "/api/v1" + path, init);
  const text = await res.text();
  let data = text;
  if ((res.headers.get("content-type") || "").includes("application/json") && text !== "") {
    try { data = JSON.parse(text); } catch { data = text; }
  }
  return { status: res.status, body: data };
}

// Polls fn (sync or async) until it returns something truthy and resolves
// to that; rejects after opts.timeout ms (default 30000). For API-side
// conditions only: in the page, wait on locators.
export async function waitFor(fn, { timeout = 30000, interval = 50, what = "condition" } = {}) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
      last = v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`waitFor: ${what} not met after ${timeout} ms (last: ${last})`);
    await new Promise((r) => setTimeout(r, interval));
  }
}
