// pages/dashboard.js - the landing page: executions in flight and the
// latest ones, with counts per status, kept current by the event stream
// (each `execution` event carries the whole execution view), not polling.
import { useEffect, useRef } from "preact/hooks";
import { html } from "../html.js";
import { get } from "../api.js";
import { Badge, ErrorBanner, LiveMark, Time, active, duration, getList, throttle, useEvents, useLoad, useNow } from "../ui.js";

const WINDOW = 500; // the newest executions, in which the running ones are looked for
const RECENT = 10;
export const STATUSES = ["Pending", "Running", "Succeeded", "Failed", "Stopped"];

// Puts execution e into the list (newest first), replacing the old view.
function upsert(list, e) {
  const i = list.findIndex((x) => x.id === e.id);
  if (i >= 0) {
    const next = list.slice();
    next[i] = { ...list[i], ...e };
    return next;
  }
  return [e, ...list].sort((a, b) => b.id - a.id).slice(0, WINDOW);
}

// The counts per status of a list of executions.
export function countStatuses(list) {
  const c = Object.fromEntries(STATUSES.map((s) => [s, 0]));
  for (const e of list) c[e.status] = (c[e.status] || 0) + 1;
  return c;
}

// A table of executions (id, policy, status, trigger, progress, times).
export function ExecTable({ rows, names, now, testid }) {
  return html`<table class="list" data-testid=${testid}>
    <thead><tr><th>#</th><th>Policy</th><th>Status</th><th>Trigger</th><th>Tasks</th><th>Started</th><th>Duration</th></tr></thead>
    <tbody>${rows.map((e) => html`<tr key=${e.id} data-testid="execution-row" data-id=${e.id}>
      <td><a href=${`/executions/${e.id}`} data-testid="execution-link">${e.id}</a></td>
      <td>${names[e.policy] ? html`<a href=${`/policies/${e.policy}`}>${names[e.policy]}</a>` : `#${e.policy}`}</td>
      <td><${Badge} status=${e.status} />${e.draft ? html` <span class="tag draft">draft</span>` : null}</td>
      <td>${e.trigger}${e.triggers > 1 ? html` <span class="muted">×${e.triggers}</span>` : null}</td>
      <td><${Progress} e=${e} /></td>
      <td><${Time} iso=${e.started || e.created} /></td>
      <td>${duration(e.started, e.finished, now)}</td>
    </tr>`)}</tbody>
  </table>`;
}

// A task progress bar with its counts: succeeded, failed, stopped of total.
export function Progress({ e }) {
  const total = e.total || 0;
  const pct = (n) => (total ? `${(100 * n) / total}%` : "0");
  const ref = (el, n) => { if (el) el.style.width = pct(n); };
  return html`<div class="progress" title=${`${e.succeeded} succeeded, ${e.failed} failed, ${e.stopped} stopped, ${e.in_progress} in progress of ${total}`}>
    <div class="bar"><span class="ok" ref=${(el) => ref(el, e.succeeded)}></span><span class="bad" ref=${(el) => ref(el, e.failed)}></span><span class="stop" ref=${(el) => ref(el, e.stopped)}></span></div>
    <span class="small" data-testid="progress-text">${e.succeeded + e.failed + e.stopped}/${total}</span>
  </div>`;
}

// The dashboard.
export function Dashboard() {
  const data = useLoad(async () => {
    const [execs, policies, counts] = await Promise.all([
      getList(`/executions?page_size=${WINDOW}`), getList("/policies?page_size=500"), get("/executions/counts")]);
    return { execs, counts, names: Object.fromEntries(policies.map((p) => [p.id, p.name])) };
  }, []);
  const reload = useRef(null);
  if (!reload.current) reload.current = throttle(() => data.reload(), 1000);
  const recount = useRef(null);
  if (!recount.current) {
    recount.current = throttle(() => get("/executions/counts").then(
      (counts) => data.set((d) => (d ? { ...d, counts } : d)), () => {}), 1000);
  }
  useEffect(() => () => { reload.current.cancel(); recount.current.cancel(); }, []);
  const live = useEvents(null, (type, ev) => {
    if (type !== "execution" || !ev || !ev.id) return;
    recount.current();
    data.set((d) => (d ? { ...d, execs: upsert(d.execs, ev) } : d));
    if (data.data && !data.data.names[ev.policy]) reload.current(); // a policy created since
  });
  const { execs = [], names = {}, counts: all } = data.data || {};
  const running = execs.filter((e) => active(e.status));
  const now = useNow(1000, running.length > 0);
  const counts = (all && all.by_status) || countStatuses(execs);
  return html`<section>
    <div class="head"><h1>Dashboard</h1><${LiveMark} state=${live} /></div>
    <${ErrorBanner} error=${data.error} />
    <div class="cards" data-testid="status-counts">
      ${STATUSES.map((s) => html`<a class=${"card s-" + s.toLowerCase()} href=${`/executions?status=${s}`}
          data-testid="count" data-status=${s}>
        <span class="n">${counts[s]}</span><span class="label">${s}</span></a>`)}
    </div>
    <p class="help">${`Counts of all ${all ? all.total : execs.length} executions.`}</p>
    <h2>In progress</h2>
    ${running.length === 0 ? html`<p class="empty" data-testid="none-running">Nothing is running.</p>`
      : html`<${ExecTable} rows=${running} names=${names} now=${now} testid="running" />`}
    <h2>Recent</h2>
    ${execs.length === 0 && !data.loading ? html`<p class="empty">No executions yet. Run a policy from <a href="/policies">Policies</a>.</p>`
      : html`<${ExecTable} rows=${execs.slice(0, RECENT)} names=${names} now=${now} testid="recent" />`}
    <p><a href="/executions">All executions →</a></p>
  </section>`;
}
