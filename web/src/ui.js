// ui.js - the pieces every page shares: status badges, times and durations
// (UTC and relative), a pager, a confirm dialog (<dialog>), a collapsible
// JSON viewer, toasts and error banners, form fields with help, and hooks
// to load data and to follow the event stream. Everything renders text as
// text: no markup is ever built from strings.
import { useEffect, useRef, useState } from "preact/hooks";
import { html } from "./html.js";
import { events, get } from "./api.js";

// ---- status -----------------------------------------------------------------

// A status badge (execution, task or stage status, any case); data-status
// carries the status as given, for tests and styles.
export function Badge({ status, testid = "status" }) {
  const s = String(status || "unknown");
  return html`<span class=${"badge s-" + s.toLowerCase()} data-testid=${testid} data-status=${s}>${s}</span>`;
}

// Whether an execution or task status is still in flight.
export function active(status) {
  return status === "Pending" || status === "Running";
}

// ---- times ------------------------------------------------------------------

// Formats an ISO time as "2026-11-29 21:22:33 UTC"; "" for none.
export function utc(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (isNaN(d)) return String(iso);
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

// Formats a span in milliseconds: "850 ms", "12.4 s", "3 min 04 s", "2 h 05 min".
export function span(ms) {
  if (ms == null || isNaN(ms)) return "";
  if (ms < 0) ms = 0;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(Math.floor(s % 60)).padStart(2, "0")} s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${String(m % 60).padStart(2, "0")} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

// Formats how long ago (or how far ahead) an ISO time is: "5 s ago".
export function relative(iso, now = Date.now()) {
  if (!iso) return "";
  const t = new Date(iso).getTime();
  if (isNaN(t)) return "";
  const d = now - t;
  if (Math.abs(d) < 1000) return "just now";
  const words = span(Math.abs(d)).replace(/ \d+ (s|min)$/, "").replace(/\.\d s$/, " s");
  return d > 0 ? `${words} ago` : `in ${words}`;
}

// The duration between two ISO times; without an end, until now (for
// what still runs). "" when it has not started.
export function duration(start, end, now = Date.now()) {
  if (!start) return "";
  const a = new Date(start).getTime();
  const b = end ? new Date(end).getTime() : now;
  return span(b - a);
}

// A time: relative text with the UTC time in its title, or (full) both.
export function Time({ iso, full = false }) {
  if (!iso) return html`<span class="muted">—</span>`;
  if (full) {
    return html`<time datetime=${iso} title=${relative(iso)}>${utc(iso)}</time>
      <span class="muted"> (${relative(iso)})</span>`;
  }
  return html`<time datetime=${iso} title=${utc(iso)}>${relative(iso)}</time>`;
}

// A hook: the current time in ms, re-rendering every ms milliseconds while
// on is true (for running durations and relative times).
export function useNow(ms = 1000, on = true) {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    if (!on) return undefined;
    setNow(Date.now());
    const t = setInterval(() => setNow(Date.now()), ms);
    return () => clearInterval(t);
  }, [ms, on]);
  return now;
}

// Formats a byte count: "512 B", "3.2 MiB".
export function bytes(n) {
  if (n == null) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
}

// ---- paging -----------------------------------------------------------------

// Builds an href from path and a query object (empty values left out).
export function href(path, q) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(q || {})) {
    if (v !== undefined && v !== null && v !== "") p.set(k, String(v));
  }
  const s = p.toString();
  return s ? `${path}?${s}` : path;
}

// Reads a positive integer from a query value, else def.
export function intParam(v, def) {
  const n = Number.parseInt(v, 10);
  return Number.isInteger(n) && n > 0 ? n : def;
}

// Links to other pages of a list: link(p) gives the href of page p. With
// last (the number of pages, when known) it offers First/Last and "page N
// of M"; without it, more says whether a next page exists.
export function Pager({ page, last, more, link, testid = "pager" }) {
  const hasNext = last ? page < last : !!more;
  const item = (label, p, enabled, rel) => enabled
    ? html`<a href=${link(p)} rel=${rel} data-testid=${`${testid}-${rel}`}>${label}</a>`
    : html`<span class="off" data-testid=${`${testid}-${rel}`} aria-disabled="true">${label}</span>`;
  return html`<nav class="pager" data-testid=${testid} aria-label="pages">
    ${last ? item("« First", 1, page > 1, "first") : null}
    ${item("‹ Previous", page - 1, page > 1, "prev")}
    <span class="where" data-testid=${`${testid}-where`}>${last ? `page ${page} of ${last}` : `page ${page}`}</span>
    ${item("Next ›", page + 1, hasNext, "next")}
    ${last ? item("Last »", last, page < last, "last") : null}
  </nav>`;
}

