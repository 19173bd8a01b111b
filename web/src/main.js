// main.js - the console's entry: the layout (navigation and the page), the
// routes, and the login gate. Each page is its own module under pages/.
import { useEffect, useState } from "preact/hooks";
import { html, render } from "./html.js";
import { interceptLinks, match, navigate, useLocation } from "./router.js";
import { onUnauthorized, setToken, token } from "./api.js";
import { Login } from "./pages/login.js";
import { Dashboard } from "./pages/dashboard.js";
import { Registries, RegistryForm } from "./pages/registries.js";
import { Toasts } from "./ui.js";
import { Policies, PolicyForm } from "./pages/policies.js";
import { Executions, ExecutionDetail } from "./pages/executions.js";
import { FunctionsList, FunctionEditor } from "./pages/functions.js";
import { TemplatesList, TemplateComposer } from "./pages/templates.js";

const ROUTES = [
  { path: "/login", page: Login, bare: true },
  { path: "/", page: Dashboard, nav: "dashboard" },
  { path: "/registries", page: Registries, nav: "registries" },
  { path: "/registries/new", page: RegistryForm, nav: "registries" },
  { path: "/registries/:id", page: RegistryForm, nav: "registries" },
  { path: "/policies", page: Policies, nav: "policies" },
  { path: "/policies/new", page: PolicyForm, nav: "policies" },
  { path: "/policies/:id", page: PolicyForm, nav: "policies" },
  { path: "/functions", page: FunctionsList, nav: "functions" },
  { path: "/functions/new", page: FunctionEditor, nav: "functions" },
  { path: "/functions/:kind/:name", page: FunctionEditor, nav: "functions" },
  { path: "/templates", page: TemplatesList, nav: "templates" },
  { path: "/templates/new", page: TemplateComposer, nav: "templates" },
  { path: "/templates/:name", page: TemplateComposer, nav: "templates" },
  { path: "/executions", page: Executions, nav: "executions" },
  // one key for an execution and its open task: opening a task keeps the page
  { path: "/executions/:id", page: ExecutionDetail, nav: "executions", key: (p) => `execution-${p.id}` },
  { path: "/executions/:id/tasks/:task", page: ExecutionDetail, nav: "executions", key: (p) => `execution-${p.id}` },
];

const NAV = [
  ["dashboard", "/", "Dashboard"],
  ["registries", "/registries", "Registries"],
  ["policies", "/policies", "Policies"],
  ["functions", "/functions", "Functions"],
  ["templates", "/templates", "Templates"],
  ["executions", "/executions", "Executions"],
];

// The page that does not exist.
function NotFound({ path }) {
  return html`<section><h1>Not found</h1><p>Nothing lives at ${path}.</p></section>`;
}

// The shell: navigation plus the routed page; sends a visitor without a
// token (or whose token the server refused) to /login, remembering where
// they were going.
function App() {
  const loc = useLocation();
  const [, setAuthTick] = useState(0);
  useEffect(() => onUnauthorized(() => {
    setToken(null);
    setAuthTick((n) => n + 1);
    if (location.pathname !== "/login") {
      navigate("/login" + "?next=" + encodeURIComponent(location.pathname + location.search), { replace: true });
    }
  }), []);
  const m = match(ROUTES, loc.path);
  // without a token, go to /login (after this render, once the location
  // listener is in place)
  const needLogin = !token() && loc.path !== "/login";
  useEffect(() => {
    if (needLogin) navigate("/login?next=" + encodeURIComponent(loc.path + location.search), { replace: true });
  });
  if (needLogin) return null;
  if (m && m.route.bare) return html`<${m.route.page} params=${m.params} query=${loc.query} />`;
  const Page = m ? m.route.page : NotFound;
  return html`
    <header class="top">
      <a class="brand" href="/">replica</a>
      <nav>
        ${NAV.map(([key, href, label]) => html`
          <a href=${href} class=${m && m.route.nav === key ? "active" : ""}
             aria-current=${m && m.route.nav === key ? "page" : null}>${label}</a>`)}
      </nav>
      <button class="link logout" data-testid="logout" onClick=${() => {
        setToken(null);
        navigate("/login");
      }}>Log out</button>
    </header>
    <main key=${m && m.route.key ? m.route.key(m.params) : loc.path}>
      <${Page} params=${m ? m.params : {}} query=${loc.query} path=${loc.path} />
    </main>
    <${Toasts} />`;
}

const root = document.getElementById("app");
interceptLinks(root);
render(html`<${App} />`, root);
