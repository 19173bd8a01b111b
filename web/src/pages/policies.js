// pages/policies.js - replication policies: the list at /policies (Run now,
// Edit, Delete) and the form at /policies/new and /policies/:id, with a
// help text on every field (as Harbor's rule form), a Preview of what the
// filters select (POST /policies/{id}/preview: nothing is copied), and Run
// now, which opens the new execution.
import { useState } from "preact/hooks";
import { html } from "../html.js";
import { del, get, post, put } from "../api.js";
import { navigate } from "../router.js";
import { ErrorBanner, Field, ReasonButton, getList, splitList, toast, useConfirm, useLoad } from "../ui.js";

// Why a policy cannot be run now, or null when it can.
export function runBlocked(p) {
  if (!p) return "save the policy first";
  if (!p.enabled) return "the policy is disabled";
  return null;
}

// Starts a run of policy p and opens its execution.
async function runNow(p, setError) {
  try {
    const r = await post(`/policies/${p.id}/executions`);
    toast(r.coalesced ? `joined the queued execution ${r.id}` : `execution ${r.id} started`);
    navigate(`/executions/${r.id}`);
  } catch (e) {
    setError(e);
  }
}

// A short text for a policy's filters: "team/** (tags v*)".
function filters(p) {
  const part = (inc, exc) => [inc.length ? inc.join(", ") : "all", exc.length ? `not ${exc.join(", ")}` : ""]
    .filter(Boolean).join(" ");
  return `${part(p.repositories, p.exclude_repositories)} · tags ${part(p.tags, p.exclude_tags)}`;
}

