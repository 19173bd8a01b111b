// pages/executions.js - executions: the list at /executions (filters by
// policy, status and trigger in the URL query, paged), and one execution at
// /executions/:id (its header, Stop and Retry, its tasks paged) with an
// open task at /executions/:id/tasks/:task (its stages in template order,
// each stage's output, the task log). Everything follows the event stream.
import { useEffect, useRef, useState } from "preact/hooks";
import { html } from "../html.js";
import { get, post, request } from "../api.js";
import { navigate } from "../router.js";
import {
  Badge, ErrorBanner, JsonView, LiveMark, Pager, ReasonButton, Time, active, bytes, duration, href,
  getList, intParam, throttle, toast, useConfirm, useEvents, useLoad, useNow,
} from "../ui.js";
import { ExecTable, STATUSES, countStatuses } from "./dashboard.js";

const TRIGGERS = ["manual", "cron", "event"];
const PAGE_SIZES = [20, 50, 100, 200];

// Whether execution e passes the list's filters f.
function passes(e, f) {
  return (!f.policy || String(e.policy) === String(f.policy)) && (!f.status || e.status === f.status)
    && (!f.trigger || e.trigger === f.trigger);
}

// ---- the list ---------------------------------------------------------------

// The executions list; query: policy, status, trigger, page, page_size.
export function Executions({ query }) {
  const f = { policy: query.policy || "", status: query.status || "", trigger: query.trigger || "" };
  const page = intParam(query.page, 1);
  const size = Math.min(intParam(query.page_size, 50), 500);
  const link = (q) => href("/executions", { ...f, page_size: size === 50 ? "" : size, ...q });
  const data = useLoad(async () => {
    const [res, counts, policies] = await Promise.all([
      request("GET", `/executions${href("", { ...f, page, page_size: size })}`, undefined, { raw: true }),
      get(`/executions/counts${href("", { policy: f.policy, trigger: f.trigger })}`),
      getList("/policies?page_size=500")]);
    const total = Number(res.headers.get("X-Total-Count") || 0);
    return { rows: res.data, total, full: page * size < total, counts, policies };
  }, [f.policy, f.status, f.trigger, page, size]);
  // the counts over all pages follow the stream, fetched again at most once a second
  const recount = useRef(null);
  recount.current = recount.current || throttle(async () => {
    try {
      const counts = await get(`/executions/counts${href("", { policy: f.policy, trigger: f.trigger })}`);
      data.set((d) => (d ? { ...d, counts } : d));
    } catch { /* the next event tries again */ }
  }, 1000);
  useEffect(() => () => recount.current.cancel(), []);
  const live = useEvents(null, (type, ev) => {
    if (type !== "execution" || !ev || !ev.id) return;
    recount.current();
    data.set((d) => {
      if (!d) return d;
      const i = d.rows.findIndex((x) => x.id === ev.id);
      if (i >= 0) {
        const rows = d.rows.slice();
        rows[i] = { ...rows[i], ...ev };
        return { ...d, rows };
      }
      if (page !== 1 || !passes(ev, f) || (d.rows[0] && ev.id < d.rows[0].id)) return d;
      return { ...d, rows: [ev, ...d.rows].slice(0, size), total: d.total + 1 };
    });
  });
  const { rows = [], full = false, policies = [], total = 0, counts: all } = data.data || {};
  const now = useNow(1000, rows.some((e) => active(e.status)));
  const names = Object.fromEntries(policies.map((p) => [p.id, p.name]));
  const counts = (all && all.by_status) || countStatuses(rows);
  const pick = (k) => (e) => navigate(link({ [k]: e.target.value, page: "" }), { replace: true });
  return html`<section>
    <div class="head"><h1>Executions</h1><${LiveMark} state=${live} /></div>
    <form class="filters" data-testid="filters" onSubmit=${(e) => e.preventDefault()}>
      <label>Policy <select data-testid="filter-policy" value=${f.policy} onChange=${pick("policy")}>
        <option value="">all</option>
        ${policies.map((p) => html`<option value=${String(p.id)}>${p.name}</option>`)}
      </select></label>
      <label>Status <select data-testid="filter-status" value=${f.status} onChange=${pick("status")}>
        <option value="">all</option>${STATUSES.map((s) => html`<option value=${s}>${s}</option>`)}
      </select></label>
      <label>Trigger <select data-testid="filter-trigger" value=${f.trigger} onChange=${pick("trigger")}>
        <option value="">all</option>${TRIGGERS.map((s) => html`<option value=${s}>${s}</option>`)}
      </select></label>
      <label>Per page <select data-testid="filter-page-size" value=${String(size)} onChange=${pick("page_size")}>
        ${PAGE_SIZES.map((n) => html`<option value=${String(n)}>${n}</option>`)}
      </select></label>
      ${(f.policy || f.status || f.trigger) && html`<a href="/executions" data-testid="filter-clear">clear filters</a>`}
    </form>
    <p class="counts" data-testid="page-counts">${`${all ? all.total : total} in all:`}
      ${STATUSES.map((s) => html` <a class=${"count s-" + s.toLowerCase()} data-status=${s}
        href=${link({ status: s, page: "" })}>${s} ${counts[s] || 0}</a>`)}
    </p>
    <${ErrorBanner} error=${data.error} />
    ${data.loading && !data.data ? html`<p class="muted">Loading…</p>` : rows.length === 0
      ? html`<p class="empty" data-testid="no-executions">No executions${f.policy || f.status || f.trigger ? " match these filters" : " yet"}.</p>`
      : html`<${ExecTable} rows=${rows} names=${names} now=${now} testid="executions" />`}
    <${Pager} page=${page} more=${full} link=${(p) => link({ page: p })} />
  </section>`;
}

