// tests/browser/editor.test.mjs - the console's Functions and Templates
// pages in headless Chromium against a real `replica serve` (started by
// tests/e2e/console_editor.t with two real registries): a function written
// from the skeleton and saved as versions, the history with its diff and a
// revert, a syntax error shown in the gutter at its line and not saved,
// reset to bundled, the template composer, the 409 of a delete that a
// policy's template needs, a draft run, and a save while an execution runs
// that leaves that execution on the version it started with.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { launch, login, shot, api, waitFor, CONSOLE_URL, ROOT } from "./lib.mjs";
import { formFrom, formFromLua, putBody, templateLua } from "../../web/src/composer.js";

let browser, page, problems;
let policyId = null;   // the policy whose template runs test/gate
const SRC = process.env.REG_SRC_URL, DST = process.env.REG_DST_URL;

// The test's gate: a stage polls it and finishes once it answers 200.
let gateOpen = false, gateHits = 0, gate, GATE_URL;

// Starts the gate server and the browser, and logs in.
before(async () => {
  assert.ok(CONSOLE_URL, "CONSOLE_URL is set");
  gate = http.createServer((req, res) => {
    gateHits++;
    res.writeHead(gateOpen ? 200 : 503, { "Content-Type": "text/plain" });
    res.end(gateOpen ? "open" : "closed");
  });
  await new Promise((r) => gate.listen(0, "127.0.0.1", r));
  GATE_URL = `http://127.0.0.1:${gate.address().port}/gate`;
  ({ browser, page, problems } = await launch());
  await login(page);
});

// Closes what before() opened.
after(async () => {
  if (browser) await browser.close();
  if (gate) gate.close();
});

// Opens a console page and waits until it has loaded what testid marks.
async function open(path, testid) {
  await page.goto(CONSOLE_URL + path);
  if (testid) await page.getByTestId(testid).first().waitFor();
}

// Replaces the editor's whole text the way a user pasting does: select all,
// then a paste event that CodeMirror handles (no browser editing command,
// which would add inline styles to the content and trip the CSP).
async function paste(text) {
  const content = page.getByTestId("editor").locator(".cm-content");
  await content.click();
  await page.keyboard.press("Control+a");
  await content.evaluate((el, t) => {
    const dt = new DataTransfer();
    dt.setData("text/plain", t);
    el.dispatchEvent(new ClipboardEvent("paste", { clipboardData: dt, bubbles: true, cancelable: true }));
  }, text);
}

// The function's current state through the API.
async function fn(name) {
  const r = await api("GET", `/functions/${name}`);
  assert.equal(r.status, 200, `GET /functions/${name}: ${JSON.stringify(r.body)}`);
  return r.body;
}

// The error answers a test provokes on purpose: Chromium logs each as a
// console error ("Failed to load resource"), which the last test excuses
// one for one, and only those.
const provoked = [];
function provoke(status, method, path) {
  provoked.push({ status, text: `status of ${status} `, url: `${CONSOLE_URL}/api/v1${path})`, method });
}

// Waits until save-status says text.
async function saveStatus(text) {
  await page.getByTestId("save-status").filter({ hasText: text }).waitFor();
}

test("the functions list groups functions by kind with origin and version", async () => {
  await open("/functions", "function-link");
  const kinds = await page.getByTestId("function-group").evaluateAll((els) => els.map((e) => e.dataset.kind));
  assert.deepEqual(kinds, ["common", "distribution"], "one group per kind, sorted");
  const row = page.locator('[data-testid=function-row][data-name="distribution/pull_post"]');
  assert.equal(await row.getByTestId("origin").innerText(), "bundled");
  assert.equal(await row.getByTestId("function-version").innerText(), "0");
  assert.equal(await row.getByTestId("function-link").getAttribute("href"), "/functions/distribution/pull_post");
  assert.match(await row.innerText(), /Filter platforms and drop foreign layers/, "the description is shown");
  await shot(page, "functions-list");
});

let v1Source;

