// composer.js - the template composer's model, with no DOM: the form (name,
// description, source and target kinds, stage slots, delete-stage slots),
// the Lua the daemon writes for it (generated here the same way, so the
// console shows what will be stored and validates it before saving), the
// body of PUT /templates/NAME, and a reader of template Lua (a table
// constructor of literals) that turns an old version back into slots.

let nextId = 1;

// A new slot: {id, name, mode: "function" | "remote", fn, remote}.
export function slot(init = {}) {
  return { id: nextId++, name: "", mode: "function", fn: "", remote: "", ...init };
}

// Slots from API stage entries ({name, function} | {name, remote}).
export function slotsFrom(stages) {
  return (stages || []).map((s) => (s.remote !== undefined && s.remote !== null
    ? slot({ name: s.name || "", mode: "remote", remote: String(s.remote) })
    : slot({ name: s.name || "", mode: "function", fn: s.function || "" })));
}

// The form of a template from GET /templates/NAME (or an empty one).
export function formFrom(t) {
  return {
    description: (t && t.description) || "",
    source_kind: (t && t.source_kind) || "distribution",
    target_kind: (t && t.target_kind) || "distribution",
    stages: slotsFrom(t && t.stages),
    delete_stages: slotsFrom(t && t.delete_stages),
  };
}

// One slot as an API stage entry.
function entry(s) {
  return s.mode === "remote" ? { name: s.name, remote: s.remote } : { name: s.name, function: s.fn };
}

// The body of PUT /templates/NAME for a form (delete_stages only when there
// are some).
export function putBody(form) {
  const body = {
    description: form.description,
    source_kind: form.source_kind,
    target_kind: form.target_kind,
    stages: form.stages.map(entry),
  };
  if (form.delete_stages.length) body.delete_stages = form.delete_stages.map(entry);
  return body;
}

// A Lua string literal for s: double quotes; backslash, quote, newline,
// carriage return, tab escaped by name, other control bytes as \ddd.
export function luaQuote(s) {
  let out = '"';
  for (const ch of String(s)) {
    const c = ch.codePointAt(0);
    if (ch === "\\") out += "\\\\";
    else if (ch === '"') out += '\\"';
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    else if (c < 0x20 || c === 0x7f) out += "\\" + String(c).padStart(3, "0");
    else out += ch;
  }
  return out + '"';
}

// One stage line of the generated Lua (e: an API stage entry).
function stageLine(e) {
  return e.remote !== undefined
    ? `    { ${luaQuote(e.name)}, remote = ${luaQuote(e.remote)} },`
    : `    { ${luaQuote(e.name)}, ${luaQuote(e.function)} },`;
}

// The Lua the daemon writes for a form (catalog_api.template_lua in
// scripts/lib/serve/catalog_api.lua: keep the two in step), and on which
// line each slot is: {lua, lines: {stages: [n...], delete_stages: [n...]}}
// (1-based). It is written from the PUT body, field by field:
//   -- Written by replica serve from the template composer.
//   return {
//     description = "...",        (each of the three when the body has it)
//     source = "...",
//     target = "...",
//     stages = {
//       { "name", "kind/fn" },
//       { "name", remote = "http://..." },
//     },
//     delete_stages = {          (when the body has them)
//       ...
//     },
//   }
export function templateLua(form) {
  const body = putBody(form);
  const out = ["-- Written by replica serve from the template composer.", "return {"];
  const lines = { stages: [], delete_stages: [] };
  // One `key = "value",` line, when the body has the field.
  const field = (k, v) => {
    if (v !== undefined && v !== null) out.push(`  ${k} = ${luaQuote(v)},`);
  };
  field("description", body.description);
  field("source", body.source_kind);
  field("target", body.target_kind);
  for (const key of ["stages", "delete_stages"]) {
    if (!body[key]) continue;
    out.push(`  ${key} = {`);
    for (const e of body[key]) {
      out.push(stageLine(e));
      lines[key].push(out.length);
    }
    out.push("  },");
  }
  out.push("}");
  return { lua: out.join("\n") + "\n", lines };
}

