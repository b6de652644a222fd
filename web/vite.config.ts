import { resolve } from "node:path";
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// Two pages in one build: index.html (the My Credit app, served at /my-credit/) and graphiql.html (served at
// GET /graphql in development). Both load hashed files from /my-credit/assets/, absolute, so graphiql.html works
// from any path. Nothing inline: the server's CSP is script-src 'self'; style-src 'self'.
const api = process.env.CREDITLINE_API ?? "http://127.0.0.1:8100";

export default defineConfig({
  base: "/my-credit/",
  plugins: [react()],
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