test("a new function from the skeleton saves as version 1", async () => {
  await open("/functions", "function-new");
  await page.getByTestId("function-new").click();
  await page.waitForURL(CONSOLE_URL + "/functions/new");
  const content = page.getByTestId("editor").locator(".cm-content");
  await content.filter({ hasText: "run = function(ctx, input)" }).waitFor();
  assert.match(await content.innerText(), /ctx\.task/, "the skeleton explains ctx");
  assert.equal(await page.getByTestId("save").isDisabled(), true, "no Save before the function has a name");
  await page.getByTestId("function-name").fill("test/hello");
  await page.getByTestId("save").click();
  await page.waitForURL(CONSOLE_URL + "/functions/test/hello");
  await saveStatus("Saved version 1");
  const f = await fn("test/hello");
  assert.equal(f.version, 1);
  assert.equal(f.origin, "user");
  assert.match(f.source, /run = function\(ctx, input\)/, "the skeleton's source was saved");
  const check = await api("POST", "/validate", { kind: "function", source: f.source });
  assert.deepEqual(check.body, { ok: true, diagnostics: [] }, "the skeleton is a valid stage");
  v1Source = f.source;
});

test("an edit saves as version 2; the history lists both and the diff shows the changed line", async () => {
  assert.ok(v1Source, "version 1 exists");
  await paste(v1Source.replace("return input or {}", "return { hello = 2 }"));
  await page.getByTestId("dirty").waitFor();
  await page.getByTestId("save").click();
  await saveStatus("Saved version 2");
  assert.equal(await page.getByTestId("dirty").count(), 0, "no unsaved mark after the save");
  assert.equal((await fn("test/hello")).version, 2);
  await page.locator('[data-testid=version-row][data-version="1"]').waitFor();
  const versions = await page.getByTestId("version-row").evaluateAll((els) => els.map((e) => e.dataset.version));
  assert.deepEqual(versions, ["2", "1"], "both versions, newest first");
  const v1 = page.locator('[data-testid=version-row][data-version="1"]');
  assert.match(await v1.innerText(), /\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\s+admin/,
    "each version shows when it was saved (UTC) and by which token");
  await page.getByTestId("diff-a").selectOption("1");
  await page.getByTestId("diff-b").selectOption("2");
  await page.getByTestId("diff-show").click();
  const diff = page.getByTestId("diff");
  await diff.locator(".cm-merge-b .cm-changedLine").filter({ hasText: "return { hello = 2 }" }).waitFor();
  await diff.locator(".cm-merge-a .cm-changedLine").filter({ hasText: "return input or {}" }).waitFor();
  assert.equal(await diff.locator(".cm-merge-b .cm-changedLine").count(), 1, "one changed line on the new side");
  await diff.scrollIntoViewIfNeeded();
  await shot(page, "function-diff");
});

test("revert to version 1, then save: version 3 has version 1's source", async () => {
  await page.locator('[data-testid=revert][data-version="1"]').click();
  await page.getByTestId("dirty").waitFor();
  await page.getByTestId("save").click();
  await saveStatus("Saved version 3");
  const v3 = await api("GET", "/functions/test/hello/versions/3");
  assert.equal(v3.body.source, v1Source, "version 3 is version 1's source");
  assert.equal((await fn("test/hello")).version, 3);
});

