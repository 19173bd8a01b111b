// bench/console.mjs - the browser half of bench/console.sh: drives Debian's
// chromium (headless, through playwright-core from web/node_modules) against
// a running `replica serve`, and prints one JSON object with the figures.
//   node bench/console.mjs --url URL --token T --chromium PATH --playwright WEBDIR
//        --execution ID --tasks N --policy ID --reps N
// page: the execution page /executions/ID: the time from navigation start to
//   the first task rows being in the DOM and painted (a MutationObserver
//   installed before the console's script, then the next frame), in a fresh
//   context (cold cache) and then reloaded (warm); and the time from a click
//   on Next to the next page's rows being painted, through every page.
// run: the time from the start of PUT /functions/common/bench_pass (a new
//   version each time) to the execution POST /policies/ID/executions made
//   being Running (or finished) on the event stream (GET /events), with a
//   check that the execution pinned the version just saved.
import { createRequire } from "node:module";
import { join } from "node:path";
import { performance } from "node:perf_hooks";

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, "")] = process.argv[i + 1];
const { url, token } = args;
const API = `${url}/api/v1`;
const WARM_LOADS = 5;
const WAIT_MS = 30000;
const require = createRequire(join(args.playwright, "package.json"));
const { chromium } = require("playwright-core");

// {n, median, max, all} of a list of milliseconds.
function stats(list) {
  const s = [...list].sort((a, b) => a - b);
  return { n: s.length, median: s.length ? s[(s.length - 1) >> 1] : null, max: s.length ? s[s.length - 1] : null, all: list };
}

function fail(msg) {
  throw new Error(msg);
}

// ---- the execution page -----------------------------------------------------------

// Runs in the page before the console's script: the token (the console keeps
// it in sessionStorage), and a watcher that records when task rows first
// appear and the frame after that (window.__bench).
function init(t) {
  sessionStorage.setItem("replica.token", t);
  const b = (window.__bench = {});
  // resolves after the next frame is painted: rAF runs before the paint,
  // a task queued from it runs after
  b.afterPaint = () => new Promise((res) => requestAnimationFrame(() => setTimeout(res, 0)));
  const watch = new MutationObserver(() => {
    if (b.dom === undefined && document.querySelector('[data-testid="task-row"]')) {
      b.dom = performance.now();
      watch.disconnect();
      b.afterPaint().then(() => { b.painted = performance.now(); });
    }
  });
  watch.observe(document, { childList: true, subtree: true });
}

// Loads the execution page in page; returns {painted, dom, rows, api} (ms
// since navigation start) or null when no task row shows within WAIT_MS.
async function load(page, execution) {
  await page.goto(`${url}/executions/${execution}`);
  try {
    await page.waitForFunction(() => window.__bench && window.__bench.painted !== undefined, null, { timeout: WAIT_MS });
  } catch {
    return null;
  }
  return page.evaluate((id) => {
    const api = performance.getEntriesByType("resource").find((e) => e.name.includes(`/executions/${id}/tasks`));
    return { painted: window.__bench.painted, dom: window.__bench.dom,
             rows: document.querySelectorAll('[data-testid="task-row"]').length,
             api: api ? api.responseEnd - api.startTime : null };
  }, execution);
}

// Clicks Next; returns {ms, first, rows} once the first row is another task
// and painted, or null when there is no enabled Next link.
async function nextPage(page) {
  return page.evaluate(async (waitMs) => {
    const first = () => {
      const r = document.querySelector('[data-testid="task-row"]');
      return r ? r.dataset.id : undefined;
    };
    const next = document.querySelector('a[data-testid="task-pager-next"]');
    if (!next) return null;
    const before = first();
    const t0 = performance.now();
    await new Promise((res, rej) => {
      const check = () => {
        const f = first();
        if (f !== undefined && f !== before) { watch.disconnect(); clearTimeout(timer); res(); }
      };
      const watch = new MutationObserver(check);
      watch.observe(document.body, { childList: true, subtree: true, attributes: true });
      const timer = setTimeout(() => { watch.disconnect(); rej(new Error("the page did not change")); }, waitMs);
      next.click();
      check();
    });
    await window.__bench.afterPaint();
    const ms = performance.now() - t0;
    const api = performance.getEntriesByType("resource").filter((e) => e.name.includes("/tasks?") && e.startTime >= t0);
    return { ms, first: first(), rows: document.querySelectorAll('[data-testid="task-row"]').length,
             api: api.length ? api[api.length - 1].responseEnd - api[api.length - 1].startTime : null };
  }, WAIT_MS);
}

