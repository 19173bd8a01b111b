// api.js - the one client of replica serve's HTTP API. The token lives in
// sessionStorage (no cookies, so no CSRF); every call sends it as a bearer
// token. Errors arrive as ApiError with the server's message and, for a
// failed validation, its diagnostics.
const TOKEN_KEY = "replica.token";
const BASE = "/api/v1";

// An error answer of the API: status, message, diagnostics (maybe empty).
export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
    this.diagnostics = (body && Array.isArray(body.diagnostics)) ? body.diagnostics : [];
  }
}

// Returns the stored token, or null.
export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

// Stores (or, with null, forgets) the token.
export function setToken(t) {
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
}

// Listeners told when the server refused the token (the console then shows
// the login page).
const unauthorized = new Set();
export function onUnauthorized(fn) {
  unauthorized.add(fn);
  return () => unauthorized.delete(fn);
}

// Sends one request; resolves to the decoded JSON body (or the text for a
// text/plain answer, null for 204), rejects with ApiError. opts.raw returns
// {status, headers, data} instead of the body alone.
export async function request(method, path, body, opts = {}) {
  const headers = { Accept: "application/json" };
  const t = opts.token ?? token();
  if (t) headers.Authorization = `Bearer ${t}`;
  let payload;
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(BASE + path, { method, headers, body: payload, signal: opts.signal });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, `cannot reach replica serve: ${e.message}`, null);
  }
  const type = res.headers.get("Content-Type") || "";
  let data = null;
  if (res.status !== 204) {
    const text = await res.text();
    if (type.includes("application/json") && text !== "") {
      try { data = JSON.parse(text); } catch { data = text; }
    } else {
      data = text;
    }
  }
  if (!res.ok) {
    if (res.status === 401 && !opts.token) unauthorized.forEach((fn) => fn());
    const msg = data && typeof data === "object" && data.error ? data.error : `HTTP ${res.status}`;
    throw new ApiError(res.status, msg, data);
  }
  return opts.raw ? { status: res.status, headers: res.headers, data } : data;
}

export const get = (path, opts) => request("GET", path, undefined, opts);
export const post = (path, body, opts) => request("POST", path, body, opts);
export const put = (path, body, opts) => request("PUT", path, body, opts);
export const del = (path, opts) => request("DELETE", path, undefined, opts);

// Builds a query string from an object, leaving out empty values.
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

// Parses one Server-Sent Events block into {event, data, id}.
function parseBlock(block) {
  const ev = { event: "message", data: "", id: null };
  const data = [];
  for (const line of block.split("\n")) {
    if (line === "" || line.startsWith(":")) continue;
    const i = line.indexOf(":");
    const field = i < 0 ? line : line.slice(0, i);
    let value = i < 0 ? "" : line.slice(i + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") ev.event = value;
    else if (field === "data") data.push(value);
    else if (field === "id") ev.id = value;
  }
  ev.data = data.join("\n");
  return data.length ? ev : null;
}

// Follows GET /events (Server-Sent Events, read through fetch so that the
// token goes in a header, never in a URL). onEvent(type, data) gets each
// event with its JSON data; onState("open" | "retry") tells the caller
// about the connection. It reconnects after 2 s when the stream drops.
// filter: {execution: id} narrows the stream. Returns a function that stops it.
export function events(filter, onEvent, onState = () => {}) {
  let stopped = false;
  let ctrl = null;
  const run = async () => {
    while (!stopped) {
      ctrl = new AbortController();
      try {
        const headers = { Accept: "text/event-stream" };
        const t = token();
        if (t) headers.Authorization = `Bearer ${t}`;
        const res = await fetch(BASE + "/events" + query(filter), { headers, signal: ctrl.signal });
        if (res.status === 401) {
          unauthorized.forEach((fn) => fn());
          return;
        }
        if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
        onState("open");
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value.replace(/\r\n?/g, "\n");
          let i;
          while ((i = buf.indexOf("\n\n")) >= 0) {
            const ev = parseBlock(buf.slice(0, i));
            buf = buf.slice(i + 2);
            if (!ev) continue;
            let data = ev.data;
            try { data = JSON.parse(ev.data); } catch { /* keep the text */ }
            onEvent(ev.event, data);
          }
        }
      } catch (e) {
        if (stopped) return;
      }
      if (stopped) return;
      onState("retry");
      await new Promise((r) => setTimeout(r, 2000));
    }
  };
  run();
  return () => {
    stopped = true;
    if (ctrl) ctrl.abort();
  };
}
