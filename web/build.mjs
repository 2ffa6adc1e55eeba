// Builds the web client: src/ bundled by esbuild into dist/assets/ under content-hashed
// names (served immutable by api/web_routes.py) and dist/index.html naming them (served
// no-cache). Run by scripts/bootstrap (`npm run build`); dist/ is never committed.
import * as esbuild from "esbuild";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { gzipSync } from "node:zlib";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "dist");
await rm(dist, { recursive: true, force: true });
await mkdir(join(dist, "assets"), { recursive: true });

const result = await esbuild.build({
  absWorkingDir: here,
  entryPoints: { app: "src/main.js", style: "src/style.css" },
  bundle: true,
  minify: true,
  format: "esm",
  // Code loaded on demand (MQTT.js, once signed in) goes to chunks of its own, also hashed.
  splitting: true,
  chunkNames: "chunk-[hash]",
  target: ["chrome110", "firefox110", "safari16"],
  outdir: join(dist, "assets"),
  entryNames: "[name]-[hash]",
  legalComments: "none",
  metafile: true,
  logLevel: "warning",
});

const names = {};
for (const [out, meta] of Object.entries(result.metafile.outputs)) {
  if (meta.entryPoint) names[meta.entryPoint] = out.split("/").pop();
}
let html = await readFile(join(here, "src/index.html"), "utf8");
html = html
  .replace("%APP_JS%", `/assets/${names["src/main.js"]}`)
  .replace("%STYLE_CSS%", `/assets/${names["src/style.css"]}`);
await writeFile(join(dist, "index.html"), html);
// A gzip copy beside each asset: aiohttp's FileResponse sends it to clients that accept
// gzip (with Content-Encoding and Vary), so nothing is compressed per request.
for (const out of Object.keys(result.metafile.outputs)) {
  const path = join(here, out);
  await writeFile(`${path}.gz`, gzipSync(await readFile(path), { level: 9 }));
}
console.log(`web: built ${names["src/main.js"]}, ${names["src/style.css"]}`);
