// pages/registries.js - the registries replication reads from and writes
// to: the list (with Test connection and Delete) at /registries, and the
// form at /registries/new and /registries/:id. Passwords and webhook
// secrets are write-only: the form never shows them, and an empty field
// on edit keeps what is stored.
import { useState } from "preact/hooks";
import { html } from "../html.js";
import { del, get, post, put } from "../api.js";
import { navigate } from "../router.js";
import { ErrorBanner, Field, getList, toast, useConfirm, useLoad } from "../ui.js";

// Tests a stored registry (POST /registries/{id}/ping); resolves to
// {ok, error?}; a failed request counts as not ok.
async function ping(id) {
  try {
    return await post(`/registries/${id}/ping`);
  } catch (e) {
    return { ok: false, error: e.message };
  }
}

// The outcome of a Test connection, as text.
function PingResult({ result }) {
  if (!result) return null;
  if (result.busy) return html`<span class="ping" data-testid="ping-result" data-ok="">testing…</span>`;
  return html`<span class=${result.ok ? "ping ok" : "ping bad"} data-testid="ping-result" data-ok=${String(result.ok)}>
    ${result.ok ? "connection ok" : `failed: ${result.error || "no answer"}`}</span>`;
}

// One row of the list, with its actions.
function RegistryRow({ r, onDelete }) {
  const [result, setResult] = useState(null);
  const test = async () => {
    setResult({ busy: true });
    setResult(await ping(r.id));
  };
  return html`<tr data-testid="registry-row" data-name=${r.name}>
    <td><a href=${`/registries/${r.id}`} data-testid="registry-link">${r.name}</a>
      ${r.description && html`<div class="muted small">${r.description}</div>`}</td>
    <td class="mono">${r.url}</td>
    <td>${r.kind}</td>
    <td>${r.username || html`<span class="muted">anonymous</span>`}</td>
    <td>${r.has_password ? "set" : html`<span class="muted">none</span>`}</td>
    <td>${r.has_webhook_secret ? "set" : html`<span class="muted">none</span>`}${r.insecure ? html` <span class="tag warn">TLS unchecked</span>` : null}</td>
    <td class="actions">
      <button type="button" data-testid="registry-ping" onClick=${test}>Test connection</button>
      <a class="button" href=${`/registries/${r.id}`}>Edit</a>
      <button type="button" class="danger" data-testid="registry-delete" onClick=${() => onDelete(r)}>Delete</button>
      <div><${PingResult} result=${result} /></div>
    </td>
  </tr>`;
}

// The list of registries.
export function Registries() {
  const list = useLoad(() => getList("/registries?page_size=500"), []);
  const [error, setError] = useState(null);
  const [dialog, ask] = useConfirm();
  const remove = async (r) => {
    const yes = await ask({ title: `Delete registry ${r.name}?`, ok: "Delete", danger: true,
      message: "Policies that use it must be changed or deleted first. Its stored password and webhook secret are deleted with it." });
    if (!yes) return;
    try {
      await del(`/registries/${r.id}`);
      toast(`registry ${r.name} deleted`);
      list.reload();
    } catch (e) {
      setError(e);
    }
  };
  const rows = list.data || [];
  return html`<section>
    <div class="head">
      <h1>Registries</h1>
      <a class="button primary" href="/registries/new" data-testid="registry-new">New registry</a>
    </div>
    <p class="lead">Where images come from and go to: CNCF Distribution or any OCI registry.</p>
    <${ErrorBanner} error=${error || list.error} onClose=${error ? () => setError(null) : null} />
    ${list.loading && !list.data ? html`<p class="muted">Loading…</p>` : rows.length === 0
      ? html`<p class="empty">No registries yet. <a href="/registries/new">Add the first one</a>.</p>`
      : html`<table class="list" data-testid="registries">
          <thead><tr><th>Name</th><th>URL</th><th>Kind</th><th>User</th><th>Password</th><th>Webhook secret</th><th></th></tr></thead>
          <tbody>${rows.map((r) => html`<${RegistryRow} key=${r.id} r=${r} onDelete=${remove} />`)}</tbody>
        </table>`}
    ${dialog}
  </section>`;
}

const EMPTY = { name: "", url: "", kind: "distribution", description: "", username: "", ca_file: "", cert_file: "",
                key_file: "", insecure: false, creds: {}, opts: {} };

