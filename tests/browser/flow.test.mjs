// tests/browser/flow.test.mjs - the console's whole flow through the UI, in a
// real browser against the real daemon and real registries (started by
// tests/e2e/console_flow.t): log in; add the two registries and test their
// connection; write a pull_post function in the editor that drops the
// -debug tags and reports them; compose a template that uses it; create a
// policy with that template, preview it, run it; watch the execution finish
// live; open a task and read its six stage results in template order, with
// the new function's output. Every main page is saved to build/screenshots.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { CONSOLE_URL, api, launch, login, shot } from "./lib.mjs";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set (run this through tests/e2e/console_flow.t)`);
  return v;
};
const SRC = { url: env("REG_SRC_URL"), user: env("REG_SRC_USER"), pass: env("REG_SRC_PASS") };
const DST = { url: env("REG_DST_URL"), user: env("REG_DST_USER"), pass: env("REG_DST_PASS") };

const FUNCTION = "distribution/drop_debug";
const FUNCTION_SRC = `-- distribution/drop_debug: a pull_post that drops the tags matching a
-- pattern (debug builds) before they are pushed, and reports them.
local PATTERN = "%-debug$"

return {
  description = "Drop the -debug tags and report them",
  run = function(ctx, input)
    local kept, dropped = {}, {}
    for _, a in ipairs(ctx.data.artifacts or {}) do
      if a.tag and a.tag:find(PATTERN) then
        dropped[#dropped + 1] = a.tag
      else
        kept[#kept + 1] = a
      end
    end
    ctx.data.artifacts = kept
    table.sort(dropped)
    return { pattern = PATTERN, dropped = dropped, kept = #kept }
  end,
}
`;
const TEMPLATE = "drop-debug";
const STAGES = [
  ["pull_prepare", "distribution/pull_prepare"],
  ["pull", "distribution/pull"],
  ["pull_post", FUNCTION],
  ["push_prepare", "distribution/push_prepare"],
  ["push", "distribution/push"],
  ["push_post", "distribution/verify"],
];

let b; // {browser, context, page, problems}
let page;
const ids = {};

before(async () => {
  b = await launch();
  page = b.page;
});

after(async () => {
  if (b) await b.browser.close();
});

// The tags a registry lists for repo (with Basic credentials).
async function tags(reg, repo) {
  const res = await fetch(`${reg.url}/v2/${repo}/tags/list`, {
    headers: { Authorization: "Basic " + Buffer.from(`${reg.user}:${reg.pass}`).toString("base64") },
  });
  if (res.status === 404) return [];
  return ((await res.json()).tags || []).sort();
}

// Follows the navigation bar's link named name.
async function nav(name) {
  await page.locator("header.top nav").getByRole("link", { name, exact: true }).click();
}

// Fills the registry form and saves it; back on the list.
async function addRegistry(name, reg) {
  await page.getByTestId("registry-new").click();
  await page.locator("#reg-name").fill(name);
  await page.locator("#reg-url").fill(reg.url);
  await page.locator("#reg-username").fill(reg.user);
  await page.locator("#reg-password").fill(reg.pass);
  await page.getByTestId("save").click();
  await page.locator(`[data-testid=registry-row][data-name="${name}"]`).waitFor();
}

test("1. log in with the token", async () => {
  await page.goto(CONSOLE_URL + "/");
  await page.waitForURL(/\/login\?next=%2F$/);
  await page.locator("#token").waitFor();
  await shot(page, "login");
  await login(page);
  await page.getByRole("heading", { name: "Dashboard" }).waitFor();
  assert.equal(await page.evaluate(() => document.cookie), "", "no cookie is set");
  assert.ok(await page.evaluate(() => sessionStorage.getItem("replica.token")), "the token is kept in sessionStorage");
  await shot(page, "dashboard-empty");
});