// The list of policies.
export function Policies() {
  const data = useLoad(async () => {
    const [policies, registries] = await Promise.all([getList("/policies?page_size=500"), getList("/registries?page_size=500")]);
    return { policies, names: Object.fromEntries(registries.map((r) => [r.id, r.name])) };
  }, []);
  const [error, setError] = useState(null);
  const [dialog, ask] = useConfirm();
  const remove = async (p) => {
    if (!await ask({ title: `Delete policy ${p.name}?`, ok: "Delete", danger: true,
                     message: "Its executions and their task logs are deleted with it." })) return;
    try {
      await del(`/policies/${p.id}`);
      toast(`policy ${p.name} deleted`);
      data.reload();
    } catch (e) {
      setError(e);
    }
  };
  const { policies = [], names = {} } = data.data || {};
  return html`<section>
    <div class="head">
      <h1>Policies</h1>
      <a class="button primary" href="/policies/new" data-testid="policy-new">New policy</a>
    </div>
    <p class="lead">What to replicate from where to where, and when.</p>
    <${ErrorBanner} error=${error || data.error} onClose=${error ? () => setError(null) : null} />
    ${data.loading && !data.data ? html`<p class="muted">Loading…</p>` : policies.length === 0
      ? html`<p class="empty">No policies yet. <a href="/policies/new">Create one</a>.</p>`
      : html`<table class="list" data-testid="policies">
          <thead><tr><th>Name</th><th>From → to</th><th>Filters</th><th>Trigger</th><th>Template</th><th>Enabled</th><th></th></tr></thead>
          <tbody>${policies.map((p) => html`<tr key=${p.id} data-testid="policy-row" data-name=${p.name}>
            <td><a href=${`/policies/${p.id}`} data-testid="policy-link">${p.name}</a>
              ${p.description && html`<div class="muted small">${p.description}</div>`}</td>
            <td>${names[p.source_registry] || `#${p.source_registry}`} → ${names[p.target_registry] || `#${p.target_registry}`}${p.dest_namespace ? html` <span class="mono">/${p.dest_namespace}</span>` : null}</td>
            <td class="mono small">${filters(p)}</td>
            <td>${p.trigger}${p.trigger === "cron" ? html` <span class="mono">${p.cron}</span>` : null}</td>
            <td>${p.template}</td>
            <td>${p.enabled ? "yes" : html`<span class="tag warn">disabled</span>`}</td>
            <td class="actions">
              <${ReasonButton} testid="policy-run" class="primary" why=${runBlocked(p)}
                onClick=${() => runNow(p, setError)}>Run now<//>
              <a class="button" href=${`/executions?policy=${p.id}`}>Executions</a>
              <a class="button" href=${`/policies/${p.id}`}>Edit</a>
              <button type="button" class="danger" data-testid="policy-delete" onClick=${() => remove(p)}>Delete</button>
            </td>
          </tr>`)}</tbody>
        </table>`}
    ${dialog}
  </section>`;
}

const DEFAULTS = {
  name: "", description: "", source_registry: "", target_registry: "", repositories: "",
  exclude_repositories: "", tags: "", exclude_tags: "", labels: "", dest_namespace: "", flatten: 0,
  trigger: "manual", cron: "", override: true, replicate_deletion: false, enabled: true,
  template: "distribution", jobs: 8, bandwidth_kbps: 0,
};

// The form's values from a policy (lists as one pattern per line).
function toForm(p) {
  const v = { ...DEFAULTS };
  for (const k of Object.keys(DEFAULTS)) if (p[k] !== undefined && p[k] !== null) v[k] = p[k];
  for (const k of ["repositories", "exclude_repositories", "tags", "exclude_tags", "labels"]) v[k] = (p[k] || []).join("\n");
  return v;
}

// The request body from the form's values.
function toBody(v) {
  const b = {
    name: v.name.trim(), description: v.description, source_registry: Number(v.source_registry),
    target_registry: Number(v.target_registry), repositories: splitList(v.repositories),
    exclude_repositories: splitList(v.exclude_repositories), tags: splitList(v.tags),
    exclude_tags: splitList(v.exclude_tags), labels: splitList(v.labels), dest_namespace: v.dest_namespace.trim(),
    flatten: Number(v.flatten), trigger: v.trigger, override: !!v.override,
    replicate_deletion: !!v.replicate_deletion, enabled: !!v.enabled, template: v.template,
    jobs: Number(v.jobs), bandwidth_kbps: Number(v.bandwidth_kbps),
  };
  if (v.trigger === "cron") b.cron = v.cron.trim();
  return b;
}

const ACTION_TEXT = { copy: "copy", "up-to-date": "up to date", kept: "kept (differs, override off)" };

// What a preview found: totals, then each repository with its target name
// and its tags, each marked copy, up to date or kept.
function PreviewResult({ preview }) {
  const t = preview.totals || {};
  const repos = preview.repositories || [];
  return html`<div class="preview" data-testid="preview">
    <p class="totals" data-testid="preview-totals">${`${t.repositories ?? repos.length} repositories, ${t.tags ?? 0} tags: `}<strong>${t.copy ?? 0} to copy</strong>${`, ${t.up_to_date ?? 0} up to date, ${t.kept ?? 0} kept`}</p>
    ${repos.length === 0 ? html`<p class="empty">The filters select nothing on the source.</p>` : html`
    <table class="list">
      <thead><tr><th>Source repository</th><th>Target repository</th><th>Tags</th></tr></thead>
      <tbody>${repos.map((r) => html`<tr data-testid="preview-repo" data-repository=${r.repository}>
        <td class="mono">${r.repository}</td>
        <td class="mono">${r.dest_repository}</td>
        <td>${(r.tags || []).map((tg) => html`<span class=${"chip a-" + tg.action} data-testid="preview-tag"
            data-tag=${tg.tag} data-action=${tg.action} title=${`${ACTION_TEXT[tg.action] || tg.action}: ${tg.digest || ""}`}>
            ${tg.tag} <span class="small">${ACTION_TEXT[tg.action] || tg.action}</span></span>`)}</td>
      </tr>`)}</tbody>
    </table>`}
  </div>`;
}

// The create/edit form of a policy (params.id when editing).
export function PolicyForm({ params }) {
  const id = params.id;
  const [v, setV] = useState(null);
  const [saved, setSaved] = useState(null); // the policy as stored
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const [preview, setPreview] = useState(null);
  const [previewBusy, setPreviewBusy] = useState(false);
  const [dirty, setDirty] = useState(false);
  const [dialog, ask] = useConfirm();
  const ctx = useLoad(async () => {
    const [registries, templates, policy] = await Promise.all([
      getList("/registries?page_size=500"), getList("/templates"), id ? get(`/policies/${id}`) : null]);
    setSaved(policy);
    setV(policy ? toForm(policy) : { ...DEFAULTS,
      source_registry: registries[0] ? String(registries[0].id) : "",
      target_registry: registries[1] ? String(registries[1].id) : "" });
    return { registries, templates };
  }, [id]);
  if (ctx.error && !ctx.data) return html`<section><h1>Policy</h1><${ErrorBanner} error=${ctx.error} /></section>`;
  if (!v || !ctx.data) return html`<section><p class="muted">Loading…</p></section>`;
  const { registries, templates } = ctx.data;
  const set = (k) => (e) => {
    setV({ ...v, [k]: e.target.type === "checkbox" ? e.target.checked : e.target.value });
    setDirty(true);
  };
  const save = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const p = id ? await put(`/policies/${id}`, toBody(v)) : await post("/policies", toBody(v));
      setSaved(p);
      setV(toForm(p));
      setDirty(false);
      toast(`policy ${p.name} saved`);
      if (!id) navigate(`/policies/${p.id}`, { replace: true });
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  const doPreview = async () => {
    setPreviewBusy(true);
    setError(null);
    setPreview(null);
    try {
      setPreview(await post(`/policies/${id}/preview`));
    } catch (err) {
      setError(err);
    } finally {
      setPreviewBusy(false);
    }
  };
  const remove = async () => {
    if (!await ask({ title: `Delete policy ${saved.name}?`, ok: "Delete", danger: true,
                     message: "Its executions and their task logs are deleted with it." })) return;
    try {
      await del(`/policies/${id}`);
      toast(`policy ${saved.name} deleted`);
      navigate("/policies");
    } catch (err) {
      setError(err);
    }
  };
  const pendingEdit = dirty ? "save your changes first" : null;
  const regOptions = registries.map((r) => html`<option value=${String(r.id)}>${r.name} (${r.url})</option>`);
  const tplNames = templates.map((t) => t.name);
  if (v.template && !tplNames.includes(v.template)) tplNames.push(v.template);
  return html`<section>
    <p class="crumbs"><a href="/policies">Policies</a> /</p>
    <div class="head">
      <h1>${id ? `Policy ${saved ? saved.name : ""}` : "New policy"}</h1>
      <div class="buttons">
        <${ReasonButton} testid="preview-button" why=${!saved ? "save the policy first" : pendingEdit}
          disabled=${previewBusy} onClick=${doPreview}>${previewBusy ? "Previewing…" : "Preview"}<//>
        <${ReasonButton} testid="policy-run" class="primary" why=${saved ? pendingEdit || runBlocked(saved) : runBlocked(null)}
          onClick=${() => runNow(saved, setError)}>Run now<//>
        ${saved && html`<a class="button" href=${`/executions?policy=${saved.id}`}>Executions</a>`}
      </div>
    </div>
    <${ErrorBanner} error=${error} onClose=${() => setError(null)} />
    ${registries.length < 2 && html`<p class="banner warn">A policy needs a source and a target registry:
      ${" "}<a href="/registries/new">add registries</a> first.</p>`}
    ${preview && html`<${PreviewResult} preview=${preview} />`}
    <form class="form" onSubmit=${save} data-testid="policy-form">
      <fieldset><legend>Policy</legend>
      <${Field} label="Name" id="pol-name" help="A unique name, 1-128 characters.">
        <input id="pol-name" value=${v.name} onInput=${set("name")} required maxlength="128" />
      <//>
      <${Field} label="Description" id="pol-description" help="What it is for; shown in the list.">
        <input id="pol-description" value=${v.description} onInput=${set("description")} />
      <//>
      <${Field} label="Source registry" id="pol-source" help="Where the images are read from.">
        <select id="pol-source" value=${String(v.source_registry)} onChange=${set("source_registry")} required>
          <option value="" disabled>choose…</option>${regOptions}</select>
      <//>
      <${Field} label="Target registry" id="pol-target" help="Where they are written to.">
        <select id="pol-target" value=${String(v.target_registry)} onChange=${set("target_registry")} required>
          <option value="" disabled>choose…</option>${regOptions}</select>
      <//>
      </fieldset>
      <fieldset><legend>What to copy</legend>
      <${Field} label="Repositories" id="pol-repositories" help="Glob patterns, one per line (team/**, app-?). Empty: every repository of the source's catalog.">
        <textarea id="pol-repositories" rows="3" class="mono" value=${v.repositories} onInput=${set("repositories")} placeholder="team/**"></textarea>
      <//>
      <${Field} label="Exclude repositories" id="pol-exclude-repositories" help="Glob patterns, one per line, left out even when included above.">
        <textarea id="pol-exclude-repositories" rows="2" class="mono" value=${v.exclude_repositories} onInput=${set("exclude_repositories")}></textarea>
      <//>
      <${Field} label="Tags" id="pol-tags" help="Glob patterns of tags, one per line (v*, release-*). Empty: every tag.">
        <textarea id="pol-tags" rows="2" class="mono" value=${v.tags} onInput=${set("tags")}></textarea>
      <//>
      <${Field} label="Exclude tags" id="pol-exclude-tags" help="Glob patterns of tags that are never copied (*-rc*).">
        <textarea id="pol-exclude-tags" rows="2" class="mono" value=${v.exclude_tags} onInput=${set("exclude_tags")}></textarea>
      <//>
      <${Field} label="Labels" id="pol-labels" help="Label names, one per line: only artifacts carrying every one are copied. Harbor sources only (Harbor's label filter); empty: no label filter.">
        <textarea id="pol-labels" rows="1" class="mono" value=${v.labels} onInput=${set("labels")}></textarea>
      <//>
      </fieldset>
      <fieldset><legend>Where to put it</legend>
      <${Field} label="Destination namespace" id="pol-dest-namespace" help="A path put in front of every repository on the target (mirror, team/mirror). Empty: the source's names.">
        <input id="pol-dest-namespace" class="mono" value=${v.dest_namespace} onInput=${set("dest_namespace")} placeholder="mirror" />
      <//>
      <${Field} label="Flattening" id="pol-flatten" help="Harbor's flattening: how many leading levels of the source name to drop before the namespace is added.">
        <select id="pol-flatten" value=${String(v.flatten)} onChange=${set("flatten")}>
          <option value="0">none: a/b/c stays a/b/c</option>
          <option value="1">1 level: a/b/c becomes b/c</option>
          <option value="2">2 levels: a/b/c becomes c</option>
          <option value="3">3 levels</option>
          <option value="-1">all: only the last level (a/b/c becomes c)</option>
          ${![-1, 0, 1, 2, 3].includes(Number(v.flatten)) && html`<option value=${String(v.flatten)}>${v.flatten} levels</option>`}
        </select>
      <//>
      <${Field} label="Override" id="pol-override" help="Overwrite a target tag that points at another image. Off: such tags are kept as they are.">
        <label class="check"><input type="checkbox" id="pol-override" checked=${v.override} onChange=${set("override")} /> overwrite differing tags</label>
      <//>
      </fieldset>
      <fieldset><legend>When</legend>
      <${Field} label="Trigger" id="pol-trigger" help="Manual: only Run now (or the API). Cron: on a schedule. Event: when the source's webhook reports a push.">
        <select id="pol-trigger" value=${v.trigger} onChange=${set("trigger")}>
          <option value="manual">manual</option><option value="cron">cron</option><option value="event">event</option>
        </select>
      <//>
      ${v.trigger === "cron" && html`<${Field} label="Cron schedule" id="pol-cron" help="Five fields in UTC: minute hour day-of-month month day-of-week (0 2 * * * is 02:00 every day), Harbor's six with seconds first (0 0 2 * * *), or @daily, @hourly.">
        <input id="pol-cron" class="mono" value=${v.cron} onInput=${set("cron")} placeholder="0 2 * * *" required />
      <//>`}
      <${Field} label="Replicate deletions" id="pol-replicate-deletion" help="Event trigger only: when a tag is deleted on the source, delete it on the target too.">
        <label class="check"><input type="checkbox" id="pol-replicate-deletion" checked=${v.replicate_deletion} onChange=${set("replicate_deletion")} /> delete on the target too</label>
      <//>
      <${Field} label="Enabled" id="pol-enabled" help="A disabled policy never runs: no cron, no events, and Run now is refused.">
        <label class="check"><input type="checkbox" id="pol-enabled" checked=${v.enabled} onChange=${set("enabled")} /> enabled</label>
      <//>
      </fieldset>
      <fieldset><legend>How</legend>
      <${Field} label="Template" id="pol-template" help="The process template: the stages each repository goes through (see Templates).">
        <select id="pol-template" value=${v.template} onChange=${set("template")}>
          ${tplNames.map((n) => html`<option value=${n}>${n}</option>`)}
        </select>
      <//>
      <${Field} label="Jobs" id="pol-jobs" help="How many repositories are replicated at once, 1-256.">
        <input id="pol-jobs" type="number" min="1" max="256" value=${v.jobs} onInput=${set("jobs")} />
      <//>
      <${Field} label="Bandwidth (KiB/s)" id="pol-bandwidth" help="Rate limit of each task (repository) in KiB/s; 0 is unlimited.">
        <input id="pol-bandwidth" type="number" min="0" value=${v.bandwidth_kbps} onInput=${set("bandwidth_kbps")} />
      <//>
      </fieldset>
      <div class="form-actions">
        <button type="submit" class="primary" data-testid="save" disabled=${busy}>${id ? "Save" : "Create"}</button>
        <a class="button" href="/policies">Cancel</a>
        ${saved && html`<button type="button" class="danger" data-testid="policy-delete" onClick=${remove}>Delete</button>`}
      </div>
    </form>
    ${dialog}
  </section>`;
}
