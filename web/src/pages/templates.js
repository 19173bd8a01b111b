// pages/templates.js - the process templates: the list, and the composer
// (an ordered list of stage slots, each a function or a remote URL; the Lua
// it will store, validated by the server before Save is allowed; history,
// diffs and revert; delete or reset to bundled).
import { useEffect, useRef, useState } from "preact/hooks";
import { html } from "../html.js";
import { get, put } from "../api.js";
import { navigate } from "../router.js";
import { DiagnosticsList, useUnsavedGuard, validate } from "../editor.js";
import { Versions, shortSha, when } from "../diff.js";
import { DeleteControl, OriginBadge, changedSince, groupByKind } from "./functions.js";
import { formFrom, formFromLua, formProblems, putBody, slot, slotAtLine, templateLua } from "../composer.js";

const TEMPLATE_NAME = /^[A-Za-z0-9_-]+$/;

// A status carried over the navigation after a new template's first save.
let flash = null;

// The stage names of a template entry, in order, as one line.
function stageSummary(stages) {
  return (stages || []).map((s) => s.name).join(" → ");
}

// The page /templates: every template with origin, version, kinds, stages.
export function TemplatesList() {
  const [list, setList] = useState(null);
  const [error, setError] = useState("");
  useEffect(() => {
    get("/templates").then(setList, (e) => setError(e.message));
  }, []);
  return html`
    <section class="templates">
      <div class="page-head">
        <h1>Templates</h1>
        <a class="button primary" href="/templates/new" data-testid="template-new">New template</a>
      </div>
      <p class="help">A process template is the ordered list of stages a policy runs for each repository.</p>
      ${error ? html`<p class="error" data-testid="load-error">${error}</p>` : null}
      ${list === null && !error ? html`<p class="help">Loading…</p>` : null}
      ${list ? html`
        <table class="list">
          <thead><tr><th>name</th><th>origin</th><th>version</th><th>updated</th><th>source → target</th><th>stages</th><th>description</th></tr></thead>
          <tbody>
            ${list.map((t) => html`
              <tr data-testid="template-row" data-name=${t.name} class=${t.error ? "has-error" : ""}>
                <td><a data-testid="template-link" href=${"/templates/" + t.name}>${t.name}</a></td>
                <td><${OriginBadge} item=${t} /></td>
                <td>${t.version}</td>
                <td title=${t.updated || ""}>${t.updated ? when(t.updated) : ""}</td>
                <td class="kinds">${t.source_kind || ""} → ${t.target_kind || ""}</td>
                <td class="stages">${stageSummary(t.stages)}</td>
                <td>${t.description || ""}
                  ${t.error ? html`<div class="error" data-testid="template-error">${t.error}</div>` : null}</td>
              </tr>`)}
          </tbody>
        </table>` : null}
    </section>`;
}

// One stage slot row: name, mode, function (or remote URL), reorder and
// remove buttons, and what is wrong with it.
function SlotRow({ s, index, count, groups, problems, onChange, onRemove, onMove }) {
  const known = groups.some((g) => g.items.some((f) => f.name === s.fn));
  const bad = problems.length > 0;
  return html`
    <li class=${"slot" + (bad ? " invalid" : "")} data-testid="slot" data-index=${index}>
      <span class="slot-index">${index + 1}</span>
      <input data-testid="slot-name" class="slot-name" value=${s.name} placeholder="stage name" spellcheck="false"
             aria-label=${`stage ${index + 1} name`} onInput=${(e) => onChange({ name: e.currentTarget.value })} />
      <select data-testid="slot-mode" value=${s.mode} aria-label=${`stage ${index + 1} runs`}
              onChange=${(e) => onChange({ mode: e.currentTarget.value })}>
        <option value="function">function</option>
        <option value="remote">remote</option>
      </select>
      ${s.mode === "remote" ? html`
        <input data-testid="slot-remote" class="slot-remote" value=${s.remote} placeholder="http://gateway:8080/function/name"
               spellcheck="false" aria-label=${`stage ${index + 1} URL`}
               onInput=${(e) => onChange({ remote: e.currentTarget.value })} />` : html`
        <select data-testid="slot-function" value=${s.fn} aria-label=${`stage ${index + 1} function`}
                onChange=${(e) => {
                  const fn = e.currentTarget.value;
                  onChange(s.name ? { fn } : { fn, name: fn.slice(fn.indexOf("/") + 1) });
                }}>
          <option value="">choose a function…</option>
          ${s.fn && !known ? html`<option value=${s.fn}>${s.fn} (not found)</option>` : null}
          ${groups.map((g) => html`
            <optgroup label=${g.kind}>
              ${g.items.map((f) => html`<option value=${f.name}>${f.name}</option>`)}
            </optgroup>`)}
        </select>`}
      <span class="slot-buttons">
        <button type="button" data-testid="slot-up" title="Move up" aria-label="Move up" disabled=${index === 0} onClick=${() => onMove(-1)}>↑</button>
        <button type="button" data-testid="slot-down" title="Move down" aria-label="Move down" disabled=${index === count - 1} onClick=${() => onMove(1)}>↓</button>
        <button type="button" data-testid="slot-remove" title="Remove" aria-label="Remove" class="danger" onClick=${onRemove}>✕</button>
      </span>
      ${bad ? html`<ul class="slot-problems">${problems.map((p) => html`<li class="error">${p}</li>`)}</ul>` : null}
    </li>`;
}