test("2. add the source and target registries and test their connection", async () => {
  await nav("Registries");
  await page.getByRole("heading", { name: "Registries" }).waitFor();
  await addRegistry("source", SRC);
  await addRegistry("target", DST);
  for (const name of ["source", "target"]) {
    const row = page.locator(`[data-testid=registry-row][data-name="${name}"]`);
    assert.equal(await row.locator("td").nth(4).innerText(), "set", `${name}: the list says a password is stored`);
    await row.getByTestId("registry-ping").click();
    await row.locator("[data-testid=ping-result][data-ok=true]").waitFor();
    assert.equal(await row.getByTestId("ping-result").innerText(), "connection ok");
  }
  const regs = (await api("GET", "/registries")).body;
  ids.src = regs.find((r) => r.name === "source").id;
  ids.dst = regs.find((r) => r.name === "target").id;
  await shot(page, "registries");

  // the password is write-only: the form never shows it, and an edit that
  // leaves it empty keeps it
  await page.locator('[data-testid=registry-row][data-name="source"] [data-testid=registry-link]').click();
  await page.locator("#reg-name").waitFor();
  assert.equal(await page.locator("#reg-password").inputValue(), "", "the password field is never prefilled");
  assert.match(await page.locator("#reg-password-help").innerText(), /A password is stored/);
  await page.locator("#reg-description").fill("the seeded registry");
  await shot(page, "registry-form");
  await page.getByTestId("save").click();
  const row = page.locator('[data-testid=registry-row][data-name="source"]');
  await row.getByText("the seeded registry").waitFor();
  await row.getByTestId("registry-ping").click();
  await row.locator("[data-testid=ping-result][data-ok=true]").waitFor();

  // a registry that does not answer says why, as text
  await addRegistry("nowhere", { url: "http://127.0.0.1:9", user: "u", pass: "p" });
  const bad = page.locator('[data-testid=registry-row][data-name="nowhere"]');
  await bad.getByTestId("registry-ping").click();
  await bad.locator("[data-testid=ping-result][data-ok=false]").waitFor();
  assert.match(await bad.getByTestId("ping-result").innerText(), /^failed: .+/);
  await bad.getByTestId("registry-delete").click();
  await page.getByTestId("confirm").waitFor();
  await page.getByTestId("confirm-ok").click();
  await bad.waitFor({ state: "detached" });
  assert.deepEqual(b.problems, []);
});

test("3. write a pull_post function in the editor", async () => {
  await nav("Functions");
  await page.getByTestId("function-new").click();
  await page.waitForURL(/\/functions\/new$/);
  await page.getByTestId("function-name").fill(FUNCTION);
  await page.locator("[data-testid=editor] .cm-content").click();
  // select all and delete first: typing over a selection of several lines
  // makes chromium's own editing add a style attribute, which the CSP
  // refuses (reported; the text still lands)
  await page.keyboard.press("Control+A");
  await page.keyboard.press("Delete");
  await page.keyboard.insertText(FUNCTION_SRC);
  await page.getByTestId("save").click();
  await page.getByTestId("save-status").filter({ hasText: /saved|version 1|v1/i }).waitFor();
  await shot(page, "function-editor");
  const f = await api("GET", `/functions/${FUNCTION}`);
  assert.equal(f.status, 200, "the function is stored");
  assert.equal(f.body.version, 1);
  assert.equal(f.body.source, FUNCTION_SRC, "with the source typed in the editor");
  assert.deepEqual(b.problems, []);
});

