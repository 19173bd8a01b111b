// pages/functions.js - the stage functions: the list (grouped by kind) and
// the editor of one function (Lua with server diagnostics, save as a new
// version, history with diffs and revert, delete or reset to bundled, and a
// draft run of the editor's text on a policy).
import { useEffect, useRef, useState } from "preact/hooks";
import { html } from "../html.js";
import { del, get, post, put } from "../api.js";
import { navigate } from "../router.js";
import { DiagnosticsList, LuaEditor, useUnsavedGuard } from "../editor.js";
import { Versions, shortSha, when } from "../diff.js";

// What a function's full name looks like: KIND/NAME, each [A-Za-z0-9_-]+.
export const FUNCTION_NAME = /^[A-Za-z0-9_-]+\/[A-Za-z0-9_-]+$/;

// The source a new function starts from: a valid stage that passes its
// input on, with what ctx holds spelled out.
export function skeleton(name) {
  return `-- ${name || "kind/name"}: what this stage does, in one line.
return {
  description = "Describe what this stage does",
  -- ctx.task          {repository, dest_repository, tags}: this task's repository
  -- ctx.src, ctx.dst  OCI Distribution clients of the source and the target
  --                   (:tags(repo), :get_manifest(repo, ref), :head_blob(repo, digest), ...)
  -- ctx.options       the run's options (override, platforms, dest_namespace, flatten, jobs)
  -- ctx.results       the outputs of the earlier stages, by stage name
  -- ctx.data          this task's working state, shared by its stages, never stored
  -- ctx.run           a table every task of the run shares
  -- input             the previous stage's output
  run = function(ctx, input)
    log.info("%s: %d tag(s)", ctx.task.repository, #(ctx.task.tags or {}))
    -- Return a JSON-serialisable table (the stage's output), or nil, err to fail.
    return input or {}
  end,
}
`;
}

// A status carried over a navigation (the page remounts after the first
// save of a new function moves it to its own URL).
let flash = null;

// Takes the flash message meant for path, if any.
function takeFlash(path) {
  const f = flash && flash.path === path ? flash : null;
  flash = null;
  return f;
}

// The origin of a function or template as a short label.
export function originLabel(o) {
  if (o.origin === "user" && o.bundled) return "user · shadows bundled";
  return o.origin || "";
}

// The origin badge: "bundled", "user", or "user · shadows bundled".
export function OriginBadge({ item }) {
  const cls = "badge origin " + (item.origin === "user" ? (item.bundled ? "shadows" : "user") : "bundled");
  return html`<span class=${cls} data-testid="origin">${originLabel(item)}</span>`;
}

// Asks the server for the current state of what the page loaded (GET
// path) before a save; resolves to a message when it changed in between
// (another tab or user saved, or deleted, a version), else null. loaded:
// the GET answer the page shows; onNewer(cur) gets the fresh answer.
export async function changedSince(path, loaded, onNewer) {
  let cur;
  try {
    cur = await get(path);
  } catch {
    return null; // gone or unreachable: the save itself will say
  }
  if (cur.version === loaded.version && cur.sha256 === loaded.sha256) return null;
  onNewer(cur);
  const v = cur.versions && cur.versions[0];
  const what = cur.version > loaded.version && v
    ? `Version ${cur.version} was saved${v.by ? ` by ${v.by}` : ""}`
    : cur.origin === "bundled" ? "The user versions were deleted (the bundled one is back)" : `Version ${cur.version} is now current`;
  return `${what} since you opened version ${loaded.version}: compare it in History, or Save again to save over it.`;
}

// The kind of a full name (the part before the slash).
function kindOf(name) {
  const i = name.indexOf("/");
  return i < 0 ? "" : name.slice(0, i);
}

// GET /functions, grouped by kind (kinds sorted, names sorted in each).
export function groupByKind(list) {
  const groups = new Map();
  for (const f of list) {
    const k = f.kind || kindOf(f.name);
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k).push(f);
  }
  return [...groups.entries()].sort(([a], [b]) => a.localeCompare(b))
    .map(([kind, items]) => ({ kind, items: items.sort((x, y) => x.name.localeCompare(y.name)) }));
}

