// editor.js - the console's Lua editor: CodeMirror 6 with Lua highlighting
// (the legacy Lua mode), line numbers, undo history, the default keymap,
// bracket matching, and a linter that asks the server (POST /validate) and
// puts its diagnostics in the gutter at their line. Also the Preact
// component that hosts it, and the guard against leaving unsaved edits.
import { useEffect, useRef } from "preact/hooks";
import { EditorState, Compartment } from "@codemirror/state";
import {
  EditorView, keymap, lineNumbers, highlightActiveLine, highlightActiveLineGutter,
  drawSelection, highlightSpecialChars,
} from "@codemirror/view";
import {
  StreamLanguage, syntaxHighlighting, defaultHighlightStyle, bracketMatching, indentOnInput,
} from "@codemirror/language";
import { lua } from "@codemirror/legacy-modes/mode/lua";
import { defaultKeymap, history, historyKeymap, indentWithTab } from "@codemirror/commands";
import {
  linter, lintGutter, lintKeymap, setDiagnostics, setDiagnosticsEffect, forEachDiagnostic,
} from "@codemirror/lint";
import { post } from "./api.js";
import { html } from "./html.js";

// The Lua language, shared by every editor (the legacy mode is stateless).
export const luaLanguage = StreamLanguage.define(lua);

// The shadow root an editor lives in, made on first use. CodeMirror's
// styles come from style-mod, which puts them in a <style> element when it
// mounts into a document (blocked by the console's CSP, style-src 'self')
// but in a constructable stylesheet (adoptedStyleSheets, which the CSP does
// not govern) when it mounts into a shadow root. So every editor and diff
// is mounted in one, and styled by themes (EditorView.theme), not app.css.
export function shadowRootOf(host) {
  return host.shadowRoot || host.attachShadow({ mode: "open" });
}

// The look of the console's editors (inside the shadow root).
export const consoleTheme = EditorView.theme({
  "&": { backgroundColor: "#fff", maxHeight: "70vh" },
  "&.cm-focused": { outline: "2px solid #b9cbf1" },
  ".cm-scroller": {
    fontFamily: '"DejaVu Sans Mono", ui-monospace, monospace', fontSize: "13px", overflow: "auto",
  },
  ".cm-gutters": { backgroundColor: "#f6f7f9", borderRight: "1px solid #dde1e7", color: "#5f6b7a" },
});

// Turns server diagnostics ({line (1-based), message, severity}) into
// CodeMirror ones (document offsets): each covers its whole line. A line
// past the end lands on the last line, so nothing the server says is lost.
export function toCmDiagnostics(doc, list) {
  return (list || []).map((d) => {
    const n = Math.min(Math.max(1, Number(d.line) || 1), doc.lines);
    const line = doc.line(n);
    return {
      from: line.from,
      to: line.to,
      severity: d.severity === "warning" ? "warning" : d.severity === "info" ? "info" : "error",
      message: String(d.message ?? ""),
      source: "replica",
    };
  });
}

// The diagnostics an editor state holds, as {line, message, severity}
// (lines 1-based, following the edits made since they arrived).
export function currentDiagnostics(state) {
  const out = [];
  forEachDiagnostic(state, (d, from) => {
    out.push({ line: state.doc.lineAt(from).number, message: d.message, severity: d.severity });
  });
  out.sort((a, b) => a.line - b.line);
  return out;
}

// Asks the server to check source; resolves to its diagnostics. A failed
// request becomes one diagnostic on line 1 saying why, so the user sees it.
export async function validate(kind, source, name, signal) {
  const body = { kind, source };
  if (name) body.name = name;
  try {
    const res = await post("/validate", body, { signal });
    return { ok: !!res.ok, diagnostics: Array.isArray(res.diagnostics) ? res.diagnostics : [] };
  } catch (e) {
    if (e.name === "AbortError") throw e;
    return { ok: false, failed: true, diagnostics: [{ line: 1, severity: "error", message: `could not validate: ${e.message}` }] };
  }
}