test("4. compose a template that uses it", async () => {
  await page.goto(CONSOLE_URL + "/templates/new");
  await page.getByTestId("template-name").fill(TEMPLATE);
  await page.getByTestId("template-description").fill("distribution, without the -debug tags");
  const slots = page.getByTestId("slot");
  while (await slots.count() < STAGES.length) await page.getByTestId("slot-add").click();
  while (await slots.count() > STAGES.length) await slots.last().getByTestId("slot-remove").click();
  for (const [i, [name, fn]] of STAGES.entries()) {
    const slot = slots.nth(i);
    await slot.getByTestId("slot-name").fill(name);
    const mode = slot.getByTestId("slot-mode");
    if (await mode.count()) await mode.selectOption("function");
    await slot.getByTestId("slot-function").selectOption(fn);
  }
  await page.getByTestId("template-lua").filter({ hasText: FUNCTION }).waitFor();
  await page.getByTestId("save").click();
  await page.getByTestId("save-status").filter({ hasText: /saved|version 1|v1/i }).waitFor();
  await shot(page, "template-composer");
  const t = await api("GET", `/templates/${TEMPLATE}`);
  assert.equal(t.status, 200, "the template is stored");
  assert.deepEqual(t.body.stages.map((s) => [s.name, s.function]), STAGES, "with the stages in the order composed");
  assert.deepEqual(b.problems, []);
});

test("5. create a policy with that template, preview it and run it", async () => {
  await nav("Policies");
  await page.getByTestId("policy-new").click();
  await page.locator("#pol-name").fill("team mirror");
  await page.locator("#pol-source").selectOption(String(ids.src));
  await page.locator("#pol-target").selectOption(String(ids.dst));
  await page.locator("#pol-repositories").fill("team/**");
  await page.locator("#pol-dest-namespace").fill("mirror");
  await page.locator("#pol-template").selectOption(TEMPLATE);
  // every field says what it does
  const fields = page.locator("form[data-testid=policy-form] .field");
  const n = await fields.count();
  assert.ok(n >= 16, `the form has its fields (${n})`);
  assert.equal(await page.locator("form[data-testid=policy-form] .field .help").count(), n, "each with a help text");
  const why = await page.getByTestId("preview-button-why").innerText();
  assert.equal(why, "save the policy first", "Preview says why it is disabled");
  assert.ok(await page.getByTestId("preview-button").isDisabled());
  await page.getByTestId("save").click();
  await page.waitForURL(/\/policies\/\d+$/);
  ids.policy = Number(page.url().match(/\/policies\/(\d+)$/)[1]);
  const p = (await api("GET", `/policies/${ids.policy}`)).body;
  assert.equal(p.template, TEMPLATE);
  assert.deepEqual(p.repositories, ["team/**"]);

  await page.getByTestId("preview-button").click();
  await page.getByTestId("preview").waitFor();
  const repos = page.getByTestId("preview-repo");
  assert.deepEqual(await repos.evaluateAll((rs) => rs.map((r) => r.dataset.repository)), ["team/app", "team/web"]);
  assert.equal(await repos.first().locator("td").nth(1).innerText(), "mirror/team/app", "with the target name");
  const actions = await page.getByTestId("preview-tag").evaluateAll((ts) => ts.map((t) => `${t.dataset.tag}:${t.dataset.action}`));
  assert.deepEqual(actions.sort(), ["v1-debug:copy", "v1-debug:copy", "v1:copy", "v1:copy", "v2:copy"],
    "every tag is to be copied: the target has none");
  assert.match(await page.getByTestId("preview-totals").innerText(), /2 repositories, 5 tags: 5 to copy, 0 up to date, 0 kept/);
  await shot(page, "policy-form-preview");
  assert.deepEqual(await tags(DST, "mirror/team/app"), [], "the preview copied nothing");

  await nav("Policies");
  await page.locator('[data-testid=policy-row][data-name="team mirror"]').waitFor();
  await shot(page, "policies");
  await page.locator('[data-testid=policy-row][data-name="team mirror"] [data-testid=policy-run]').click();
  await page.waitForURL(/\/executions\/\d+$/);
  ids.execution = Number(page.url().match(/\/executions\/(\d+)$/)[1]);
  assert.deepEqual(b.problems, []);
});