test("a syntax error shows at its line in the gutter and the list, and saving stores nothing", async () => {
  const lines = v1Source.split("\n");
  lines[6] = "  x x = 1";
  await paste(lines.join("\n"));
  const item = page.getByTestId("diagnostics").locator("li").first();
  await item.waitFor();
  assert.match(await item.innerText(), /^line 7: /, "the list says line 7");
  const editor = page.getByTestId("editor");
  const marker = editor.locator(".cm-lint-marker-error");
  await marker.waitFor();
  const line7 = editor.locator(".cm-lineNumbers .cm-gutterElement").filter({ hasText: /^7$/ });
  const [m, l] = [await marker.boundingBox(), await line7.boundingBox()];
  const mid = m.y + m.height / 2;
  assert.ok(mid >= l.y && mid <= l.y + l.height, `the gutter marker (y ${mid}) is on line 7 (y ${l.y}..${l.y + l.height})`);
  assert.equal(await editor.locator(".cm-lint-marker-error").count(), 1, "one marker");
  await page.getByTestId("diagnostics").scrollIntoViewIfNeeded();
  await shot(page, "function-editor-diagnostic");
  provoke(400, "PUT", "/functions/test/hello");
  await page.getByTestId("save").click();
  await saveStatus("Not saved");
  assert.match(await page.getByTestId("save-status").innerText(), /line 7/, "the status names the line");
  const f = await fn("test/hello");
  assert.equal(f.version, 3, "nothing was stored");
  assert.equal(f.source, v1Source);
  await page.getByTestId("dirty").waitFor();
});

test("leaving with unsaved edits through a link asks first", async () => {
  const asked = new Promise((resolve) => page.once("dialog", async (d) => {
    resolve(d.message());
    await d.dismiss();
  }));
  await page.locator('header.top nav a[href="/templates"]').click();
  assert.match(await asked, /unsaved changes/);
  assert.equal(new URL(page.url()).pathname, "/functions/test/hello", "dismissing keeps the page");
  await paste(v1Source);
  await page.getByTestId("dirty").waitFor({ state: "detached" });
});

test("a save over a version saved elsewhere since the page loaded asks first", async () => {
  const elsewhere = v1Source + "-- saved from elsewhere\n";
  const r = await api("PUT", "/functions/test/hello", { source: elsewhere });
  assert.equal(r.body.version, 4, "another client saves version 4");
  await paste(v1Source.replace("return input or {}", "return { mine = true }"));
  await page.getByTestId("save").click();
  await page.getByTestId("stale").waitFor();
  assert.match(await page.getByTestId("save-status").innerText(),
    /^Version 4 was saved by \S+ since you opened version 3: compare it in History, or Save again/);
  assert.equal((await fn("test/hello")).source, elsewhere, "nothing was saved over it");
  await page.locator('[data-testid=version-row][data-version="4"]').waitFor();
  await page.getByTestId("save").click();
  await saveStatus("Saved version 5");
  assert.match((await fn("test/hello")).source, /mine = true/);
  assert.equal(await page.getByTestId("stale").count(), 0);
});

test("reset to bundled on a shadowed bundled function brings back origin bundled", async () => {
  const bundled = await fn("distribution/pull_post");
  assert.equal(bundled.origin, "bundled");
  await open("/functions/distribution/pull_post", "editor");
  await page.getByTestId("editor").locator(".cm-content").filter({ hasText: "drop_foreign" }).waitFor();
  await paste(bundled.source + "-- shadowed by the test\n");
  await page.getByTestId("save").click();
  await saveStatus("Saved version 1");
  await page.getByTestId("origin").filter({ hasText: "user · shadows bundled" }).waitFor();
  assert.equal((await fn("distribution/pull_post")).origin, "user");
  await open("/functions", "function-link");
  const row = page.locator('[data-testid=function-row][data-name="distribution/pull_post"]');
  assert.equal(await row.getByTestId("origin").innerText(), "user · shadows bundled");
  assert.equal(await row.getByTestId("function-version").innerText(), "1");
  await row.getByTestId("function-link").click();
  await page.getByTestId("reset").click();
  await page.getByTestId("confirm-dialog").waitFor();
  await page.getByTestId("confirm-ok").click();
  await saveStatus("Reset to bundled");
  await page.getByTestId("origin").filter({ hasText: /^bundled$/ }).waitFor();
  const after = await fn("distribution/pull_post");
  assert.equal(after.origin, "bundled");
  assert.equal(after.version, 0);
  assert.equal(after.source, bundled.source);
  assert.equal(await page.getByTestId("reset").count(), 0, "nothing left to reset");
  assert.equal(await page.getByTestId("dirty").count(), 0, "the editor shows the bundled source");
});