// The request body for a create or update from the form's values: the
// password and secret only when typed (or cleared on purpose).
function body(v, editing) {
  const b = { name: v.name.trim(), url: v.url.trim(), kind: v.kind.trim() || "distribution",
              description: v.description, username: v.username.trim() || null,
              ca_file: v.ca_file.trim() || null, cert_file: v.cert_file.trim() || null,
              key_file: v.key_file.trim() || null, insecure: !!v.insecure };
  if (v.password) b.password = v.password;
  else if (editing && v.clear_password) b.password = null;
  if (v.webhook_secret) b.webhook_secret = v.webhook_secret;
  else if (editing && v.clear_secret) b.webhook_secret = null;
  if (!editing && !b.username) delete b.username;
  for (const f of ["ca_file", "cert_file", "key_file"]) if (!editing && !b[f]) delete b[f];
  // the kind's own credential fields: write-only, sent only when typed
  const creds = Object.fromEntries(Object.entries(v.creds || {}).filter(([, x]) => x !== ""));
  if (Object.keys(creds).length) b.credentials = creds;
  const opts = Object.fromEntries(Object.entries(v.opts || {}).filter(([, x]) => x !== ""));
  if (Object.keys(opts).length || editing) b.options = opts;
  return b;
}

// The fields of the kind's own credentials (beyond username and password)
// and its options: the credentials write-only (a stored one says so), the
// options prefilled.
function KindFields({ kind, v, setV, stored }) {
  if (!kind) return null;
  const fields = (kind.credentials || []).filter((c) => c.name !== "username" && c.name !== "password");
  const setIn = (bag, name) => (e) => setV({ ...v, [bag]: { ...v[bag], [name]: e.target.value } });
  const isSet = (name) => (stored.credentials_set || []).includes(name);
  return html`
    ${fields.length > 0 && html`<fieldset data-testid="kind-credentials"><legend>${kind.name} credentials</legend>
      ${fields.map((c) => html`<${Field} label=${c.label + (c.required ? " (required)" : "")} id=${"reg-cred-" + c.name}
          help=${(isSet(c.name) ? "Stored; never shown. Leave empty to keep it. " : "") + (c.help || (c.secret ? "Write-only: stored encrypted." : ""))}>
        <input id=${"reg-cred-" + c.name} data-testid=${"cred-" + c.name} type=${c.secret ? "password" : "text"}
          autocomplete="off" value=${v.creds[c.name] || ""} onInput=${setIn("creds", c.name)}
          placeholder=${isSet(c.name) ? "(stored; leave empty to keep)" : ""} />
      <//>`)}
    </fieldset>`}
    ${(kind.options || []).length > 0 && html`<fieldset data-testid="kind-options"><legend>${kind.name} options</legend>
      ${kind.options.map((o) => html`<${Field} label=${o.label || o.name} id=${"reg-opt-" + o.name}
          help=${(o.help || "") + (o.default ? ` Default: ${o.default}.` : "")}>
        <input id=${"reg-opt-" + o.name} data-testid=${"opt-" + o.name} value=${v.opts[o.name] || ""}
          onInput=${setIn("opts", o.name)} />
      <//>`)}
    </fieldset>`}`;
}