// ---- dialogs, banners, toasts ------------------------------------------------

// One modal confirmation (<dialog>): title, message, an OK button labelled
// ok (red when danger) and Cancel; onDone(true|false).
function Confirm({ title, message, ok = "OK", danger = false, onDone }) {
  const ref = useRef(null);
  useEffect(() => {
    const d = ref.current;
    if (d && !d.open) d.showModal();
    return () => { if (d && d.open) d.close(); };
  }, []);
  return html`<dialog ref=${ref} class="confirm" data-testid="confirm" aria-labelledby="confirm-title"
      onCancel=${(e) => { e.preventDefault(); onDone(false); }}>
    <h2 id="confirm-title">${title}</h2>
    <p>${message}</p>
    <div class="actions">
      <button type="button" data-testid="confirm-cancel" onClick=${() => onDone(false)}>Cancel</button>
      <button type="button" class=${danger ? "danger solid" : "primary"} data-testid="confirm-ok"
        onClick=${() => onDone(true)}>${ok}</button>
    </div>
  </dialog>`;
}

// A hook for confirmations: returns [dialog, ask]; render dialog somewhere
// in the page, and `await ask({title, message, ok, danger})` resolves to
// true when the user confirmed.
export function useConfirm() {
  const [req, setReq] = useState(null);
  const ask = (opts) => new Promise((resolve) => setReq({ ...opts, resolve }));
  const dialog = req && html`<${Confirm} ...${req} onDone=${(v) => { setReq(null); req.resolve(v); }} />`;
  return [dialog, ask];
}

// An error banner: the message (and a failed validation's diagnostics);
// onClose, if given, adds a dismiss button.
export function ErrorBanner({ error, onClose }) {
  if (!error) return null;
  const msg = typeof error === "string" ? error : error.message || String(error);
  const diags = error.diagnostics || [];
  return html`<div class="banner error" role="alert" data-testid="error">
    <span>${msg}</span>
    ${diags.length > 0 && html`<ul>${diags.map((d) => html`<li>line ${d.line}: ${d.message}</li>`)}</ul>`}
    ${onClose && html`<button type="button" class="link close" aria-label="dismiss" onClick=${onClose}>×</button>`}
  </div>`;
}

const toastListeners = new Set();
let toastList = [];
let toastSeq = 0;

// Shows a short message at the bottom of the screen for a few seconds;
// kind is "ok" or "error".
export function toast(text, kind = "ok") {
  const t = { id: ++toastSeq, text: String(text), kind };
  toastList = [...toastList, t];
  toastListeners.forEach((fn) => fn(toastList));
  setTimeout(() => {
    toastList = toastList.filter((x) => x !== t);
    toastListeners.forEach((fn) => fn(toastList));
  }, kind === "error" ? 8000 : 4000);
}

// Where toasts appear; the shell renders it once.
export function Toasts() {
  const [list, setList] = useState(toastList);
  useEffect(() => {
    toastListeners.add(setList);
    return () => toastListeners.delete(setList);
  }, []);
  return html`<div class="toasts" aria-live="polite">
    ${list.map((t) => html`<div key=${t.id} class=${"toast " + t.kind} role="status" data-testid="toast">${t.text}</div>`)}
  </div>`;
}

// ---- forms ------------------------------------------------------------------

// A labelled form field with its help text under it; id names the control
// (children) so the label points at it.
export function Field({ label, id, help, children, wide = false }) {
  return html`<div class=${wide ? "field wide" : "field"}>
    <label for=${id}>${label}</label>
    ${children}
    ${help && html`<p class="help" id=${id + "-help"}>${help}</p>`}
  </div>`;
}

// Splits a textarea's patterns (one per line, or comma-separated) into a list.
export function splitList(text) {
  return String(text || "").split(/[\n,]/).map((s) => s.trim()).filter((s) => s !== "");
}

// A button that is disabled for a stated reason: the reason shows next to
// it and in its title, so a user knows why.
export function ReasonButton({ why, children, testid, disabled, title, ...rest }) {
  return html`<span class="reason-button">
    <button type="button" data-testid=${testid} ...${rest} disabled=${!!why || !!disabled}
      title=${why || title || ""}>${children}</button>
    ${why && html`<span class="why" data-testid=${testid ? testid + "-why" : null}>${why}</span>`}
  </span>`;
}