async function measurePage(browser) {
  const execution = args.execution;
  const ctx = await browser.newContext();
  await ctx.addInitScript(init, token);
  const page = await ctx.newPage();
  const cold = await load(page, execution);
  if (!cold) {
    await ctx.close();
    return { missing: `no task rows ([data-testid="task-row"]) at /executions/${execution} within ${WAIT_MS / 1000} s: the console has no execution page with a task list` };
  }
  const warm = [];
  const apis = [cold.api];
  for (let i = 0; i < WARM_LOADS; i++) {
    const r = await load(page, execution);
    if (!r) fail("a reload of the execution page showed no task rows");
    if (r.rows !== cold.rows) fail(`a reload showed ${r.rows} rows, the first load ${cold.rows}`);
    warm.push(r.painted);
    apis.push(r.api);
  }
  const changes = [], changeApis = [];
  const seen = new Set();
  let pages = 1, rows = cold.rows;
  for (;;) {
    const r = await nextPage(page);
    if (!r) break;
    if (seen.has(r.first)) fail(`page ${pages + 1} starts with task ${r.first} again`);
    seen.add(r.first);
    changes.push(r.ms);
    if (r.api !== null) changeApis.push(r.api);
    pages += 1;
    rows += r.rows;
  }
  await ctx.close();
  if (rows !== Number(args.tasks)) fail(`the pages listed ${rows} tasks, not ${args.tasks}`);
  return { rows: cold.rows, pages, first_cold: cold.painted, first_cold_dom: cold.dom, first_warm: stats(warm),
           tasks_api: stats(apis.filter((x) => x !== null)), change: stats(changes), change_api: stats(changeApis) };
}

// ---- save a function, start an execution ------------------------------------------

async function call(method, path, body) {
  const res = await fetch(API + path, {
    method, headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) fail(`${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

// Follows GET /events; returns {ready, when(id, statuses)}: when resolves to
// the time (performance.now()) the first event of execution id with one of
// the statuses arrived, also when it arrived before the call.
async function events() {
  const ctl = new AbortController();
  const res = await fetch(`${API}/events`, { headers: { Authorization: `Bearer ${token}` }, signal: ctl.signal });
  if (!res.ok) fail(`GET /events: ${res.status}`);
  const seen = new Map(); // id -> [{status, at}]
  const waiters = [];
  let buf = "";
  let ready;
  const readyP = new Promise((r) => { ready = r; });
  const settle = () => {
    for (let i = waiters.length - 1; i >= 0; i--) {
      const w = waiters[i];
      const hit = (seen.get(w.id) || []).find((e) => w.statuses.includes(e.status));
      if (hit) { waiters.splice(i, 1); w.resolve(hit.at); }
    }
  };
  (async () => {
    const dec = new TextDecoder();
    try {
      for await (const chunk of res.body) {
        buf += dec.decode(chunk, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          if (block.startsWith(": replica event stream")) ready();
          const type = /^event: (.*)$/m.exec(block);
          const data = /^data: (.*)$/m.exec(block);
          if (!type || type[1] !== "execution" || !data) continue;
          const ev = JSON.parse(data[1]);
          if (!seen.has(ev.id)) seen.set(ev.id, []);
          seen.get(ev.id).push({ status: ev.status, at: performance.now() });
        }
        settle();
      }
    } catch (e) {
      if (e.name !== "AbortError") throw e;
    }
  })();
  await readyP;
  return {
    when(id, statuses) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`execution ${id}: no ${statuses.join("/")} event`)), WAIT_MS);
        waiters.push({ id, statuses, resolve: (at) => { clearTimeout(timer); resolve(at); } });
        settle();
      });
    },
    close() { ctl.abort(); },
  };
}

async function measureRun() {
  const ev = await events();
  const total = [], put = [], post = [], start = [];
  const STARTED = ["Running", "Succeeded", "Failed", "Stopped"];
  for (let i = 1; i <= Number(args.reps); i++) {
    const source = `-- bench_pass: saved by bench/console.mjs, repetition ${i} at ${Date.now()}\n`
      + "return {\n  description = \"Pass the input on (the console benchmark)\",\n"
      + "  run = function(ctx, input) return input or {} end,\n}\n";
    const t0 = performance.now();
    const saved = await call("PUT", "/functions/common/bench_pass", { source });
    const t1 = performance.now();
    const created = await call("POST", `/policies/${args.policy}/executions`);
    const t2 = performance.now();
    const t3 = await ev.when(created.id, STARTED);
    total.push(t3 - t0);
    put.push(t1 - t0);
    post.push(t2 - t1);
    start.push(t3 - t2);
    await ev.when(created.id, ["Succeeded", "Failed", "Stopped"]);
    const e = await call("GET", `/executions/${created.id}`);
    if (e.status !== "Succeeded") fail(`execution ${created.id} ended ${e.status}: ${e.error || ""}`);
    const fn = (e.functions || []).find((f) => f.name === "common/bench_pass");
    if (!fn || fn.version !== saved.version || fn.origin !== "user") {
      fail(`execution ${created.id} runs ${JSON.stringify(fn)}, not the version just saved (${saved.version})`);
    }
  }
  ev.close();
  return { n: total.length, total: stats(total), put: stats(put), post: stats(post), start: stats(start) };
}

const browser = await chromium.launch({
  executablePath: args.chromium, headless: true, chromiumSandbox: false,
  args: ["--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-gpu"],
});
let out;
try {
  out = { page: await measurePage(browser) };
} finally {
  await browser.close();
}
out.run = await measureRun();
console.log(JSON.stringify(out));