// Which slot a line of the generated Lua belongs to: {list, index} or null.
export function slotAtLine(lines, n) {
  for (const key of ["stages", "delete_stages"]) {
    const i = lines[key].indexOf(n);
    if (i >= 0) return { list: key, index: i };
  }
  return null;
}

const NAME = /^[A-Za-z0-9_-]+$/;
const FUNCTION = /^[A-Za-z0-9_-]+\/[A-Za-z0-9_-]+$/;

// What is wrong with a form before the server is asked: a list of
// {list, index, message} (index -1: the list as a whole).
export function formProblems(form) {
  const out = [];
  if (!form.stages.length) out.push({ list: "stages", index: -1, message: "a template needs at least one stage" });
  for (const key of ["stages", "delete_stages"]) {
    const seen = new Set();
    form[key].forEach((s, i) => {
      const at = (message) => out.push({ list: key, index: i, message });
      if (!s.name) at("the stage needs a name");
      else if (!NAME.test(s.name)) at("a stage name is letters, digits, _ or -");
      else if (seen.has(s.name)) at(`stage name '${s.name}' is used twice`);
      seen.add(s.name);
      if (s.mode === "remote") {
        if (!/^https?:\/\/[^\s/]+/.test(s.remote)) at("a remote stage needs an http:// or https:// URL");
      } else if (!FUNCTION.test(s.fn)) {
        at("choose a function");
      }
    });
  }
  return out;
}

// --- reading template Lua back -------------------------------------------