// Creates a CodeMirror editor in parent (inside its shadow root). opts: doc (text), kind ("function"
// or "template": what /validate checks), name() (the full name to validate
// under, or ""), readOnly, onChange(text), onDiagnostics(list) (called
// whenever the diagnostics in the gutter change), lintDelay (ms).
// Returns {view, getText, setText, setDiagnostics, focusLine, destroy}.
export function createEditor(parent, opts = {}) {
  const kind = opts.kind || "function";
  const editable = new Compartment();
  const extensions = [
    lineNumbers(),
    highlightActiveLineGutter(),
    highlightSpecialChars(),
    history(),
    drawSelection(),
    indentOnInput(),
    luaLanguage,
    syntaxHighlighting(defaultHighlightStyle, { fallback: true }),
    bracketMatching(),
    highlightActiveLine(),
    consoleTheme,
    EditorView.theme({ ".cm-content, .cm-gutter": { minHeight: opts.minHeight || "240px" } }),
    keymap.of([...defaultKeymap, ...historyKeymap, ...lintKeymap, indentWithTab]),
    EditorState.tabSize.of(2),
    lintGutter(),
    editable.of([EditorState.readOnly.of(!!opts.readOnly), EditorView.editable.of(!opts.readOnly)]),
    EditorView.contentAttributes.of({ "aria-label": opts.label || "Lua source" }),
    EditorView.updateListener.of((u) => {
      if (u.docChanged && opts.onChange) opts.onChange(u.state.doc.toString());
      if (opts.onDiagnostics && u.transactions.some((tr) => tr.effects.some((e) => e.is(setDiagnosticsEffect)))) {
        opts.onDiagnostics(currentDiagnostics(u.state));
      }
    }),
  ];
  if (!opts.readOnly && opts.lint !== false) {
    let ctrl = null;
    // The lint source: one /validate call per pause in typing; the lint
    // extension drops an answer that arrives after the text changed again.
    extensions.push(linter(async (view) => {
      if (ctrl) ctrl.abort();
      ctrl = new AbortController();
      const doc = view.state.doc;
      try {
        const res = await validate(kind, doc.toString(), opts.name ? opts.name() : "", ctrl.signal);
        return toCmDiagnostics(doc, res.diagnostics);
      } catch {
        return [];
      }
    }, { delay: opts.lintDelay ?? 400 }));
  }
  const root = shadowRootOf(parent);
  const view = new EditorView({
    parent: root,
    root,
    state: EditorState.create({ doc: opts.doc || "", extensions }),
  });
  return {
    view,
    // The text in the editor.
    getText: () => view.state.doc.toString(),
    // Replaces the whole text (one undoable change).
    setText(text) {
      view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: text } });
    },
    // Shows server diagnostics ({line, message, severity}) in the gutter.
    setDiagnostics(list) {
      view.dispatch(setDiagnostics(view.state, toCmDiagnostics(view.state.doc, list)));
    },
    // Puts the cursor at the start of line n and scrolls it into view.
    focusLine(n) {
      const line = view.state.doc.line(Math.min(Math.max(1, n), view.state.doc.lines));
      view.dispatch({ selection: { anchor: line.from }, scrollIntoView: true });
      view.focus();
    },
    // Makes the editor read-only or editable.
    setReadOnly(ro) {
      view.dispatch({ effects: editable.reconfigure([EditorState.readOnly.of(ro), EditorView.editable.of(!ro)]) });
    },
    destroy: () => view.destroy(),
  };
}

// A Preact component hosting one editor. Props: doc (the initial text;
// later changes go through the handle), kind, name(), onChange,
// onDiagnostics, onReady(handle) (gets the handle once mounted), readOnly.
// The editor lives as long as the component: re-renders leave it alone.
export function LuaEditor(props) {
  const host = useRef(null);
  const latest = useRef(props);
  latest.current = props;
  useEffect(() => {
    const ed = createEditor(host.current, {
      doc: props.doc,
      kind: props.kind,
      readOnly: props.readOnly,
      label: props.label,
      name: () => (latest.current.name ? latest.current.name() : ""),
      onChange: (t) => latest.current.onChange && latest.current.onChange(t),
      onDiagnostics: (d) => latest.current.onDiagnostics && latest.current.onDiagnostics(d),
    });
    if (props.onReady) props.onReady(ed);
    return () => ed.destroy();
  }, []);
  return html`<div class="lua-editor" data-testid=${props.testid || "editor"} ref=${host}></div>`;
}

// The list of diagnostics under an editor: "line N: message" items; a click
// on one moves the editor's cursor there. Text only, never markup.
export function DiagnosticsList({ items, onPick, testid = "diagnostics" }) {
  if (!items || !items.length) return html`<ul class="diagnostics empty" data-testid=${testid}></ul>`;
  return html`
    <ul class="diagnostics" data-testid=${testid}>
      ${items.map((d) => html`
        <li class=${"diag " + (d.severity || "error")} data-line=${d.line}>
          <button type="button" class="link" onClick=${() => onPick && onPick(d.line)}>
            line ${d.line}: ${d.message}
          </button>
        </li>`)}
    </ul>`;
}

// While dirty is true: the browser asks before the page unloads, and a
// click on an in-app link asks for confirmation first (the router would
// otherwise swap the page and drop the edits).
export function useUnsavedGuard(dirty) {
  useEffect(() => {
    if (!dirty) return undefined;
    // The browser's own "leave this page?" question.
    const onUnload = (e) => {
      e.preventDefault();
      e.returnValue = "";
    };
    // Asks before an in-app link swaps the page.
    const onClick = (e) => {
      if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
      const a = e.target.closest && e.target.closest("a[href]");
      if (!a || a.target || a.hasAttribute("download")) return;
      const url = new URL(a.href, location.href);
      if (url.origin !== location.origin || url.pathname === location.pathname) return;
      if (!window.confirm("You have unsaved changes. Leave this page and lose them?")) {
        e.preventDefault();
        e.stopPropagation();
      }
    };
    window.addEventListener("beforeunload", onUnload);
    document.addEventListener("click", onClick, true);
    return () => {
      window.removeEventListener("beforeunload", onUnload);
      document.removeEventListener("click", onClick, true);
    };
  }, [dirty]);
}