// The page /functions: every function, by kind, with origin, version, last
// change, description and load error.
export function FunctionsList() {
  const [list, setList] = useState(null);
  const [error, setError] = useState("");
  useEffect(() => {
    get("/functions").then(setList, (e) => setError(e.message));
  }, []);
  return html`
    <section class="functions">
      <div class="page-head">
        <h1>Functions</h1>
        <a class="button primary" href="/functions/new" data-testid="function-new">New function</a>
      </div>
      <p class="help">Stage functions are the steps templates are made of. Bundled ones ship with
        replica; a user function of the same name shadows the bundled one until it is reset.</p>
      ${error ? html`<p class="error" data-testid="load-error">${error}</p>` : null}
      ${list === null && !error ? html`<p class="help">Loading…</p>` : null}
      ${list && list.length === 0 ? html`<p class="help">No functions.</p>` : null}
      ${list ? groupByKind(list).map((g) => html`
        <div class="kind-group" data-testid="function-group" data-kind=${g.kind}>
          <h2>${g.kind}</h2>
          <table class="list">
            <thead><tr><th>name</th><th>origin</th><th>version</th><th>updated</th><th>description</th></tr></thead>
            <tbody>
              ${g.items.map((f) => html`
                <tr data-testid="function-row" data-name=${f.name} class=${f.error ? "has-error" : ""}>
                  <td><a data-testid="function-link" href=${"/functions/" + f.name}>${f.name}</a></td>
                  <td><${OriginBadge} item=${f} /></td>
                  <td data-testid="function-version">${f.version}</td>
                  <td title=${f.updated || ""}>${f.updated ? when(f.updated) : ""}</td>
                  <td>
                    ${f.description || ""}
                    ${f.error ? html`<div class="error" data-testid="function-error">${f.error}</div>` : null}
                  </td>
                </tr>`)}
            </tbody>
          </table>
        </div>`) : null}
    </section>`;
}

// A confirm dialog (<dialog>, modal). Props: open, title, children (the
// question), confirmLabel, error (shown in the dialog), busy, onConfirm,
// onCancel.
export function ConfirmDialog({ open, title, children, confirmLabel, error, busy, onConfirm, onCancel }) {
  const ref = useRef(null);
  useEffect(() => {
    const d = ref.current;
    if (!d) return;
    if (open && !d.open) d.showModal();
    if (!open && d.open) d.close();
  }, [open]);
  return html`
    <dialog ref=${ref} class="confirm" data-testid="confirm-dialog"
            onCancel=${(e) => { e.preventDefault(); onCancel(); }}>
      <h2>${title}</h2>
      <div>${children}</div>
      ${error ? html`<p class="error" data-testid="confirm-error">${error}</p>` : null}
      <div class="ed-actions">
        <button type="button" data-testid="confirm-cancel" onClick=${onCancel}>Cancel</button>
        <button type="button" class="danger" data-testid="confirm-ok" disabled=${busy}
                onClick=${onConfirm}>${confirmLabel}</button>
      </div>
    </dialog>`;
}

// The delete / reset-to-bundled button and its dialog, for a function or a
// template. item: the GET answer (origin, bundled); path: its API path;
// what: "function" or "template"; onDone(reset): after a 204.
export function DeleteControl({ item, path, what, onDone }) {
  const [open, setOpen] = useState(false);
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  if (!item || item.origin !== "user") return null;
  const reset = !!item.bundled;
  // Sends the DELETE; a 409 (in use) keeps the dialog open with its message.
  const go = async () => {
    setBusy(true);
    setError("");
    try {
      await del(path);
      setOpen(false);
      onDone(reset);
    } catch (e) {
      setError(e.message);
    } finally {
      setBusy(false);
    }
  };
  return html`
    <button type="button" class="danger" data-testid=${reset ? "reset" : "delete"}
            onClick=${() => { setError(""); setOpen(true); }}>
      ${reset ? "Reset to bundled" : "Delete"}
    </button>
    <${ConfirmDialog} open=${open} busy=${busy} error=${error}
        title=${reset ? `Reset ${item.name} to bundled?` : `Delete ${item.name}?`}
        confirmLabel=${reset ? "Reset to bundled" : "Delete"}
        onConfirm=${go} onCancel=${() => setOpen(false)}>
      ${reset
        ? html`<p>This removes the user ${what} and all ${item.versions ? item.versions.length : ""} of its versions; the bundled ${what} takes effect again.</p>`
        : html`<p>This removes the ${what} and all its versions. It cannot be undone.</p>`}
    <//>`;
}