test("the composer builds a template with reordered slots and a remote slot", async () => {
  await open("/templates", "template-link");
  await shot(page, "templates-list");
  await page.getByTestId("template-new").click();
  await page.waitForURL(CONSOLE_URL + "/templates/new");
  await page.getByTestId("template-name").fill("composed");
  await page.getByTestId("template-description").fill('Pull, pass and "notify"');
  const slots = page.getByTestId("slot");
  await slots.nth(0).getByTestId("slot-function").selectOption("distribution/pull_prepare");
  await page.getByTestId("slot-add").click();
  await slots.nth(1).getByTestId("slot-function").selectOption("common/pass");
  await page.getByTestId("slot-add").click();
  await slots.nth(2).getByTestId("slot-mode").selectOption("remote");
  await slots.nth(2).getByTestId("slot-name").fill("notify");
  await slots.nth(2).getByTestId("slot-remote").fill("http://127.0.0.1:9/notify");
  await slots.nth(2).getByTestId("slot-up").click();    // pull_prepare, notify, pass
  await slots.nth(1).getByTestId("slot-up").click();    // notify, pull_prepare, pass
  await slots.nth(2).getByTestId("slot-up").click();    // notify, pass, pull_prepare
  await slots.nth(1).getByTestId("slot-down").click();  // notify, pull_prepare, pass
  const names = await page.getByTestId("slot-name").evaluateAll((els) => els.map((e) => e.value));
  assert.deepEqual(names, ["notify", "pull_prepare", "pass"], "a function's slot is named after it; the order follows the moves");
  const lua = page.getByTestId("template-lua");
  await lua.filter({ hasText: '{ "notify", remote = "http://127.0.0.1:9/notify" }' }).waitFor();
  const text = await lua.innerText();
  assert.ok(text.indexOf('"notify"') < text.indexOf('"pull_prepare"') && text.indexOf('"pull_prepare"') < text.indexOf('"common/pass"'),
    "the Lua lists the stages in the slots' order");
  assert.match(text, /description = "Pull, pass and \\"notify\\""/, "strings are quoted as Lua");

  // A slot without a name cannot be saved.
  await slots.nth(2).getByTestId("slot-name").fill("");
  await slots.nth(2).filter({ hasText: "the stage needs a name" }).waitFor();
  assert.equal(await page.getByTestId("save").isDisabled(), true, "Save is disabled while a slot is invalid");
  await slots.nth(2).getByTestId("slot-name").fill("pass");

  await page.locator("[data-testid=save]:not([disabled])").waitFor();
  await shot(page, "template-composer");
  const shown = await lua.textContent();
  await page.getByTestId("save").click();
  await page.waitForURL(CONSOLE_URL + "/templates/composed");
  await saveStatus("Saved version 1");
  const t = await api("GET", "/templates/composed");
  assert.equal(t.status, 200);
  assert.deepEqual(t.body.stages, [
    { name: "notify", remote: "http://127.0.0.1:9/notify" },
    { name: "pull_prepare", function: "distribution/pull_prepare" },
    { name: "pass", function: "common/pass" },
  ], "the API returns the stages in the composed order");
  assert.equal(t.body.source, shown, "the Lua the composer showed is the Lua the daemon stored");
  const reloaded = await page.getByTestId("slot-name").evaluateAll((els) => els.map((e) => e.value));
  assert.deepEqual(reloaded, ["notify", "pull_prepare", "pass"], "the saved template loads back into the slots");
});