// ---- JSON -------------------------------------------------------------------

const JSON_CHUNK = 100; // children shown before "show more"

// One value of the JSON viewer: primitives as text, objects and arrays as
// <details> (open to depth `open`), long ones shown JSON_CHUNK at a time.
function JsonNode({ name, value, depth, open }) {
  const [limit, setLimit] = useState(JSON_CHUNK);
  const key = name !== undefined ? html`<span class="jkey">${String(name)}</span><span class="jpunct">: </span>` : null;
  if (value === null || typeof value !== "object") {
    const type = value === null ? "null" : typeof value;
    const text = type === "string" ? JSON.stringify(value) : String(value);
    return html`<div class="jrow">${key}<span class=${"j" + type}>${text}</span></div>`;
  }
  const isArr = Array.isArray(value);
  const entries = isArr ? value.map((v, i) => [i, v]) : Object.entries(value);
  const summary = isArr ? `[${entries.length}]` : `{${entries.length}}`;
  if (entries.length === 0) return html`<div class="jrow">${key}<span class="jpunct">${isArr ? "[]" : "{}"}</span></div>`;
  return html`<details class="jnode" open=${depth < open}>
    <summary>${key}<span class="jpunct">${summary}</span></summary>
    <div class="jchildren">
      ${entries.slice(0, limit).map(([k, v]) => html`<${JsonNode} key=${k} name=${k} value=${v} depth=${depth + 1} open=${open} />`)}
      ${entries.length > limit && html`<button type="button" class="link more"
          onClick=${() => setLimit(limit + JSON_CHUNK)}>show ${Math.min(JSON_CHUNK, entries.length - limit)} more of ${entries.length - limit}</button>`}
    </div>
  </details>`;
}

// A collapsible view of a JSON value, all of it rendered as text; open is
// how many levels start expanded.
export function JsonView({ value, open = 1, testid = "json" }) {
  return html`<div class="json mono" data-testid=${testid}><${JsonNode} value=${value} depth=${0} open=${open} /></div>`;
}

// ---- data -------------------------------------------------------------------

// A list answer as an array: an empty list that a server encodes as {}
// (Lua's empty table) counts as [].
export function asList(v) {
  return Array.isArray(v) ? v : [];
}

// GETs path and returns its list (see asList).
export async function getList(path) {
  return asList(await get(path));
}

// A hook that loads data with fn (async) whenever deps change. Returns
// {data, error, loading, reload, set}: set(v | fn) changes the data in place
// (for live updates), reload() fetches again.
export function useLoad(fn, deps) {
  const [state, setState] = useState({ data: undefined, error: null, loading: true });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    setState((s) => ({ ...s, loading: true }));
    Promise.resolve().then(fn).then(
      (data) => { if (live) setState({ data, error: null, loading: false }); },
      (error) => { if (live) setState((s) => ({ data: s.data, error, loading: false })); });
    return () => { live = false; };
  }, [...deps, tick]);
  return {
    ...state,
    reload: () => setTick((t) => t + 1),
    set: (v) => setState((s) => ({ ...s, data: typeof v === "function" ? v(s.data) : v })),
  };
}

// A hook that follows GET /events (narrowed by filter, e.g. {execution: 7})
// while the page is shown; onEvent(type, data) gets each event. Returns the
// connection state: "connecting", "open" or "retry".
export function useEvents(filter, onEvent, deps = []) {
  const cb = useRef(onEvent);
  cb.current = onEvent;
  const [state, setState] = useState("connecting");
  useEffect(() => {
    setState("connecting");
    return events(filter, (type, data) => cb.current(type, data), setState);
  }, deps);
  return state;
}

// A small "live" marker that says whether the event stream is connected.
export function LiveMark({ state }) {
  const label = state === "open" ? "live" : state === "retry" ? "reconnecting…" : "connecting…";
  return html`<span class=${"live " + state} data-testid="live" data-state=${state}>${label}</span>`;
}

// Calls fn at most once per ms milliseconds (trailing), for re-fetches
// triggered by bursts of events. Returns the wrapped function; .cancel()
// drops a pending call.
export function throttle(fn, ms) {
  let timer = null;
  const wrapped = (...args) => {
    if (timer) return;
    timer = setTimeout(() => { timer = null; fn(...args); }, ms);
  };
  wrapped.cancel = () => { clearTimeout(timer); timer = null; };
  return wrapped;
}