// An ordered list of slots (stages or delete_stages) with its add button.
function SlotList({ slots, listKey, groups, problemsAt, onSlots, addTestid = "slot-add" }) {
  // Applies fn to the slot list.
  const edit = (fn) => onSlots(fn([...slots]));
  return html`
    <ol class="slots" data-testid=${listKey === "stages" ? "slots" : "delete-slots"}>
      ${slots.map((s, i) => html`
        <${SlotRow} key=${s.id} s=${s} index=${i} count=${slots.length} groups=${groups}
            problems=${problemsAt(listKey, i)}
            onChange=${(patch) => edit((l) => { l[i] = { ...l[i], ...patch }; return l; })}
            onRemove=${() => edit((l) => { l.splice(i, 1); return l; })}
            onMove=${(d) => edit((l) => { const [x] = l.splice(i, 1); l.splice(i + d, 0, x); return l; })} />`)}
    </ol>
    <button type="button" data-testid=${addTestid} onClick=${() => edit((l) => [...l, slot()])}>Add a stage</button>`;
}

// The generated Lua, read-only: a span per line and the line breaks as text
// between them, so that the element's text (and a copy of it) is exactly
// the Lua; line numbers are drawn by CSS; lines with a diagnostic are marked.
function LuaView({ lua, bad }) {
  const lines = lua.replace(/\n$/, "").split("\n");
  return html`
    <pre class="lua-view" data-testid="template-lua">${lines.map((l, i) => [
      html`<span class=${bad.has(i + 1) ? "line bad" : "line"}>${l}</span>`, "\n"])}</pre>`;
}