// The create/edit form; params.id is set when editing.
export function RegistryForm({ params }) {
  const id = params.id;
  const editing = !!id;
  const [v, setV] = useState(null);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState(null);
  const kinds = useLoad(() => get("/kinds"), []);
  const cur = useLoad(async () => {
    if (!editing) { setV({ ...EMPTY }); return null; }
    const r = await get(`/registries/${id}`);
    setV({ ...EMPTY, ...r, description: r.description || "", username: r.username || "", ca_file: r.ca_file || "",
           cert_file: r.cert_file || "", key_file: r.key_file || "", creds: {}, opts: { ...(r.options || {}) } });
    return r;
  }, [id]);
  if (cur.error) return html`<section><h1>Registry</h1><${ErrorBanner} error=${cur.error} /></section>`;
  if (!v) return html`<section><p class="muted">Loading…</p></section>`;
  const set = (k) => (e) => setV({ ...v, [k]: e.target.type === "checkbox" ? e.target.checked : e.target.value });
  const save = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const r = editing ? await put(`/registries/${id}`, body(v, true)) : await post("/registries", body(v, false));
      toast(`registry ${r.name} saved`);
      navigate("/registries");
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  const test = async () => {
    setResult({ busy: true });
    setResult(await ping(id));
  };
  const stored = cur.data || {};
  const kindList = (kinds.data || []).filter((k) => !k.error);
  const kind = kindList.find((k) => k.name === v.kind);
  return html`<section>
    <p class="crumbs"><a href="/registries">Registries</a> /</p>
    <h1>${editing ? `Registry ${stored.name}` : "New registry"}</h1>
    <${ErrorBanner} error=${error} onClose=${() => setError(null)} />
    <form class="form" onSubmit=${save} data-testid="registry-form">
      <fieldset><legend>Registry</legend>
      <${Field} label="Name" id="reg-name" help="How policies refer to it: letters, digits, '.', '_' or '-'.">
        <input id="reg-name" value=${v.name} onInput=${set("name")} required maxlength="128" />
      <//>
      <${Field} label="URL" id="reg-url" help="The registry's base URL, e.g. https://registry.example.com (no path for a plain registry, no credentials).">
        <input id="reg-url" value=${v.url} onInput=${set("url")} required placeholder="https://registry.example.com" />
      <//>
      <${Field} label="Kind" id="reg-kind" help=${"How the registry is spoken to (docs/registry-kinds.md). "
          + ((kind && kind.description) || "")}>
        <select id="reg-kind" data-testid="reg-kind" value=${v.kind}
          onChange=${(e) => setV({ ...v, kind: e.target.value, creds: {}, opts: {} })}>
          ${(kindList.length ? kindList : [{ name: v.kind }]).map((k) => html`<option value=${k.name}>${k.name}</option>`)}
        </select>
      <//>
      <${Field} label="Description" id="reg-description" help="Free text for the people who read this list.">
        <input id="reg-description" value=${v.description} onInput=${set("description")} />
      <//>
      </fieldset>
      <fieldset><legend>Access</legend>
      <${Field} label="Username" id="reg-username" help="Leave empty for anonymous access.">
        <input id="reg-username" value=${v.username} onInput=${set("username")} autocomplete="off" />
      <//>
      <${Field} label="Password" id="reg-password"
        help=${editing
          ? (stored.has_password ? "A password is stored; it is never shown. Leave empty to keep it, or type a new one." : "No password is stored. Type one to set it.")
          : "Write-only: it is stored encrypted and never shown again."}>
        <input id="reg-password" type="password" value=${v.password || ""} onInput=${set("password")} autocomplete="new-password"
          placeholder=${editing && stored.has_password ? "(stored; leave empty to keep)" : ""} />
        ${editing && stored.has_password && html`<label class="check"><input type="checkbox" id="reg-clear-password"
            checked=${!!v.clear_password} onChange=${set("clear_password")} /> remove the stored password</label>`}
      <//>
      <${Field} label="CA file" id="reg-ca-file" help="Path, on the daemon's host, of an extra CA certificate to trust for this registry.">
        <input id="reg-ca-file" value=${v.ca_file} onInput=${set("ca_file")} />
      <//>
      <${Field} label="Client certificate file" id="reg-cert-file" help="For a registry that requires client certificates (mTLS): path, on the daemon's host, of the certificate (PEM) to present.">
        <input id="reg-cert-file" value=${v.cert_file} onInput=${set("cert_file")} />
      <//>
      <${Field} label="Client key file" id="reg-key-file" help="Path, on the daemon's host, of the certificate's private key (PEM, not encrypted); the key stays in its file. Empty: the key is in the certificate's file.">
        <input id="reg-key-file" value=${v.key_file} onInput=${set("key_file")} />
      <//>
      <${Field} label="Skip TLS verification" id="reg-insecure" help="Accept any certificate. Only for test registries: it allows a man in the middle.">
        <label class="check"><input type="checkbox" id="reg-insecure" checked=${v.insecure} onChange=${set("insecure")} /> insecure</label>
      <//>
      <${Field} label="Webhook secret" id="reg-webhook-secret"
        help=${(editing && stored.has_webhook_secret ? "A secret is stored (never shown); leave empty to keep it. " : "")
          + "At least 16 characters. Webhooks from this registry must send it as 'Authorization: Bearer <secret>'."}>
        <input id="reg-webhook-secret" type="password" value=${v.webhook_secret || ""} onInput=${set("webhook_secret")} autocomplete="new-password" />
        ${editing && stored.has_webhook_secret && html`<label class="check"><input type="checkbox" id="reg-clear-secret"
            checked=${!!v.clear_secret} onChange=${set("clear_secret")} /> remove the stored secret</label>`}
      <//>
      </fieldset>
      <${KindFields} kind=${kind} v=${v} setV=${setV} stored=${stored} />
      <div class="form-actions">
        <button type="submit" class="primary" data-testid="save" disabled=${busy}>${editing ? "Save" : "Create"}</button>
        <a class="button" href="/registries">Cancel</a>
        ${editing && html`<button type="button" data-testid="registry-ping" onClick=${test}
            title="Tests the saved settings: save your changes first">Test connection</button>
          <${PingResult} result=${result} />`}
      </div>
    </form>
  </section>`;
}
