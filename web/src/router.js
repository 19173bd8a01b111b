// router.js - deep links: every view has its own URL, kept with the History
// API. Routes are patterns like "/executions/:id"; query strings are parsed
// for the page.
import { useEffect, useState } from "preact/hooks";

// Compiles "/a/:id/b" into a matcher returning {id} or null.
function compile(pattern) {
  const names = [];
  const re = new RegExp("^" + pattern.replace(/\/:(\w+)/g, (_, n) => {
    names.push(n);
    return "/([^/]+)";
  }) + "/?$");
  return (path) => {
    const m = re.exec(path);
    if (!m) return null;
    const params = {};
    names.forEach((n, i) => { params[n] = decodeURIComponent(m[i + 1]); });
    return params;
  };
}

// The current location as {path, query} (query an object).
export function current() {
  return { path: location.pathname, query: Object.fromEntries(new URLSearchParams(location.search)) };
}

const listeners = new Set();

// Goes to url (a path with an optional query); replace keeps history short
// for filter changes.
export function navigate(url, { replace = false } = {}) {
  if (url === location.pathname + location.search) return;
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  listeners.forEach((fn) => fn());
}

window.addEventListener("popstate", () => listeners.forEach((fn) => fn()));

// A hook: the current location, re-rendering on every change.
export function useLocation() {
  const [loc, setLoc] = useState(current());
  useEffect(() => {
    const fn = () => setLoc(current());
    listeners.add(fn);
    return () => listeners.delete(fn);
  }, []);
  return loc;
}

// Finds the first route whose pattern matches path; returns {route, params}.
export function match(routes, path) {
  for (const r of routes) {
    r.match = r.match || compile(r.path);
    const params = r.match(path);
    if (params) return { route: r, params };
  }
  return null;
}

// Makes in-app links work without a reload: a click on <a href="/..."> that
// stays on this origin goes through navigate.
export function interceptLinks(root) {
  root.addEventListener("click", (e) => {
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    const a = e.target.closest("a[href]");
    if (!a || a.target || a.hasAttribute("download")) return;
    const url = new URL(a.href, location.href);
    if (url.origin !== location.origin || url.pathname.startsWith("/api/")) return;
    e.preventDefault();
    navigate(url.pathname + url.search);
  });
}