// Splits Lua source into tokens {t: "str"|"num"|"name"|"op", v}; comments
// and whitespace are dropped. Throws on what it cannot read.
function tokens(src) {
  const out = [];
  let i = 0;
  // The level of a long bracket opening at i ("[[" is 0, "[==[" 2), or -1.
  const longOpen = (at) => {
    const m = /^\[(=*)\[/.exec(src.slice(at, at + 64));
    return m ? m[1].length : -1;
  };
  // Reads a long bracket of the given level at i; returns its content.
  const longRead = (level) => {
    const open = level + 2;
    const close = "]" + "=".repeat(level) + "]";
    const end = src.indexOf(close, i + open);
    if (end < 0) throw new Error("unfinished long string or comment");
    let body = src.slice(i + open, end);
    if (body.startsWith("\r\n")) body = body.slice(2);
    else if (body.startsWith("\n")) body = body.slice(1);
    i = end + close.length;
    return body;
  };
  while (i < src.length) {
    const c = src[i];
    if (/\s/.test(c)) { i++; continue; }
    if (src.startsWith("--", i)) {
      i += 2;
      const level = longOpen(i);
      if (level >= 0) longRead(level);
      else while (i < src.length && src[i] !== "\n") i++;
      continue;
    }
    if (c === "[" && longOpen(i) >= 0) { out.push({ t: "str", v: longRead(longOpen(i)) }); continue; }
    if (c === '"' || c === "'") {
      let v = "";
      i++;
      for (;;) {
        if (i >= src.length || src[i] === "\n") throw new Error("unfinished string");
        const d = src[i];
        if (d === c) { i++; break; }
        if (d !== "\\") { v += d; i++; continue; }
        const e = src[i + 1];
        const simple = { n: "\n", t: "\t", r: "\r", a: "\x07", b: "\b", f: "\f", v: "\v", "\\": "\\", '"': '"', "'": "'", "\n": "\n" };
        if (e in simple) { v += simple[e]; i += 2; continue; }
        let m;
        if ((m = /^\d{1,3}/.exec(src.slice(i + 1, i + 4)))) { v += String.fromCharCode(Number(m[0])); i += 1 + m[0].length; continue; }
        if ((m = /^x([0-9A-Fa-f]{2})/.exec(src.slice(i + 1, i + 4)))) { v += String.fromCharCode(parseInt(m[1], 16)); i += 4; continue; }
        if ((m = /^u\{([0-9A-Fa-f]+)\}/.exec(src.slice(i + 1, i + 12)))) { v += String.fromCodePoint(parseInt(m[1], 16)); i += 1 + m[0].length; continue; }
        if (e === "z") { i += 2; while (i < src.length && /\s/.test(src[i])) i++; continue; }
        throw new Error("unknown escape in a string");
      }
      out.push({ t: "str", v });
      continue;
    }
    let m;
    if ((m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(src.slice(i, i + 256)))) { out.push({ t: "name", v: m[0] }); i += m[0].length; continue; }
    if ((m = /^(0[xX][0-9A-Fa-f]+|\d+(\.\d*)?([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?)/.exec(src.slice(i, i + 64)))) {
      out.push({ t: "num", v: Number(m[0]) });
      i += m[0].length;
      continue;
    }
    if ("{}[]=,;-".includes(c)) { out.push({ t: "op", v: c }); i++; continue; }
    throw new Error(`cannot read '${c}' here`);
  }
  return out;
}

// Reads `return <table of literals>`: strings, numbers, booleans, nil and
// tables of them. Returns the value, tables as {array: [...], hash: {...}}.
// Throws on anything else (code, calls, operators).
export function readLuaTable(src) {
  const toks = tokens(src);
  let p = 0;
  // The next token, left in place.
  const peek = () => toks[p];
  // Consumes the next token, which must be of type t (and value v).
  const take = (t, v) => {
    const k = toks[p];
    if (!k || k.t !== t || (v !== undefined && k.v !== v)) throw new Error(`expected ${v || t}`);
    p++;
    return k;
  };
  // One value.
  const value = () => {
    const k = peek();
    if (!k) throw new Error("unexpected end");
    if (k.t === "str" || k.t === "num") { p++; return k.v; }
    if (k.t === "op" && k.v === "-" && toks[p + 1] && toks[p + 1].t === "num") { p += 2; return -toks[p - 1].v; }
    if (k.t === "name" && (k.v === "true" || k.v === "false")) { p++; return k.v === "true"; }
    if (k.t === "name" && k.v === "nil") { p++; return null; }
    if (k.t === "op" && k.v === "{") return table();
    throw new Error(`not a literal: ${k.v}`);
  };
  // One table constructor.
  const table = () => {
    take("op", "{");
    const t = { array: [], hash: {} };
    while (!(peek() && peek().t === "op" && peek().v === "}")) {
      const k = peek();
      if (k && k.t === "name" && toks[p + 1] && toks[p + 1].t === "op" && toks[p + 1].v === "=") {
        p += 2;
        t.hash[k.v] = value();
      } else if (k && k.t === "op" && k.v === "[") {
        p++;
        const key = value();
        take("op", "]");
        take("op", "=");
        if (typeof key === "number" && Number.isInteger(key) && key >= 1) t.array[key - 1] = value();
        else t.hash[String(key)] = value();
      } else {
        t.array.push(value());
      }
      const sep = peek();
      if (sep && sep.t === "op" && (sep.v === "," || sep.v === ";")) p++;
      else break;
    }
    take("op", "}");
    return t;
  };
  take("name", "return");
  const v = value();
  if (p < toks.length) throw new Error("more than one table");
  return v;
}

// The stage list of a template table, as API entries.
function stagesOf(t, key) {
  if (t === undefined || t === null) return [];
  if (typeof t !== "object") throw new Error(`${key} is not a list`);
  return t.array.map((e, i) => {
    if (!e || typeof e !== "object") throw new Error(`${key}[${i + 1}] is not a table`);
    const name = e.array[0];
    if (typeof name !== "string") throw new Error(`${key}[${i + 1}] has no stage name`);
    if (typeof e.hash.remote === "string") return { name, remote: e.hash.remote };
    if (typeof e.array[1] !== "string") throw new Error(`${key}[${i + 1}] names no function`);
    return { name, function: e.array[1] };
  });
}

// The form of a template's Lua source (for loading an old version into the
// composer). Throws when the source is more than a table of literals.
export function formFromLua(src) {
  const t = readLuaTable(src);
  if (!t || typeof t !== "object") throw new Error("the template does not return a table");
  // A string field, or "" when it is something else.
  const str = (v) => (typeof v === "string" ? v : "");
  return formFrom({
    description: str(t.hash.description),
    source_kind: str(t.hash.source),
    target_kind: str(t.hash.target),
    stages: stagesOf(t.hash.stages, "stages"),
    delete_stages: stagesOf(t.hash.delete_stages, "delete_stages"),
  });
}