test("a template's history diffs and reverts like a function's", async () => {
  await page.getByTestId("slot").nth(0).getByTestId("slot-remove").click();
  await page.locator("[data-testid=save]:not([disabled])").waitFor();
  await page.getByTestId("save").click();
  await saveStatus("Saved version 2");
  await page.locator('[data-testid=version-row][data-version="1"]').waitFor();
  await page.getByTestId("diff-show").click();
  await page.getByTestId("diff").locator(".cm-merge-a .cm-changedLine").filter({ hasText: '"notify"' }).waitFor();
  await page.locator('[data-testid=revert][data-version="1"]').click();
  await page.getByTestId("dirty").waitFor();
  assert.equal(await page.getByTestId("slot").count(), 3, "version 1's three slots are back");
  await page.locator("[data-testid=save]:not([disabled])").waitFor();
  await page.getByTestId("save").click();
  await saveStatus("Saved version 3");
  const v1 = await api("GET", "/templates/composed/versions/1");
  const v3 = await api("GET", "/templates/composed/versions/3");
  assert.equal(v3.body.source, v1.body.source, "version 3 is version 1 again");
});

test("deleting a function that a policy's template needs shows the 409 message", async () => {
  const src = await api("POST", "/registries", { name: "src", url: SRC });
  const dst = await api("POST", "/registries", { name: "dst", url: DST });
  assert.equal(src.status, 201);
  assert.equal(dst.status, 201);
  const gateV1 = gateSource("v1");
  let r = await api("PUT", "/functions/test/gate", { source: gateV1 });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  r = await api("PUT", "/templates/gated", { description: "waits for the test", stages: [{ name: "gate", function: "test/gate" }] });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  r = await api("POST", "/policies", { name: "gated", source_registry: src.body.id, target_registry: dst.body.id, template: "gated" });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  policyId = r.body.id;

  await open("/functions/test/gate", "editor");
  await page.getByTestId("used-by").filter({ hasText: "gated" }).waitFor();
  await page.getByTestId("delete").click();
  provoke(409, "DELETE", "/functions/test/gate");
  await page.getByTestId("confirm-ok").click();
  const err = page.getByTestId("confirm-error");
  await err.waitFor();
  assert.match(await err.innerText(), /function test\/gate is needed by template gated, which policy gated uses/);
  await shot(page, "function-delete-409");
  assert.equal((await fn("test/gate")).version, 1, "the function is still there");
  await page.getByTestId("confirm-cancel").click();
  await page.getByTestId("confirm-dialog").waitFor({ state: "hidden" });
});

// The source of test/gate: waits until the test's gate opens, then returns
// which version ran.
function gateSource(tag) {
  return `-- test/gate: waits for the browser test's gate.
return {
  description = "Wait for the test's gate (${tag})",
  run = function(ctx, input)
    for _ = 1, 1200 do
      local res = http.request{ url = ${JSON.stringify(GATE_URL)} }
      if res and res.status == 200 then break end
      time.sleep(0.05)
    end
    return { ran = ${JSON.stringify(tag)} }
  end,
}
`;
}

// Waits until execution id has finished; returns its view.
async function finished(id) {
  return waitFor(async () => {
    const r = await api("GET", `/executions/${id}`);
    return ["Succeeded", "Failed", "Stopped"].includes(r.body.status) ? r.body : null;
  }, { timeout: 60000, what: `execution ${id} finishes` });
}

// The stage results of execution id's one task.
async function stagesOf(id) {
  const r = await api("GET", `/executions/${id}/tasks`);
  assert.equal(r.body.length, 1, "one repository, one task");
  return r.body[0].stages;
}

