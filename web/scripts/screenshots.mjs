// Screenshots of every tab at 1280 and 360 px, with console errors listed (exit 1 if any).
//   node scripts/screenshots.mjs --page http://127.0.0.1:4173 --api http://127.0.0.1:8100 --admin <adminToken> [--user <userToken>] [--out dir]
// Signs in with a portal link (createPortalSession, admin token) and, with --user, as the user (#token=) to show
// the organization view. Uses Debian's Chromium at /usr/bin/chromium (CHROMIUM to override).
import { mkdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, v, i, all) => (v.startsWith("--") ? [...acc, [v.slice(2), all[i + 1]]] : acc), []),
);
const page0 = args.page ?? "http://127.0.0.1:4173";
const api = args.api ?? page0;
const out = args.out ?? "/tmp/mycredit-shots";
mkdirSync(out, { recursive: true });

async function portalLink() {
  const res = await fetch(`${api}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${args.admin}` },
    body: JSON.stringify({ query: 'mutation { createPortalSession(input: {userId: "VXNlcjox"}) { __typename ... on CreatePortalSessionSuccess { code } ... on Error { message } } }' }),
  });
  const body = await res.json();
  return `${page0}/my-credit/?code=${body.data.createPortalSession.code}`;
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
});
const problems = [];
const axeSource = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
async function axe(page, label) {
  // The CSP blocks an injected inline script, so axe runs in the page through evaluate (CDP, not a <script>).
  await page.evaluate(axeSource);
  const result = await page.evaluate(async () => await window.axe.run(document, { resultTypes: ["violations"] }));
  for (const v of result.violations) {
    if (v.impact === "serious" || v.impact === "critical") {
      problems.push(`${label}: axe ${v.impact} ${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" ")).slice(0, 3).join(", ")})`);
    }
  }
}
const TABS = ["Overview", "Transaction", "Billing", "Payment Method"];
async function shoot(label, url, width, extra) {
  const context = await browser.newContext({ viewport: { width, height: 900 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") problems.push(`${label} ${width}: console ${m.type()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`${label} ${width}: page error: ${e.message}`));
  page.on("request", (r) => {
    const u = new URL(r.url());
    if (!["127.0.0.1", "localhost"].includes(u.hostname) && u.protocol !== "data:" && u.protocol !== "blob:") problems.push(`${label}: request to ${r.url()}`);
  });
  await page.goto(url);
  try {
    await page.getByText("Available", { exact: true }).first().waitFor({ timeout: 15000 });
  } catch (error) {
    await page.screenshot({ path: `${out}/${label}-failed-${width}.png`, fullPage: true });
    console.log(problems.join("\n"));
    throw error;
  }
  await page.waitForTimeout(800);
  for (const tab of TABS) {
    const t = page.getByRole("tab", { name: tab, exact: true });
    if ((await t.count()) === 0) continue;
    await t.click();
    await page.waitForTimeout(900);
    await axe(page, `${label} ${tab} ${width}`);
    const name = `${out}/${label}-${tab.toLowerCase().replace(/ /g, "-")}-${width}.png`;
    await page.screenshot({ path: name, fullPage: true });
    console.log(name);
  }
  if (extra) await extra(page, width);
  await context.close();
}

for (const width of [1280, 360]) {
  await shoot("portal", await portalLink(), width, async (page, w) => {
    await page.getByRole("tab", { name: "Overview" }).click();
    if (args.agent && w === 1280) {
      // An agent's spend through the API moves the balance on the page without a reload.
      const figure = page.getByLabel(/^Available: .* credits$/);
      const before = await figure.getAttribute("aria-label");
      await fetch(`${api}/graphql`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${args.agent}` },
        body: JSON.stringify({ query: `mutation { spendCredits(input: {userId: "VXNlcjox", agentId: "support-bot", activity: "answer", credits: "1.5", idempotencyKey: "shot-${Date.now()}"}) { __typename } }` }),
      });
      const t0 = Date.now();
      while ((await figure.getAttribute("aria-label")) === before) {
        if (Date.now() - t0 > 10000) {
          problems.push("live: the balance did not change within 10 s of a spend");
          break;
        }
        await page.waitForTimeout(100);
      }
      console.log(`live: ${before} -> ${await figure.getAttribute("aria-label")} in ${Date.now() - t0} ms`);
    }
    await page.getByRole("button", { name: "Top up" }).first().click();
    await page.waitForTimeout(500);
    await axe(page, `top-up dialog ${w}`);
    await page.screenshot({ path: `${out}/portal-topup-${w}.png` });
    console.log(`${out}/portal-topup-${w}.png`);
  });
  if (args.user) {
    await shoot("user", `${page0}/my-credit/overview#token=${args.user}`, width, async (page, w) => {
      await page.getByRole("tab", { name: "Overview" }).click();
      const select = page.getByLabel("Account");
      const options = await select.locator("option").allTextContents();
      const org = options.find((o) => o.includes("Owner"));
      if (!org) return;
      await select.selectOption({ label: org });
      await page.getByRole("heading", { name: "Member budgets" }).waitFor({ timeout: 15000 });
      await page.waitForTimeout(800);
      await axe(page, `organization ${w}`);
      await page.screenshot({ path: `${out}/user-org-${w}.png`, fullPage: true });
      console.log(`${out}/user-org-${w}.png`);
    });
  }
}
await browser.close();
if (problems.length) {
  console.log(problems.join("\n"));
  process.exit(1);
}
console.log("no console errors, no foreign requests");
