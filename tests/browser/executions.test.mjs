// tests/browser/executions.test.mjs - the execution pages in a real browser
// against the real daemon (set up by tests/e2e/console_executions.t): Stop
// in the middle of a slow blob shows Stopped within a second; Retry re-runs
// only the failed task; markup in a FaaS stage's answer shows as text and
// runs nothing; an execution of 1,000 tasks pages and stays responsive.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, renameSync, statSync } from "node:fs";
import { join } from "node:path";
import { CONSOLE_URL, api, launch, login, shot, waitFor } from "./lib.mjs";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set (run this through tests/e2e/console_executions.t)`);
  return v;
};
const SRC_ID = Number(env("SRC_ID"));
const DST_ID = Number(env("DST_ID"));
const DST = { url: env("REG_DST_URL"), user: env("REG_DST_USER"), pass: env("REG_DST_PASS") };

let b;
let page;

before(async () => {
  b = await launch();
  page = b.page;
  await login(page);
});

after(async () => {
  if (b) await b.browser.close();
});

// Creates a policy from the two registries with the given fields; returns its id.
async function policy(fields) {
  const r = await api("POST", "/policies", { source_registry: SRC_ID, target_registry: DST_ID, dest_namespace: "mirror", ...fields });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  return r.body.id;
}

// Starts a run of policy id through the API; returns the execution id.
async function run(id) {
  const r = await api("POST", `/policies/${id}/executions`);
  assert.equal(r.status, 202, JSON.stringify(r.body));
  return r.body.id;
}

// Waits (API side) until execution id has one of the statuses; returns it.
function finished(id, statuses = ["Succeeded", "Failed", "Stopped"]) {
  return waitFor(async () => {
    const e = (await api("GET", `/executions/${id}`)).body;
    return statuses.includes(e.status) && e;
  }, { timeout: 60000, what: `execution ${id} to finish` });
}

// The HTTP status of a manifest on the target registry.
async function targetManifest(repo, tag) {
  const res = await fetch(`${DST.url}/v2/${repo}/manifests/${tag}`, {
    method: "HEAD",
    headers: { Authorization: "Basic " + Buffer.from(`${DST.user}:${DST.pass}`).toString("base64"),
               Accept: "application/vnd.oci.image.manifest.v1+json" },
  });
  return res.status;
}

// The bytes in the target registry's unfinished uploads to repo (its storage).
function uploaded(repo) {
  const dir = join(env("REG_DST_STORAGE"), "docker/registry/v2/repositories", repo, "_uploads");
  let n = 0;
  try {
    for (const u of readdirSync(dir)) {
      try { n += statSync(join(dir, u, "data")).size; } catch { /* not started */ }
    }
  } catch { /* no upload yet */ }
  return n;
}

// {repository: attempts} of an execution's tasks.
async function attempts(id) {
  const tasks = (await api("GET", `/executions/${id}/tasks`)).body;
  return Object.fromEntries(tasks.map((t) => [t.repository, t.attempts]));
}

test("Stop in the middle of a slow blob copy shows Stopped within a second", async (t) => {
  const id = await run(await policy({ name: "slow", repositories: ["big/**"], bandwidth_kbps: 256 }));
  await page.goto(`${CONSOLE_URL}/executions/${id}`);
  await page.locator("[data-testid=live][data-state=open]").waitFor();
  // the 64 MiB layer is under way: more than 256 KiB of it sits in the
  // target's upload (the event stream counts a blob's bytes when it ends)
  await waitFor(() => uploaded("mirror/big/blob") > 256 * 1024, { timeout: 30000, what: "the upload to pass 256 KiB" });
  await page.locator('[data-testid=task-row][data-repository="big/blob"] [data-status=Running]').waitFor();
  assert.equal(await page.getByTestId("execution-status").getAttribute("data-status"), "Running");
  assert.ok(await page.getByTestId("retry").isDisabled(), "Retry is disabled while it runs");
  assert.equal(await page.getByTestId("retry-why").innerText(), "it is still running");
  await page.getByTestId("stop").click();
  await page.getByTestId("confirm").waitFor();
  await shot(page, "execution-stop-confirm");
  const t0 = Date.now();
  await page.getByTestId("confirm-ok").click();
  await page.locator("[data-testid=execution-status][data-status=Stopped]").waitFor({ timeout: 5000 });
  const ms = Date.now() - t0;
  t.diagnostic(`Stopped shown ${ms} ms after the click`);
  assert.ok(ms < 1000, `Stopped shown ${ms} ms after the click`);
  await page.locator('[data-testid=task-row][data-repository="big/blob"] [data-status=Stopped]').waitFor();
  assert.ok(await page.getByTestId("stop").isDisabled(), "Stop is disabled once stopped");
  const e = (await api("GET", `/executions/${id}`)).body;
  assert.equal(e.status, "Stopped");
  assert.equal(e.stopped, 1);
  assert.equal(await targetManifest("mirror/big/blob", "v1"), 404, "no manifest was pushed for the cut-off blob");
  await shot(page, "execution-stopped");
  assert.deepEqual(b.problems, []);
});

test("Retry re-runs only the failed task", async () => {
  const id = await run(await policy({ name: "team", repositories: ["team/**"] }));
  await finished(id);
  await page.goto(`${CONSOLE_URL}/executions/${id}`);
  await page.locator("[data-testid=execution-status][data-status=Failed]").waitFor();
  const failedRow = page.locator('[data-testid=task-row][data-repository="team/b"]');
  await failedRow.locator("[data-status=Failed]").waitFor();
  assert.match(await failedRow.locator("td.err").innerText(), /push/, "the failed task's error is in its row");
  assert.deepEqual(await attempts(id), { "team/a": 1, "team/b": 1, "team/c": 1 });
  await shot(page, "execution-failed");

  // the source has its blob again; Retry (confirmed) runs team/b only
  renameSync(process.env.HELD_BLOB + ".held", process.env.HELD_BLOB);
  await page.getByTestId("retry").click();
  await page.getByTestId("confirm").getByText("Runs its 1 failed or stopped task again").waitFor();
  await page.getByTestId("confirm-ok").click();
  await page.locator("[data-testid=execution-status][data-status=Succeeded]").waitFor({ timeout: 60000 });
  await failedRow.locator("[data-status=Succeeded]").waitFor();
  assert.deepEqual(await attempts(id), { "team/a": 1, "team/b": 2, "team/c": 1 },
    "only the failed task ran again");
  assert.equal(await targetManifest("mirror/team/b", "v1"), 200, "team/b is on the target now");
  assert.match(await page.getByTestId("execution-counts").innerText(), /3 in all: 3 succeeded, 0 failed/);
  assert.deepEqual(b.problems, []);
});

test("markup from a FaaS stage (its output and its error) is shown as text, and runs nothing", async () => {
  const faas = env("FAAS_URL");
  const t = await api("PUT", "/templates/faas-gate", {
    description: "a FaaS report and gate after the pull",
    stages: [{ name: "pull_prepare", function: "distribution/pull_prepare" }, { name: "pull", function: "distribution/pull" },
             { name: "report", remote: `${faas}/output` }, { name: "gate", remote: `${faas}/refuse` }],
  });
  assert.ok(t.status === 201 || t.status === 200, JSON.stringify(t.body));
  const id = await run(await policy({ name: "gated", repositories: ["team/a"], template: "faas-gate" }));
  await finished(id);
  const [task] = (await api("GET", `/executions/${id}/tasks`)).body;
  await page.goto(`${CONSOLE_URL}/executions/${id}/tasks/${task.id}`);
  const panel = page.getByTestId("task-panel");
  const gate = panel.locator('[data-testid=stage][data-name="gate"]');
  await gate.getByTestId("stage-error").waitFor(); // a failed stage is open by itself
  assert.match(await gate.getByTestId("stage-error").innerText(), /http 500 <img src=x onerror=window\.__xss=1> the gate refused/);
  assert.match(await panel.getByTestId("task-error").innerText(), /<img src=x onerror=window\.__xss=1>/);
  assert.match(await page.locator(`[data-testid=task-row][data-id="${task.id}"] td.err`).innerText(), /<img src=x/);
  const report = panel.locator('[data-testid=stage][data-name="report"]');
  await report.locator(":scope > summary").click();
  const out = await report.getByTestId("stage-output").innerText();
  assert.match(out, /"<img src=x onerror=window\.__xss=2>"/, "the output's values are text");
  assert.match(out, /<img src=x onerror=window\.__xss=3>/, "and so are its keys");
  assert.match(out, /<script>window\.__xss=4<\/script>/);
  await panel.getByTestId("task-log").filter({ hasText: "<img src=x onerror=window.__xss=1>" }).waitFor();
  assert.equal(await page.evaluate(() => window.__xss), undefined, "no injected handler or script ran");
  assert.equal(await page.locator("img[src=x]").count(), 0, "no element was made from the markup");
  assert.equal(await page.locator("main script").count(), 0);
  await shot(page, "execution-untrusted-text");
  assert.deepEqual(b.problems, []);
});

test("an execution of 1,000 tasks is paged and stays responsive", async (t) => {
  const id = env("THOUSAND_EXEC");
  await page.goto(`${CONSOLE_URL}/executions/${id}`);
  const rows = page.getByTestId("task-row");
  await rows.first().waitFor();
  assert.equal(await rows.count(), 50, "one page of rows is drawn");
  assert.equal(await page.getByTestId("task-pager-where").innerText(), "page 1 of 20");
  assert.match(await page.getByTestId("execution-counts").innerText(), /1000 in all: 990 succeeded, 10 failed/);
  await shot(page, "execution-1000-tasks");

  let t0 = Date.now();
  await page.getByTestId("task-pager-last").click();
  await page.locator('[data-testid=task-row][data-repository="bulk/repo-1000"]').waitFor();
  const toLast = Date.now() - t0;
  assert.equal(await page.getByTestId("task-pager-where").innerText(), "page 20 of 20");
  assert.equal(await rows.count(), 50);
  assert.equal(await rows.first().getAttribute("data-repository"), "bulk/repo-0951");
  assert.match(page.url(), /[?&]page=20\b/, "the page is in the URL");
  t.diagnostic(`the last page drew in ${toLast} ms`);
  assert.ok(toLast < 1500, `the last page drew in ${toLast} ms`);

  t0 = Date.now();
  await page.locator('[data-testid=task-row][data-repository="bulk/repo-1000"] [data-testid=task-link]').click();
  await page.getByTestId("task-panel").getByTestId("stage").nth(5).waitFor();
  const toTask = Date.now() - t0;
  t.diagnostic(`the task opened in ${toTask} ms`);
  assert.ok(toTask < 1000, `the task opened in ${toTask} ms`);
  const stage = page.locator('[data-testid=stage][data-name="push"]');
  assert.equal(await stage.getAttribute("data-status"), "failed");
  assert.ok(await stage.evaluate((d) => d.open), "the failed stage is open");
  assert.equal(await stage.getByTestId("stage-error").innerText(), "http 500 UNKNOWN");

  t0 = Date.now();
  await page.getByTestId("task-filter").selectOption("Failed");
  await page.locator('[data-testid=task-row][data-repository="bulk/repo-0100"]').waitFor();
  assert.ok(Date.now() - t0 < 1000, "the filter answers quickly");
  assert.equal(await rows.count(), 10, "the ten failed tasks");
  assert.equal(await page.getByTestId("task-pager-where").innerText(), "page 1 of 1");
  await shot(page, "execution-1000-failed");

  // a deep link to the same view: the task panel and the task list load
  // apart, so each is waited for
  await page.goto(page.url());
  await page.getByTestId("task-panel").getByTestId("stage").nth(5).waitFor();
  await page.locator('[data-testid=task-row][data-repository="bulk/repo-0100"]').waitFor();
  assert.equal(await rows.count(), 10, "the deep link shows the ten failed tasks");
  assert.equal(await page.getByTestId("task-filter").inputValue(), "Failed", "the filter shows what the URL says");
  assert.deepEqual(b.problems, []);
});

test("the executions list filters by policy, status and trigger, from the URL", async () => {
  const policies = (await api("GET", "/policies")).body;
  const slow = policies.find((p) => p.name === "slow").id;
  const team = policies.find((p) => p.name === "team").id;
  const ids = async () => (await page.getByTestId("execution-row").evaluateAll((rs) => rs.map((r) => Number(r.dataset.id))));
  const all = (await api("GET", "/executions")).body;
  const stopped = all.filter((e) => e.status === "Stopped").map((e) => e.id);

  await page.goto(`${CONSOLE_URL}/executions?status=Stopped`);
  await page.getByTestId("execution-row").first().waitFor();
  assert.deepEqual(await ids(), stopped, "a deep link with a status filter lists only those");
  assert.equal(await page.getByTestId("filter-status").inputValue(), "Stopped", "the filter shows what the URL says");
  assert.match(await page.getByTestId("page-counts").innerText(), /Stopped 1/);

  // Waits until the list shows exactly the executions want (ids, in order):
  // an answer for a filter set a moment before may be drawn first.
  const shows = (want) => page.waitForFunction((w) => JSON.stringify(
    [...document.querySelectorAll("[data-testid=execution-row]")].map((r) => Number(r.dataset.id))) === w,
    JSON.stringify(want), { timeout: 10000 });
  await page.getByTestId("filter-status").selectOption("");
  await page.getByTestId("filter-policy").selectOption(String(team));
  await page.waitForURL((u) => u.search === `?policy=${team}`);
  await shows(all.filter((e) => e.policy === team).map((e) => e.id));
  assert.deepEqual(await ids(), all.filter((e) => e.policy === team).map((e) => e.id));
  await shot(page, "executions-filtered");

  await page.goto(`${CONSOLE_URL}/executions?policy=${slow}&trigger=cron`);
  await page.getByTestId("no-executions").waitFor();
  assert.match(await page.getByTestId("no-executions").innerText(), /match these filters/);
  await page.getByTestId("filter-trigger").selectOption("manual");
  await page.waitForURL((u) => u.search === `?policy=${slow}&trigger=manual`);
  await shows(all.filter((e) => e.policy === slow).map((e) => e.id));
  assert.deepEqual(await ids(), all.filter((e) => e.policy === slow).map((e) => e.id));
  assert.deepEqual(b.problems, []);
});

test("buttons that cannot act say why", async () => {
  const id = await policy({ name: "off", repositories: ["team/a"], enabled: false });
  await page.goto(`${CONSOLE_URL}/policies`);
  const row = page.locator('[data-testid=policy-row][data-name="off"]');
  await row.waitFor();
  assert.ok(await row.getByTestId("policy-run").isDisabled(), "Run now is disabled for a disabled policy");
  assert.equal(await row.getByTestId("policy-run-why").innerText(), "the policy is disabled");
  assert.equal(await row.getByTestId("policy-run").getAttribute("title"), "the policy is disabled");
  await page.goto(`${CONSOLE_URL}/policies/${id}`);
  await page.locator("#pol-name").waitFor();
  assert.equal(await page.getByTestId("policy-run-why").innerText(), "the policy is disabled");
  // an unsaved edit disables Preview and Run now until it is saved
  await page.locator("#pol-enabled").check();
  assert.equal(await page.getByTestId("policy-run-why").innerText(), "save your changes first");
  assert.equal(await page.getByTestId("preview-button-why").innerText(), "save your changes first");
  await page.getByTestId("save").click();
  await page.getByTestId("policy-run-why").waitFor({ state: "detached" });
  assert.ok(!(await page.getByTestId("policy-run").isDisabled()), "saved and enabled: Run now works");
  assert.equal((await api("GET", `/policies/${id}`)).body.enabled, true);
  assert.deepEqual(b.problems, []);
});