// ---- one execution ------------------------------------------------------------

const TASK_PAGE = 50;

// "name v3 (user)" for a pinned template or function version.
function versionText(v) {
  if (!v) return "";
  const ver = v.version === 0 || v.origin === "bundled" ? "bundled" : `v${v.version}`;
  const origin = v.origin && v.origin !== "bundled" ? ` (${v.origin})` : "";
  return `${v.name} ${ver}${origin}`;
}

// The execution's header: status, trigger, times, counts, draft marker, the
// template and function versions it runs, and its error.
function Header({ e, policy, now }) {
  return html`<div class="exec-head" data-testid="execution-header">
    <dl class="facts">
      <div><dt>Status</dt><dd><${Badge} status=${e.status} testid="execution-status" />
        ${e.draft && html` <span class="tag draft" data-testid="draft">draft run</span>`}</dd></div>
      <div><dt>Policy</dt><dd>${policy ? html`<a href=${`/policies/${policy.id}`}>${policy.name}</a>` : `#${e.policy}`}</dd></div>
      <div><dt>Trigger</dt><dd>${e.trigger}${e.triggers > 1 ? ` (${e.triggers} triggers coalesced)` : ""}
        ${e.scope === "artifacts" ? html` <span class="muted">(webhook artifacts only)</span>` : null}</dd></div>
      <div><dt>Created</dt><dd><${Time} iso=${e.created} full /></dd></div>
      <div><dt>Started</dt><dd><${Time} iso=${e.started} full /></dd></div>
      <div><dt>Finished</dt><dd><${Time} iso=${e.finished} full /></dd></div>
      <div><dt>Duration</dt><dd data-testid="execution-duration">${duration(e.started, e.finished, now) || "—"}</dd></div>
      <div><dt>Tasks</dt><dd data-testid="execution-counts">${`${e.total} in all: `}<span class="c-ok">${e.succeeded} succeeded</span>${", "}<span class="c-bad">${e.failed} failed</span>${", "}<span class="c-stop">${e.stopped} stopped</span>${`, ${e.in_progress} in progress`}</dd></div>
      <div><dt>Template</dt><dd data-testid="execution-template">${e.template ? versionText(e.template)
        : html`<span class="muted">${policy ? policy.template : ""} ${active(e.status) ? "(pinned when it starts)" : "(no version recorded)"}</span>`}</dd></div>
    </dl>
    ${e.functions && e.functions.length > 0 && html`<div class="functions" data-testid="execution-functions">
      <span class="muted">Functions:</span>
      ${e.functions.map((fn) => html` <span class=${"chip o-" + fn.origin} title=${fn.sha256 || ""}>${versionText(fn)}</span>`)}
    </div>`}
    ${e.error && html`<p class="banner error" data-testid="execution-error">${e.error}</p>`}
  </div>`;
}

// Why Stop is not possible for e, or null.
function stopBlocked(e) {
  return active(e.status) ? null : `it is ${e.status}`;
}

// Why Retry is not possible for e, or null.
function retryBlocked(e) {
  if (active(e.status)) return "it is still running";
  if (e.failed + e.stopped === 0 && !e.error) return "no task failed or was stopped";
  return null;
}

// One row of the task table.
function TaskRow({ t, open, link, copied, now }) {
  return html`<tr data-testid="task-row" data-id=${t.id} data-repository=${t.repository}
      class=${open ? "open" : ""} aria-selected=${open ? "true" : "false"}>
    <td class="id"><a href=${link} data-testid="task-link">${t.id}</a></td>
    <td class="mono"><a href=${link}>${t.repository}</a>${t.dest_repository !== t.repository
      ? html`<div class="muted small">→ ${t.dest_repository}</div>` : null}</td>
    <td><${Badge} status=${t.status} />${t.kind === "delete" ? html` <span class="tag">delete</span>` : null}</td>
    <td class="small c-tags">${(t.tags || []).length} tag${(t.tags || []).length === 1 ? "" : "s"}</td>
    <td class="small c-tries">${t.attempts}</td>
    <td class="small c-dur">${duration(t.started, t.finished, now)}${copied ? html`<div class="muted" data-testid="task-bytes" data-bytes=${copied}>${bytes(copied)} copied</div>` : null}</td>
    <td class="err small">${t.error || ""}</td>
  </tr>`;
}

// "distribution/pull_post v2 (user)" for a stage result.
function stageFunction(s) {
  if (s.function_version === undefined && !s.function_origin) return s.function;
  const v = s.function_origin === "bundled" || s.function_version === 0 ? "bundled" : `v${s.function_version}`;
  return `${s.function} ${v}${s.function_origin && s.function_origin !== "bundled" ? ` (${s.function_origin})` : ""}`;
}

// One stage result: status, duration, function and version, the error
// inline, and the output as collapsible JSON; a failed stage starts open.
function Stage({ s, i, now }) {
  const failed = s.status === "failed";
  return html`<details class=${"stage st-" + s.status} open=${failed} data-testid="stage" data-name=${s.name} data-status=${s.status}>
    <summary>
      <span class="idx">${i + 1}</span>
      <span class="name" data-testid="stage-name">${s.name}</span>
      <${Badge} status=${s.status} testid="stage-status" />
      <span class="fn mono" data-testid="stage-function">${stageFunction(s)}</span>
      <span class="dur" data-testid="stage-duration">${duration(s.started, s.finished, now)}</span>
    </summary>
    ${s.error && html`<pre class="stage-error" data-testid="stage-error">${s.error}</pre>`}
    ${s.output !== undefined && s.output !== null
      ? html`<div class="output"><span class="muted small">output</span><${JsonView} value=${s.output} open=${2} testid="stage-output" /></div>`
      : html`<p class="muted small">no output</p>`}
  </details>`;
}

const LOG_EVERY = 2000; // ms between log fetches while the task runs

// The open task: its facts, stages in template order, and its log (live
// while it runs: re-fetched on its events and every LOG_EVERY ms).
function TaskPanel({ id, bump, copied, closeLink, now }) {
  const [task, setTask] = useState(null);
  const [log, setLog] = useState("");
  const [error, setError] = useState(null);
  const load = useRef(null);
  load.current = async () => {
    try {
      const [t, l] = await Promise.all([get(`/tasks/${id}`), get(`/tasks/${id}/log`)]);
      setTask(t);
      setLog(typeof l === "string" ? l : "");
      setError(null);
    } catch (e) {
      setError(e);
    }
  };
  useEffect(() => { setTask(null); setLog(""); load.current(); }, [id]);
  useEffect(() => { if (bump) load.current(); }, [bump]);
  const running = task && active(task.status);
  useEffect(() => {
    if (!running) return undefined;
    const t = setInterval(() => load.current(), LOG_EVERY);
    return () => clearInterval(t);
  }, [running, id]);
  if (error && !task) return html`<div class="task-panel"><${ErrorBanner} error=${error} /></div>`;
  if (!task) return html`<div class="task-panel"><p class="muted">Loading task ${id}…</p></div>`;
  return html`<div class="task-panel" data-testid="task-panel" data-id=${task.id}>
    <div class="head">
      <h2>Task ${task.id}: <span class="mono">${task.repository}</span></h2>
      <a href=${closeLink} class="button" data-testid="task-close">Close</a>
    </div>
    <dl class="facts">
      <div><dt>Status</dt><dd><${Badge} status=${task.status} testid="task-status" /></dd></div>
      <div><dt>Target</dt><dd class="mono">${task.dest_repository}</dd></div>
      <div><dt>Kind</dt><dd>${task.kind}</dd></div>
      <div><dt>Attempts</dt><dd data-testid="task-attempts">${task.attempts}</dd></div>
      <div><dt>Started</dt><dd><${Time} iso=${task.started} full /></dd></div>
      <div><dt>Duration</dt><dd>${duration(task.started, task.finished, now) || "—"}${copied ? ` · ${bytes(copied)} copied` : ""}</dd></div>
      <div class="wide"><dt>Tags</dt><dd class="mono small" data-testid="task-tags">${(task.tags || []).join(", ")}</dd></div>
    </dl>
    ${task.error && html`<p class="banner error" data-testid="task-error">${task.error}</p>`}
    <h3>Stages</h3>
    ${task.stages.length === 0 ? html`<p class="muted">No stage has run yet.</p>` : html`<div class="stages" data-testid="stages">
      ${task.stages.map((s, i) => html`<${Stage} key=${s.name + i} s=${s} i=${i} now=${now} />`)}
    </div>`}
    <h3>Log ${running && html`<span class="live open small">following</span>`}</h3>
    <pre class="log" data-testid="task-log">${log || "(empty)"}</pre>
  </div>`;
}

// One execution, its tasks (paged) and, with params.task, the open task.
// query: page (of tasks), task_status (a filter).
export function ExecutionDetail({ params, query }) {
  const id = params.id;
  const taskId = params.task;
  const page = intParam(query.page, 1);
  const tstatus = query.task_status || "";
  const [dialog, ask] = useConfirm();
  const [error, setError] = useState(null);
  const [copied, setCopied] = useState({});
  const [bump, setBump] = useState(0);
  const exec = useLoad(async () => {
    const e = await get(`/executions/${id}`);
    const policy = await get(`/policies/${e.policy}`).catch(() => null);
    return { e, policy };
  }, [id]);
  const tasks = useLoad(() => getList(`/executions/${id}/tasks${href("", { page, page_size: TASK_PAGE, status: tstatus })}`),
    [id, page, tstatus]);
  const refetch = useRef({});
  if (!refetch.current.tasks) {
    refetch.current.tasks = throttle(() => refetch.current.reloadTasks(), 500);
    refetch.current.task = throttle(() => setBump((n) => n + 1), 300);
    refetch.current.exec = throttle(() => refetch.current.reloadExec(), 300);
  }
  refetch.current.reloadTasks = tasks.reload;
  refetch.current.reloadExec = exec.reload;
  useEffect(() => () => { for (const f of Object.values(refetch.current)) if (f.cancel) f.cancel(); }, []);
  const live = useEvents({ execution: id }, (type, ev) => {
    if (!ev) return;
    if (type === "execution") {
      const before = exec.data && exec.data.e;
      exec.set((d) => (d ? { ...d, e: { ...d.e, ...ev } } : d));
      if (before && (before.status !== ev.status || before.total !== ev.total)) {
        refetch.current.tasks();
        // a load begun before this event (Retry's, say) would put back the
        // status it read: one begun after it replaces that one
        refetch.current.exec();
      }
    } else if (type === "task") {
      const list = tasks.data || [];
      const i = list.findIndex((t) => t.id === ev.task);
      if (i >= 0) {
        tasks.set((l) => l.map((t) => (t.id === ev.task ? { ...t, status: ev.status, error: ev.error ?? t.error } : t)));
        if (!active(ev.status)) refetch.current.tasks(); // final times, attempts
      } else if (list.length < TASK_PAGE) {
        refetch.current.tasks();
      }
      if (String(ev.task) === String(taskId)) refetch.current.task();
    } else if (type === "stage") {
      if (String(ev.task) === String(taskId)) refetch.current.task();
    } else if (type === "bytes") {
      setCopied((c) => ({ ...c, [ev.task]: ev.bytes }));
    }
  }, [id]);
  const e = exec.data && exec.data.e;
  const now = useNow(1000, !!e && active(e.status));
  if (exec.error && !e) return html`<section><h1>Execution ${id}</h1><${ErrorBanner} error=${exec.error} /></section>`;
  if (!e) return html`<section><p class="muted">Loading…</p></section>`;
  const lastPage = Math.max(1, Math.ceil((tstatus ? (tstatusCount(e, tstatus) ?? 0) : e.total) / TASK_PAGE));
  const base = `/executions/${id}`;
  const q = { page: page === 1 ? "" : page, task_status: tstatus };
  const stop = async () => {
    if (!await ask({ title: `Stop execution ${id}?`, ok: "Stop", danger: true,
                     message: "Its pending and running tasks become Stopped at once and their transfers are cancelled. Retry runs them again later." })) return;
    try {
      const v = await post(`${base}/stop`);
      exec.set((d) => ({ ...d, e: { ...d.e, ...v } }));
      toast(`execution ${id} stopped`);
      refetch.current.tasks();
    } catch (err) {
      setError(err);
    }
  };
  const retry = async () => {
    const n = e.failed + e.stopped;
    if (!await ask({ title: `Retry execution ${id}?`, ok: "Retry",
                     message: `Runs its ${n} failed or stopped task${n === 1 ? "" : "s"} again; the tasks that succeeded are not run again.` })) return;
    try {
      const r = await post(`${base}/retry`);
      toast(`retrying ${r.retried} task${r.retried === 1 ? "" : "s"}`);
      exec.set((d) => ({ ...d, e: { ...d.e, status: "Pending", finished: null, error: null } }));
      exec.reload();
      refetch.current.tasks();
    } catch (err) {
      setError(err);
    }
  };
  const rows = tasks.data || [];
  return html`<section class=${taskId ? "exec with-task" : "exec"}>
    <p class="crumbs"><a href="/executions">Executions</a> /</p>
    <div class="head">
      <h1>Execution ${e.id}</h1>
      <${LiveMark} state=${live} />
      <div class="buttons">
        <${ReasonButton} testid="stop" class="danger" why=${stopBlocked(e)} onClick=${stop}>Stop<//>
        <${ReasonButton} testid="retry" why=${retryBlocked(e)} onClick=${retry}>Retry failed tasks<//>
      </div>
    </div>
    <${ErrorBanner} error=${error} onClose=${() => setError(null)} />
    <${Header} e=${e} policy=${exec.data.policy} now=${now} />
    <div class="split">
      <div class="tasks">
        <div class="head">
          <h2>Tasks</h2>
          <label class="small">Show <select data-testid="task-filter" value=${tstatus}
              onChange=${(ev) => navigate(href(taskId ? `${base}/tasks/${taskId}` : base, { task_status: ev.target.value }), { replace: true })}>
            <option value="">all</option>${STATUSES.map((s) => html`<option value=${s}>${s}</option>`)}
          </select></label>
        </div>
        <${ErrorBanner} error=${tasks.error} />
        ${rows.length === 0 && !tasks.loading ? html`<p class="empty" data-testid="no-tasks">${e.total === 0 && active(e.status)
            ? "Planning: listing the source's repositories…" : "No tasks here."}</p>`
          : html`<table class="list tasks-table" data-testid="tasks">
            <thead><tr><th>#</th><th>Repository</th><th>Status</th><th class="c-tags">Tags</th><th class="c-tries">Tries</th><th class="c-dur">Duration</th><th>Error</th></tr></thead>
            <tbody>${rows.map((t) => html`<${TaskRow} key=${t.id} t=${t} open=${String(t.id) === String(taskId)}
                link=${href(`${base}/tasks/${t.id}`, q)} copied=${copied[t.id]} now=${now} />`)}</tbody>
          </table>`}
        <${Pager} page=${page} last=${lastPage} link=${(p) => href(taskId ? `${base}/tasks/${taskId}` : base, { ...q, page: p === 1 ? "" : p })} testid="task-pager" />
      </div>
      ${taskId && html`<${TaskPanel} id=${taskId} bump=${bump} copied=${copied[taskId]} now=${now}
          closeLink=${href(base, q)} />`}
    </div>
    ${dialog}
  </section>`;
}

// How many tasks of execution e have status s, from its counts (null when
// the counts do not say: Pending and Running are counted together).
function tstatusCount(e, s) {
  if (s === "Succeeded") return e.succeeded;
  if (s === "Failed") return e.failed;
  if (s === "Stopped") return e.stopped;
  return e.in_progress;
}
