// Fails the build when the JavaScript of the My Credit page's first view passes its budget: every script that
// dist/index.html loads or preloads, gzipped. GraphiQL (graphiql.html) is a separate entry and not counted.
import { readFileSync, statSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { join } from "node:path";

const LIMIT = 200 * 1024;
const dist = join(import.meta.dirname, "..", "dist");
const html = readFileSync(join(dist, "index.html"), "utf8");
const base = "/my-credit/";
const scripts = [...html.matchAll(/<(?:script[^>]*\ssrc|link[^>]*rel="modulepreload"[^>]*\shref)="([^"]+\.js)"/g)].map((m) => m[1]);
if (scripts.length === 0) {
  console.error("check-size: dist/index.html loads no script");
  process.exit(1);
}
if (/<script(?![^>]*\ssrc=)[^>]*>/.test(html) || /\sstyle="/.test(html)) {
  console.error("check-size: dist/index.html has an inline script or style, which the CSP blocks");
  process.exit(1);
}
let total = 0;
for (const src of new Set(scripts)) {
  const file = join(dist, src.startsWith(base) ? src.slice(base.length) : src);
  const gz = gzipSync(readFileSync(file), { level: 9 }).length;
  total += gz;
  console.log(`  ${src}  ${(statSync(file).size / 1024).toFixed(1)} KB, ${(gz / 1024).toFixed(1)} KB gzipped`);
}
console.log(`first-view JavaScript: ${(total / 1024).toFixed(1)} KB gzipped (budget ${LIMIT / 1024} KB)`);
if (total > LIMIT) {
  console.error(`check-size: the first view ships ${(total / 1024).toFixed(1)} KB of gzipped JavaScript, over ${LIMIT / 1024} KB`);
  process.exit(1);
}
