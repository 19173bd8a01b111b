// diff.js - a read-only, side-by-side diff of two Lua sources
// (@codemirror/merge's MergeView), and the versions panel that functions and
// templates share: the version list, picking two versions to compare, and
// loading an old one back into the editor.
import { useEffect, useRef, useState } from "preact/hooks";
import { EditorState } from "@codemirror/state";
import { EditorView, lineNumbers } from "@codemirror/view";
import { syntaxHighlighting, defaultHighlightStyle } from "@codemirror/language";
import { MergeView } from "@codemirror/merge";
import { consoleTheme, luaLanguage, shadowRootOf } from "./editor.js";
import { html } from "./html.js";
import { utc } from "./ui.js";

// The extensions of each (read-only) side of a diff.
function sideExtensions() {
  return [
    lineNumbers(),
    EditorView.lineWrapping,
    luaLanguage,
    syntaxHighlighting(defaultHighlightStyle, { fallback: true }),
    consoleTheme,
    // The stock marks around "N unchanged lines" (U+299A) are in no font
    // the console can count on.
    EditorView.theme({
      "&": { maxHeight: "none" },
      ".cm-collapsedLines": { "&:before": { content: '"⋯"' }, "&:after": { content: '"⋯"' } },
    }),
    EditorState.readOnly.of(true),
    EditorView.editable.of(false),
  ];
}

// Mounts a MergeView of a (left, older) and b (right, newer) into parent's
// shadow root (see editor.js); returns it (call .destroy() to remove it).
export function mountDiff(parent, a, b) {
  const root = shadowRootOf(parent);
  return new MergeView({
    parent: root,
    root,
    a: { doc: a, extensions: sideExtensions() },
    b: { doc: b, extensions: sideExtensions() },
    gutter: true,
    highlightChanges: true,
    collapseUnchanged: { margin: 3, minSize: 6 },
  });
}

// A Preact component: the diff of props.a and props.b (strings) with a
// caption saying which is which. Remounts the MergeView when either changes.
export function Diff({ a, b, labelA, labelB }) {
  const host = useRef(null);
  useEffect(() => {
    const mv = mountDiff(host.current, a, b);
    return () => mv.destroy();
  }, [a, b]);
  const same = a === b;
  return html`
    <div class="diff" data-testid="diff">
      <div class="diff-labels">
        <span data-testid="diff-label-a">${labelA}</span>
        <span data-testid="diff-label-b">${labelB}</span>
      </div>
      ${same ? html`<p class="help" data-testid="diff-same">The two are identical.</p>` : null}
      <div class="diff-view" ref=${host}></div>
    </div>`;
}

// The short form of a sha256 shown in lists.
export function shortSha(s) {
  return s ? String(s).slice(0, 12) : "";
}

// A time from the API, shown as the rest of the console shows times (UTC).
export const when = utc;

// The versions panel. Props:
//   versions  [{version, created, by, sha256}] newest first (user versions)
//   bundled   whether version 0 (the bundled file) exists
//   current   the version in effect (0 when the bundled one is)
//   load(n)   resolves to the source of version n
//   editorText()  the editor's text now (a diff side called "editor",
//                 shown as editorLabel)
//   onRevert(n, source)  puts an old version's source in the editor
export function Versions({ versions, bundled, current, load, editorText, onRevert, editorLabel = "editor (unsaved text)" }) {
  const rows = [...(versions || [])];
  if (bundled) rows.push({ version: 0, bundled: true });
  const options = rows.map((v) => v.version);
  const [a, setA] = useState(options.length > 1 ? String(options[1]) : options.length ? String(options[0]) : "editor");
  const [b, setB] = useState(options.length ? String(options[0]) : "editor");
  const [shown, setShown] = useState(null);
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);

  // The label of one diff side.
  const label = (v) => (v === "editor" ? editorLabel : v === "0" ? "version 0 (bundled)" : `version ${v}`);
  // The source of one diff side.
  const sourceOf = (v) => (v === "editor" ? Promise.resolve(editorText()) : load(Number(v)));

  // Fetches both sides and shows their diff.
  const compare = async () => {
    setBusy(true);
    setError("");
    try {
      const [sa, sb] = await Promise.all([sourceOf(a), sourceOf(b)]);
      setShown({ a: sa, b: sb, labelA: label(a), labelB: label(b) });
    } catch (e) {
      setError(e.message);
    } finally {
      setBusy(false);
    }
  };

  // Loads version n into the editor.
  const revert = async (n) => {
    setError("");
    try {
      onRevert(n, await load(n));
    } catch (e) {
      setError(e.message);
    }
  };

  // One of the two version pickers.
  const pick = (value, set, testid, name) => html`
    <label>${name}
      <select data-testid=${testid} value=${value} onChange=${(e) => set(e.currentTarget.value)}>
        ${rows.map((v) => html`<option value=${String(v.version)}>${label(String(v.version))}</option>`)}
        <option value="editor">${label("editor")}</option>
      </select>
    </label>`;

  return html`
    <section class="versions" data-testid="history">
      <h2>History</h2>
      ${rows.length === 0 ? html`<p class="help">No saved versions yet.</p>` : html`
        <table class="list">
          <thead><tr><th>version</th><th>created</th><th>by</th><th>sha256</th><th></th></tr></thead>
          <tbody>
            ${rows.map((v) => html`
              <tr data-testid="version-row" data-version=${v.version}
                  class=${v.version === current ? "current" : ""}>
                <td>${v.bundled ? "0 (bundled)" : v.version}${v.version === current ? " · current" : ""}</td>
                <td title=${v.created || ""}>${v.bundled ? "" : when(v.created)}</td>
                <td>${v.by || ""}</td>
                <td class="mono">${shortSha(v.sha256)}</td>
                <td>
                  <button type="button" data-testid="revert" data-version=${v.version}
                          title="Load this version's source into the editor; saving makes it a new version"
                          onClick=${() => revert(v.version)}>Revert to this</button>
                </td>
              </tr>`)}
          </tbody>
        </table>`}
      <div class="diff-pick">
        ${pick(a, setA, "diff-a", "Compare")}
        ${pick(b, setB, "diff-b", "with")}
        <button type="button" data-testid="diff-show" disabled=${busy} onClick=${compare}>Show diff</button>
        ${shown ? html`<button type="button" class="link" onClick=${() => setShown(null)}>Hide diff</button>` : null}
      </div>
      ${error ? html`<p class="error" data-testid="history-error">${error}</p>` : null}
      ${shown ? html`<${Diff} ...${shown} />` : null}
    </section>`;
}