// The page /templates/new and /templates/:name: the composer.
export function TemplateComposer({ params, path }) {
  const isNew = !params.name;
  const name0 = isNew ? "" : params.name;
  const [tpl, setTpl] = useState(null);
  const [loading, setLoading] = useState(!isNew);
  const [loadError, setLoadError] = useState("");
  const [fns, setFns] = useState([]);
  const [newName, setNewName] = useState("");
  const [form, setForm] = useState(() => (isNew ? { ...formFrom(null), stages: [slot()] } : formFrom(null)));
  const [baseline, setBaseline] = useState(null);   // the Lua of what is stored
  const [check, setCheck] = useState(null);         // {lua, ok, diagnostics}
  const [status, setStatus] = useState(() => {
    const f = flash && flash.path === path ? flash.status : null;
    flash = null;
    return f;
  });
  const [rawRestore, setRawRestore] = useState(null); // {n, source} when a version does not fit the form
  const [saving, setSaving] = useState(false);
  const name = isNew ? newName.trim() : name0;
  const nameOk = TEMPLATE_NAME.test(name);
  const { lua, lines } = templateLua(form);
  const latestLua = useRef(lua);
  latestLua.current = lua;

  // Loads the template (GET) into the form.
  const load = async () => {
    try {
      const t = await get(`/templates/${name0}`);
      const f = formFrom(t);
      setTpl(t);
      setForm(f);
      setBaseline(templateLua(f).lua);
      setLoadError("");
      return t;
    } catch (e) {
      setLoadError(e.status === 404 ? `There is no template ${name0}.` : e.message);
      return null;
    } finally {
      setLoading(false);
    }
  };
  useEffect(() => {
    get("/functions").then(setFns, () => {});
    if (!isNew) load();
  }, []);

  // Asks the server about the generated Lua 400 ms after the last change.
  useEffect(() => {
    if (loading) return undefined;
    const ctrl = new AbortController();
    const timer = setTimeout(async () => {
      try {
        const r = await validate("template", lua, nameOk ? name : "", ctrl.signal);
        if (latestLua.current === lua) setCheck({ lua, ...r });
      } catch { /* aborted: a newer check follows */ }
    }, 400);
    return () => { clearTimeout(timer); ctrl.abort(); };
  }, [lua, name, loading]);

  const dirty = isNew ? form.stages.some((s) => s.name || s.fn || s.remote) || !!form.description : baseline !== null && lua !== baseline;
  useUnsavedGuard(dirty);

  const problems = formProblems(form);
  const checked = check && check.lua === lua;
  const diags = checked ? check.diagnostics : [];
  const badLines = new Set(diags.map((d) => d.line));
  // The problems shown in one slot: the form's own and the server's at its line.
  const problemsAt = (list, index) => [
    ...problems.filter((p) => p.list === list && p.index === index).map((p) => p.message),
    ...diags.filter((d) => { const s = slotAtLine(lines, d.line); return s && s.list === list && s.index === index; })
      .map((d) => d.message),
  ];
  const canSave = nameOk && !saving && problems.length === 0 && checked && check.ok;
  const why = !nameOk ? "Give the template a name (letters, digits, _ or -)"
    : problems.length ? "Fix the problems in the stages first"
      : !checked ? "Checking the template…"
        : !check.ok ? "The server found problems: see below" : "Save as the next version";
  const groups = groupByKind(fns);

  // Saves the form (PUT, the structured body); the daemon writes the Lua.
  const save = async () => {
    setSaving(true);
    setStatus(null);
    try {
      if (tpl) {
        const stale = await changedSince(`/templates/${name0}`, tpl, (cur) => {
          setTpl(cur);
          setBaseline(templateLua(formFrom(cur)).lua);
        });
        if (stale) {
          setStatus({ ok: false, stale: true, text: stale });
          return;
        }
      }
      const r = await put(`/templates/${name}`, putBody(form));
      const msg = r.unchanged ? `No changes: version ${r.version} is current` : `Saved version ${r.version}`;
      if (isNew) {
        setBaseline(lua);
        setForm(formFrom(null));
        flash = { path: `/templates/${name}`, status: { ok: true, text: msg } };
        navigate(`/templates/${name}`);
        return;
      }
      setStatus({ ok: true, text: msg });
      await load();
    } catch (e) {
      if (e.diagnostics.length) setCheck({ lua, ok: false, diagnostics: e.diagnostics });
      setStatus({ ok: false, text: `Not saved: ${e.message}` });
    } finally {
      setSaving(false);
    }
  };

  // Saves an old version's Lua as it is (for a version the form cannot show).
  const restoreRaw = async () => {
    const { n, source } = rawRestore;
    setSaving(true);
    try {
      const r = await put(`/templates/${name0}`, { source });
      setRawRestore(null);
      setStatus({ ok: true, text: `Saved version ${r.version} (version ${n}'s Lua)` });
      await load();
    } catch (e) {
      setStatus({ ok: false, text: `Not saved: ${e.message}` });
    } finally {
      setSaving(false);
    }
  };

  // Loads an old version into the form; one the form cannot represent can
  // be restored as it is instead.
  const revert = (n, source) => {
    try {
      setForm(formFromLua(source));
      setRawRestore(null);
      setStatus({ ok: true, text: `Loaded version ${n} into the form; save to make it the next version` });
    } catch (e) {
      setRawRestore({ n, source });
      setStatus({ ok: false, text: `Version ${n} is more than this form can show (${e.message})` });
    }
  };

  if (loading) return html`<section><h1>Template ${name0}</h1><p class="help">Loading…</p></section>`;
  if (loadError && !tpl) return html`
    <section><h1>Template ${name0}</h1><p class="error" data-testid="load-error">${loadError}</p>
    <p><a href="/templates">All templates</a></p></section>`;

  // Sets one field of the form.
  const field = (k) => (e) => { const v = e.currentTarget.value; setForm((f) => ({ ...f, [k]: v })); };
  return html`
    <section class="template-composer">
      <div class="page-head">
        <h1>${isNew ? "New template" : html`Template <code data-testid="template-title">${name0}</code>`}</h1>
        ${tpl ? html`<${OriginBadge} item=${tpl} />` : null}
        ${tpl ? html`<span class="badge" data-testid="current-version">version ${tpl.version}</span>` : null}
        ${dirty ? html`<span class="badge dirty" data-testid="dirty">● unsaved changes</span>` : null}
      </div>
      ${tpl && tpl.error ? html`<p class="error" data-testid="template-error">Does not load: ${tpl.error}</p>` : null}
      ${tpl && tpl.sha256 ? html`<p class="help">sha256 <span class="mono">${shortSha(tpl.sha256)}</span>${tpl.updated ? ` · updated ${when(tpl.updated)}` : ""}</p>` : null}
      <div class="form-grid">
        <label class="ed-field">Name
          <input data-testid="template-name" value=${isNew ? newName : name0} disabled=${!isNew} spellcheck="false"
                 placeholder="my-template" onInput=${(e) => setNewName(e.currentTarget.value)} />
        </label>
        <label class="ed-field wide">Description
          <input data-testid="template-description" value=${form.description} onInput=${field("description")} />
        </label>
        <label class="ed-field">Source kind
          <input data-testid="template-source-kind" value=${form.source_kind} spellcheck="false" onInput=${field("source_kind")} />
        </label>
        <label class="ed-field">Target kind
          <input data-testid="template-target-kind" value=${form.target_kind} spellcheck="false" onInput=${field("target_kind")} />
        </label>
      </div>
      ${isNew && newName && !nameOk ? html`<p class="error" data-testid="name-error">A template name is letters, digits, _ or -.</p>` : null}
      <h2>Stages</h2>
      <p class="help">They run in this order for every repository. A remote stage is POSTed
        {stage, task, options, input} and its 2xx JSON answer is its output.</p>
      ${problems.filter((p) => p.index < 0).map((p) => html`<p class="error">${p.message}</p>`)}
      <${SlotList} slots=${form.stages} listKey="stages" groups=${groups} problemsAt=${problemsAt}
          onSlots=${(l) => setForm((f) => ({ ...f, stages: l }))} />
      <details class="delete-stages" data-testid="delete-stages">
        <summary>Delete stages (${form.delete_stages.length}): run for replicated deletions</summary>
        <${SlotList} slots=${form.delete_stages} listKey="delete_stages" groups=${groups} problemsAt=${problemsAt}
            addTestid="delete-slot-add" onSlots=${(l) => setForm((f) => ({ ...f, delete_stages: l }))} />
      </details>
      <h2>The Lua it stores</h2>
      ${tpl && tpl.source && baseline !== null && tpl.source !== baseline ? html`
        <p class="help" data-testid="lua-differs">The stored Lua has more than this form shows (comments or code);
          saving writes it as shown here.</p>` : null}
      <${LuaView} lua=${lua} bad=${badLines} />
      <${DiagnosticsList} items=${diags} />
      <div class="ed-actions">
        <button type="button" class="primary" data-testid="save" disabled=${!canSave} title=${why} onClick=${save}>Save</button>
        <span data-testid="save-status" class=${status ? (status.ok ? "ed-ok" : "error") : ""}>${status ? status.text : ""}</span>
        ${status && status.stale ? html`<span class="badge dirty" data-testid="stale">stale</span>` : null}
        ${rawRestore ? html`<button type="button" data-testid="restore-raw" onClick=${restoreRaw}>
          Save version ${rawRestore.n}'s Lua as it is</button>` : null}
        <span class="ed-spacer"></span>
        <${DeleteControl} item=${tpl} path=${`/templates/${name0}`} what="template"
            onDone=${(reset) => {
              if (reset) { setStatus({ ok: true, text: "Reset to bundled" }); load(); } else { setBaseline(lua); navigate("/templates"); }
            }} />
      </div>
      ${tpl ? html`
        <section class="used-by" data-testid="used-by">
          <h2>Used by</h2>
          ${tpl.used_by && tpl.used_by.length
            ? html`<ul>${tpl.used_by.map((p) => html`<li><a href=${"/policies/" + p.id}>${p.name}</a></li>`)}</ul>`
            : html`<p class="help">No policy uses it.</p>`}
        </section>
        <${Versions} key=${`${tpl.version}:${(tpl.versions || []).length}`}
            versions=${tpl.versions} bundled=${tpl.bundled} current=${tpl.version}
            load=${(n) => get(`/templates/${name0}/versions/${n}`).then((v) => v.source)}
            editorText=${() => latestLua.current} editorLabel="this form (unsaved)" onRevert=${revert} />` : null}
    </section>`;
}
