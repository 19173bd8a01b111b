// build.mjs - bundles the console (src/main.js and its imports) with esbuild
// into ../build/web/assets/app.js, copies index.html and the stylesheet,
// and prints the size of what a browser downloads, gzipped.
//   node build.mjs            build into ../build/web
//   node build.mjs OUTDIR     build into OUTDIR
import * as esbuild from "esbuild";
import { gzipSync } from "node:zlib";
import { copyFileSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] || join(here, "..", "build", "web"));
mkdirSync(join(out, "assets"), { recursive: true });

await esbuild.build({
  entryPoints: [join(here, "src", "main.js")],
  bundle: true,
  minify: true,
  format: "esm",
  target: ["chrome110", "firefox115", "safari16"],
  outfile: join(out, "assets", "app.js"),
  legalComments: "linked",
  logLevel: "warning",
});
copyFileSync(join(here, "index.html"), join(out, "index.html"));
// One stylesheet: the console's, then the editor pages'.
writeFileSync(join(out, "assets", "app.css"),
  ["style.css", "editor.css"].map((f) => readFileSync(join(here, "src", f), "utf8")).join("\n"));

// Walks dir; returns [path, bytes] for every file.
function files(dir) {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? files(p) : [[p, readFileSync(p)]];
  });
}
let raw = 0, gz = 0;
for (const [, b] of files(out)) {
  raw += b.length;
  gz += gzipSync(b, { level: 9 }).length;
}
console.log(`console: ${out} ${(raw / 1024).toFixed(1)} KiB, ${(gz / 1024).toFixed(1)} KiB gzipped`);