// "Try on a policy": runs the editor's text as a draft override of this
// function in one execution of a chosen policy; nothing is saved.
function TryOnPolicy({ name, text }) {
  const [policies, setPolicies] = useState(null);
  const [policy, setPolicy] = useState("");
  const [result, setResult] = useState(null);
  const [error, setError] = useState("");
  const [diags, setDiags] = useState([]);
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    get("/policies").then((l) => {
      setPolicies(l);
      if (l.length) setPolicy(String(l[0].id));
    }, (e) => setError(e.message));
  }, []);
  // Starts the draft execution.
  const run = async () => {
    setBusy(true);
    setError("");
    setDiags([]);
    setResult(null);
    try {
      setResult(await post(`/policies/${policy}/executions`, { function_overrides: { [name]: text() } }));
    } catch (e) {
      setError(e.message);
      setDiags(e.diagnostics);
    } finally {
      setBusy(false);
    }
  };
  return html`
    <section class="try" data-testid="try">
      <h2>Try on a policy</h2>
      <p class="help">Runs one execution of the policy with the editor's text in place of ${name || "this function"}.
        Nothing is saved; the execution is marked as a draft.</p>
      ${policies && policies.length === 0 ? html`<p class="help">There are no policies yet.</p>` : null}
      ${policies && policies.length ? html`
        <div class="ed-row">
          <select data-testid="try-policy" value=${policy} onChange=${(e) => setPolicy(e.currentTarget.value)}>
            ${policies.map((p) => html`<option value=${String(p.id)}>${p.name} (template ${p.template || "distribution"})</option>`)}
          </select>
          <button type="button" data-testid="try-run" disabled=${busy || !name || !policy} onClick=${run}>Run draft</button>
        </div>` : null}
      ${result ? html`<p data-testid="try-result">Draft execution started:
        <a data-testid="try-link" href=${"/executions/" + result.id}>execution ${result.id}</a></p>` : null}
      ${error ? html`<p class="error" data-testid="try-error">${error}</p>` : null}
      ${diags.length ? html`<${DiagnosticsList} items=${diags} testid="try-diagnostics" />` : null}
    </section>`;
}