test("6. watch the execution finish live", async () => {
  // the page follows the event stream: nothing reloads it
  await page.locator("[data-testid=live][data-state=open]").waitFor();
  const navs = [];
  page.on("framenavigated", (f) => { if (f === page.mainFrame()) navs.push(f.url()); });
  await page.locator("[data-testid=execution-status][data-status=Succeeded]").waitFor({ timeout: 60000 });
  assert.deepEqual(navs, [], "the status changed in place");
  assert.match(await page.getByTestId("execution-counts").innerText(), /2 in all: 2 succeeded, 0 failed/);
  assert.match(await page.getByTestId("execution-template").innerText(), new RegExp(`^${TEMPLATE} v1`));
  assert.match(await page.getByTestId("execution-functions").innerText(), new RegExp(`${FUNCTION} v1`));
  await page.locator("[data-testid=task-row] [data-status=Succeeded]").nth(1).waitFor();
  await shot(page, "execution-detail");
  assert.deepEqual(await tags(DST, "mirror/team/app"), ["v1", "v2"], "the -debug tag was dropped");
  assert.deepEqual(await tags(DST, "mirror/team/web"), ["v1"]);

  // the dashboard and the list show it
  await nav("Dashboard");
  await page.locator(`[data-testid=recent] [data-testid=execution-row][data-id="${ids.execution}"] [data-status=Succeeded]`).waitFor();
  assert.equal(await page.locator("[data-testid=count][data-status=Succeeded] .n").innerText(), "1");
  await shot(page, "dashboard");
  await nav("Executions");
  await page.locator(`[data-testid=executions] [data-testid=execution-row][data-id="${ids.execution}"]`).waitFor();
  await shot(page, "executions");
  assert.deepEqual(b.problems, []);
});

test("7. open a task: six stage results in template order, with the new function's output", async () => {
  await page.goto(`${CONSOLE_URL}/executions/${ids.execution}`);
  await page.locator('[data-testid=task-row][data-repository="team/app"] [data-testid=task-link]').click();
  await page.waitForURL(/\/executions\/\d+\/tasks\/\d+/);
  const panel = page.getByTestId("task-panel");
  await panel.waitFor();
  const stages = panel.getByTestId("stage");
  await stages.nth(5).waitFor();
  assert.deepEqual(await stages.evaluateAll((s) => s.map((x) => `${x.dataset.name}:${x.dataset.status}`)),
    STAGES.map(([n]) => `${n}:succeeded`), "six stages in template order, all succeeded");
  assert.match(await stages.nth(2).getByTestId("stage-function").innerText(), new RegExp(`^${FUNCTION} v1 \\(user\\)`));
  await stages.nth(2).locator(":scope > summary").click();
  const out = stages.nth(2).getByTestId("stage-output");
  await out.waitFor();
  const text = await out.innerText();
  assert.match(text, /dropped/);
  assert.match(text, /"v1-debug"/, "the function's output says what it dropped");
  assert.match(await panel.getByTestId("task-log").innerText(), /stage push succeeded/, "the task log is shown");
  await shot(page, "task-detail");
  // a deep link opens the same view
  const url = page.url();
  await page.goto(url);
  await panel.getByTestId("stage").nth(5).waitFor();
  assert.deepEqual(b.problems, []);
});

test("8. log out; a deep link asks for the token again and returns there", async () => {
  await page.getByTestId("logout").click();
  await page.locator("#token").waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem("replica.token")), null, "the token is forgotten");
  const deep = `/executions/${ids.execution}`;
  await page.goto(CONSOLE_URL + deep);
  await page.waitForURL((u) => u.pathname === "/login" && u.searchParams.get("next") === deep);
  // a wrong token is refused with a message
  await page.locator("#token").fill("rpl_not-a-token");
  await page.locator("form button[type=submit]").click();
  await page.getByRole("alert").filter({ hasText: "That token is not valid." }).waitFor();
  assert.equal(b.problems.length, 1, "the refused token's 401 is the one console error");
  assert.match(b.problems.pop(), /status of 401/);
  await page.locator("#token").fill(process.env.TOKEN);
  await page.locator("form button[type=submit]").click();
  await page.waitForURL((u) => u.pathname === deep);
  await page.locator("[data-testid=execution-status][data-status=Succeeded]").waitFor();
  assert.deepEqual(b.problems, []);
});