test("saving a function while an execution runs it leaves that execution on the old version", async () => {
  assert.ok(policyId, "the gated policy exists");
  gateOpen = false;
  const hits = gateHits;
  const run = await api("POST", `/policies/${policyId}/executions`);
  assert.equal(run.status, 202, JSON.stringify(run.body));
  const id = run.body.id;
  await waitFor(() => gateHits > hits, { timeout: 30000, what: "the stage polls the gate" });

  await open("/functions/test/gate", "editor");
  await page.getByTestId("editor").locator(".cm-content").filter({ hasText: "(v1)" }).waitFor();
  await paste(gateSource("v2"));
  await page.getByTestId("save").click();
  await saveStatus("Saved version 2");
  assert.equal((await api("GET", `/executions/${id}`)).body.status, "Running", "the execution was still running at the save");
  gateOpen = true;

  const ex = await finished(id);
  assert.equal(ex.status, "Succeeded");
  const pinned = ex.functions.find((f) => f.name === "test/gate");
  assert.deepEqual([pinned.origin, pinned.version], ["user", 1], "the execution records version 1");
  const [stage] = await stagesOf(id);
  assert.equal(stage.function_version, 1, "its stage result says version 1");
  assert.deepEqual(stage.output, { ran: "v1" }, "and version 1's code ran");

  const next = await api("POST", `/policies/${policyId}/executions`);
  const ex2 = await finished(next.body.id);
  assert.equal(ex2.functions.find((f) => f.name === "test/gate").version, 2, "the next execution runs version 2");
  assert.deepEqual((await stagesOf(next.body.id))[0].output, { ran: "v2" });
});

test("try on a policy runs the editor's text as a draft without saving it", async () => {
  gateOpen = true;
  await paste(gateSource("draft"));
  await page.getByTestId("try-policy").selectOption(String(policyId));
  await page.getByTestId("try-run").click();
  const link = page.getByTestId("try-link");
  await link.waitFor();
  const id = Number((await link.getAttribute("href")).replace("/executions/", ""));
  assert.ok(id > 0, "a link to the draft execution");
  const ex = await finished(id);
  assert.equal(ex.draft, true);
  assert.equal(ex.functions.find((f) => f.name === "test/gate").origin, "draft");
  assert.deepEqual((await stagesOf(id))[0].output, { ran: "draft" }, "the editor's text ran");
  assert.equal((await fn("test/gate")).version, 2, "nothing was saved");
  await paste(gateSource("v2"));
  await page.getByTestId("dirty").waitFor({ state: "detached" });
});

test("the composer writes the same Lua as the daemon, tricky strings included", async () => {
  const form = formFrom({
    description: 'quotes " and \\ backslash, a\ttab, a\nnewline, \u0001 and \u007f, é, 日本, ]]',
    source_kind: "distribution", target_kind: "harbor",
    stages: [{ name: "a-1", function: "common/pass" }, { name: "b_2", remote: "https://faas.example/fn?x=1&y=\"2\"" }],
    delete_stages: [{ name: "del", function: "distribution/delete" }],
  });
  const r = await api("PUT", "/templates/parity", putBody(form));
  assert.equal(r.status, 201, JSON.stringify(r.body));
  const t = await api("GET", "/templates/parity");
  assert.equal(t.body.source, templateLua(form).lua, "byte for byte");
  assert.deepEqual(putBody(formFromLua(t.body.source)), putBody(form), "and the composer reads it back");
  const del = await api("DELETE", "/templates/parity");
  assert.equal(del.status, 204);
});

test("the composer reads the bundled template's Lua (comments and all) into slots", () => {
  const form = formFromLua(readFileSync(join(ROOT, "scripts", "templates", "distribution.lua"), "utf8"));
  assert.deepEqual(form.stages.map((s) => `${s.name}=${s.fn}`), [
    "pull_prepare=distribution/pull_prepare", "pull=distribution/pull", "pull_post=distribution/pull_post",
    "push_prepare=distribution/push_prepare", "push=distribution/push", "push_post=distribution/verify",
  ]);
  assert.deepEqual(form.delete_stages.map((s) => s.fn), ["distribution/delete"]);
  assert.throws(() => formFromLua("local t = {}\nreturn t"), /expected return/, "code is not a table of literals");
});

test("no page error, console error or CSP violation on the way", () => {
  const left = [...problems];
  for (const p of provoked) {
    const i = left.findIndex((m) => m.includes("Failed to load resource") && m.includes(p.text) && m.endsWith(p.url));
    assert.ok(i >= 0, `the provoked ${p.status} of ${p.method} ${p.url} was logged`);
    left.splice(i, 1);
  }
  assert.deepEqual(left, []);
});