// The page /functions/new and /functions/:kind/:name: the editor.
export function FunctionEditor({ params, path }) {
  const isNew = !params.kind;
  const name0 = isNew ? "" : `${params.kind}/${params.name}`;
  const [fn, setFn] = useState(null);          // the GET answer (null: new or loading)
  const [loading, setLoading] = useState(!isNew);
  const [loadError, setLoadError] = useState("");
  const [newName, setNewName] = useState("");
  const [all, setAll] = useState([]);          // GET /functions, to warn about taken names
  const [initial, setInitial] = useState(isNew ? skeleton("") : null);
  const [text, setText] = useState(isNew ? skeleton("") : null);
  const [baseline, setBaseline] = useState(isNew ? skeleton("") : null);
  const [diags, setDiags] = useState([]);
  const [status, setStatus] = useState(() => {
    const f = takeFlash(path);
    return f ? f.status : null;
  });
  const [saving, setSaving] = useState(false);
  const ed = useRef(null);
  const name = isNew ? newName.trim() : name0;
  const nameOk = FUNCTION_NAME.test(name);

  // Loads the function (GET) and, the first time, the editor's text.
  const load = async (first) => {
    try {
      const f = await get(`/functions/${name0}`);
      setFn(f);
      if (first) {
        setInitial(f.source);
        setText(f.source);
      }
      setBaseline(f.source);
      setLoadError("");
      return f;
    } catch (e) {
      setLoadError(e.status === 404 ? `There is no function ${name0}.` : e.message);
      return null;
    } finally {
      setLoading(false);
    }
  };
  useEffect(() => {
    if (!isNew) load(true);
    else get("/functions").then(setAll, () => {});
  }, []);

  const dirty = text !== null && baseline !== null && text !== baseline;
  useUnsavedGuard(dirty);

  // Saves the editor's text as the next version (PUT); a 400 shows its
  // diagnostics in the gutter and the list, and nothing is stored.
  const save = async () => {
    const source = ed.current.getText();
    setSaving(true);
    setStatus(null);
    try {
      if (fn) {
        const stale = await changedSince(`/functions/${name0}`, fn, (cur) => {
          setFn(cur);
          setBaseline(cur.source);
        });
        if (stale) {
          setStatus({ ok: false, stale: true, text: stale });
          return;
        }
      }
      const r = await put(`/functions/${name}`, { source });
      const msg = r.unchanged ? `No changes: version ${r.version} is current` : `Saved version ${r.version}`;
      if (isNew) {
        setBaseline(source);
        flash = { path: `/functions/${name}`, status: { ok: true, text: msg } };
        navigate(`/functions/${name}`);
        return;
      }
      setStatus({ ok: true, text: msg });
      await load(false);
      setBaseline(source);
    } catch (e) {
      if (e.diagnostics.length) ed.current.setDiagnostics(e.diagnostics);
      const n = e.diagnostics.length;
      setStatus({ ok: false, text: n ? `Not saved: ${n} problem${n > 1 ? "s" : ""} (${e.message})` : `Not saved: ${e.message}` });
    } finally {
      setSaving(false);
    }
  };

  // Puts an old version's source into the editor (saving makes it new).
  const revert = (n, source) => {
    ed.current.setText(source);
    setStatus({ ok: true, text: `Loaded version ${n} into the editor; save to make it the next version` });
  };

  if (loading) return html`<section><h1>Function ${name0}</h1><p class="help">Loading…</p></section>`;
  if (loadError && !fn) return html`
    <section><h1>Function ${name0}</h1><p class="error" data-testid="load-error">${loadError}</p>
    <p><a href="/functions">All functions</a></p></section>`;

  const existing = isNew && nameOk ? all.find((f) => f.name === name) : null;
  return html`
    <section class="function-editor">
      <div class="page-head">
        <h1>${isNew ? "New function" : html`Function <code data-testid="function-title">${name0}</code>`}</h1>
        ${fn ? html`<${OriginBadge} item=${fn} />` : null}
        ${fn ? html`<span class="badge" data-testid="current-version">version ${fn.version}</span>` : null}
        ${dirty ? html`<span class="badge dirty" data-testid="dirty" title="The editor's text differs from the saved version">● unsaved changes</span>` : null}
      </div>
      ${fn && fn.description ? html`<p class="description">${fn.description}</p>` : null}
      ${fn && fn.error ? html`<p class="error" data-testid="function-error">Does not load: ${fn.error}</p>` : null}
      ${fn && fn.sha256 ? html`<p class="help">sha256 <span class="mono">${shortSha(fn.sha256)}</span>${fn.updated ? ` · updated ${when(fn.updated)}` : ""}</p>` : null}
      ${isNew ? html`
        <label class="ed-field">Name (kind/name)
          <input data-testid="function-name" value=${newName} placeholder="mykind/mystage" autocomplete="off"
                 spellcheck="false" onInput=${(e) => setNewName(e.currentTarget.value)} />
        </label>
        ${newName && !nameOk ? html`<p class="error" data-testid="name-error">A name is KIND/NAME; each part letters, digits, _ or -.</p>` : null}
        ${existing ? html`<p class="ed-warn" data-testid="name-taken">${existing.name} exists (${originLabel(existing)}, version ${existing.version}):
          saving ${existing.origin === "user" ? "adds a version to it" : "shadows the bundled one"}.</p>` : null}` : null}
      <${LuaEditor} doc=${initial} kind="function" name=${() => (nameOk ? name : "")}
          onChange=${setText} onDiagnostics=${setDiags} onReady=${(h) => { ed.current = h; }} />
      <${DiagnosticsList} items=${diags} onPick=${(n) => ed.current && ed.current.focusLine(n)} />
      <div class="ed-actions">
        <button type="button" class="primary" data-testid="save" disabled=${saving || !nameOk}
                title=${nameOk ? "Save as the next version" : "Give the function a KIND/NAME first"}
                onClick=${save}>Save</button>
        <span data-testid="save-status" class=${status ? (status.ok ? "ed-ok" : "error") : ""}>${status ? status.text : ""}</span>
        ${status && status.stale ? html`<span class="badge dirty" data-testid="stale">stale</span>` : null}
        <span class="ed-spacer"></span>
        <${DeleteControl} item=${fn} path=${`/functions/${name0}`} what="function"
            onDone=${(reset) => {
              if (reset) {
                setStatus({ ok: true, text: "Reset to bundled" });
                load(false).then((f) => { if (f) ed.current.setText(f.source); });
              } else {
                setBaseline(text);
                navigate("/functions");
              }
            }} />
      </div>
      ${fn ? html`
        <section class="used-by" data-testid="used-by">
          <h2>Used by</h2>
          ${fn.used_by && fn.used_by.length
            ? html`<ul>${fn.used_by.map((t) => html`<li><a href=${"/templates/" + t}>${t}</a></li>`)}</ul>`
            : html`<p class="help">No template uses it.</p>`}
        </section>` : null}
      <${TryOnPolicy} name=${nameOk ? name : ""} text=${() => (ed.current ? ed.current.getText() : "")} />
      ${fn ? html`
        <${Versions} key=${`${fn.version}:${(fn.versions || []).length}`}
            versions=${fn.versions} bundled=${fn.bundled} current=${fn.version}
            load=${(n) => get(`/functions/${name0}/versions/${n}`).then((v) => v.source)}
            editorText=${() => ed.current.getText()} onRevert=${revert} />` : null}
    </section>`;
}
