import { createHash } from "node:crypto";
import { resolve } from "node:path";
import { defineConfig, type Plugin } from "vite";
import react from "@vitejs/plugin-react";

// Two pages in one build: index.html (the My Credit app, served at /my-credit/) and graphiql.html (served at
// GET /graphql in development). Both load hashed files from /my-credit/assets/, absolute, so graphiql.html works
// from any path. Nothing inline: the server's CSP is script-src 'self'; style-src 'self'.
const api = process.env.CREDITLINE_API ?? "http://127.0.0.1:8100";

/**
 * graphiql.css (from the package) embeds its fonts and a few images as data: URLs, which a CSP of
 * font-src/img-src 'self' refuses. Move every data: URL of the built CSS into a hashed file of its own.
 */
function dataUrlsToFiles(): Plugin {
  const EXT: Record<string, string> = { "font/woff2": "woff2", "font/woff": "woff", "image/png": "png", "image/svg+xml": "svg", "image/gif": "gif" };
  return {
    name: "data-urls-to-files",
    apply: "build",
    generateBundle(_options, bundle) {
      for (const asset of Object.values(bundle)) {
        if (asset.type !== "asset" || !asset.fileName.endsWith(".css")) continue;
        const css = typeof asset.source === "string" ? asset.source : Buffer.from(asset.source).toString("utf8");
        const out = css.replace(/url\((["']?)data:([a-z0-9.+/-]+);base64,([A-Za-z0-9+/=]+)\1\)/g, (_m, _q, mime: string, b64: string) => {
          const bytes = Buffer.from(b64, "base64");
          const hash = createHash("sha256").update(bytes).digest("hex").slice(0, 10);
          const fileName = `assets/embedded-${hash}.${EXT[mime] ?? "bin"}`;
          if (!bundle[fileName]) this.emitFile({ type: "asset", fileName, source: bytes });
          return `url(${"/my-credit/"}${fileName})`;
        });
        asset.source = out;
      }
    },
  };
}

export default defineConfig({
  base: "/my-credit/",
  plugins: [react(), dataUrlsToFiles()],
  build: {
    outDir: "dist",
    emptyOutDir: true,
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
    chunkSizeWarningLimit: 1500,
    rollupOptions: {
      input: {
        index: resolve(import.meta.dirname, "index.html"),
        graphiql: resolve(import.meta.dirname, "graphiql.html"),
      },
    },
  },
  // `vite preview` serves dist/ with the server's strict policy, to check nothing inline or foreign is needed.
  preview: {
    port: 4173,
    headers: {
      "Content-Security-Policy":
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'",
    },
  },
  server: {
    port: 5173,
    proxy: {
      "/graphql": { target: api, ws: true, changeOrigin: false },
      "/portal": { target: api },
      "/exports": { target: api },
      "/invoices": { target: api },
    },
  },
});
