// Drives the main flows through the page as a person would (a dev check; the CI tests are Python, in tests/web/):
//   node scripts/flows.mjs --page http://127.0.0.1:4173 --api http://127.0.0.1:8100 --admin <adminToken>
import { chromium } from "playwright-core";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, v, i, all) => (v.startsWith("--") ? [...acc, [v.slice(2), all[i + 1]]] : acc), []),
);
const base = args.page ?? "http://127.0.0.1:4173";
const api = args.api ?? base;
const res = await fetch(`${api}/graphql`, {
  method: "POST",
  headers: { "content-type": "application/json", authorization: `Bearer ${args.admin}` },
  body: JSON.stringify({ query: 'mutation { createPortalSession(input: {userId: "VXNlcjox"}) { ... on CreatePortalSessionSuccess { code } } }' }),
});
const code = (await res.json()).data.createPortalSession.code;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
});
const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 900 } });
const page = await context.newPage();
const errors = [];
page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
page.on("pageerror", (e) => errors.push(e.message));
const step = async (name, fn) => {
  const t0 = Date.now();
  try {
    await fn();
    console.log(`ok   ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    console.log(`FAIL ${name}: ${e.message.split("\n")[0]}`);
    await page.screenshot({ path: `/tmp/mycredit-shots/fail-${name.replace(/\W+/g, "-")}.png`, fullPage: true });
  }
};

const queries = [];
page.on("request", (r) => {
  if (r.url().endsWith("/graphql") && r.method() === "POST") queries.push(JSON.parse(r.postData() ?? "{}").operationName ?? "?");
});
await page.goto(`${base}/my-credit/?code=${code}`);
await step("the Overview's first render sends one query", async () => {
  await page.getByRole("heading", { name: "Usage, last 30 days" }).waitFor();
  await page.waitForTimeout(1500);
  if (queries.length !== 1) throw new Error(`queries: ${queries.join(", ")}`);
  console.log(`     (${queries[0]})`);
});
await step("usage switches to agents", async () => {
  await page.getByRole("button", { name: "By agent" }).click();
  await page.getByRole("img", { name: /^Daily usage by agent: .*support-bot/ }).waitFor();
  await page.getByRole("button", { name: "By activity" }).click();
  await page.getByRole("img", { name: /^Daily usage by activity: / }).waitFor();
});
await step("sign in strips the code", async () => {
  await page.getByRole("tab", { name: "Overview" }).waitFor();
  if (page.url().includes("code=")) throw new Error(`url still has the code: ${page.url()}`);
});
await step("top up with tok_visa", async () => {
  await page.getByRole("button", { name: "Top up" }).click();
  const dialog = page.getByRole("dialog", { name: "Top up" });
  await dialog.getByLabel("Credits").fill("250");
  await dialog.getByText("Price: $2.50").waitFor();
  await dialog.getByLabel("Pay with").selectOption({ label: "Test card: Visa 4242 (succeeds)" });
  await dialog.getByRole("button", { name: "Pay $2.50" }).click();
  await dialog.getByText("Payment succeeded").waitFor();
  await dialog.getByRole("link", { name: /Invoice INV-/ }).waitFor();
  await dialog.getByRole("button", { name: "Done" }).click();
});
await step("declined card shows the reason", async () => {
  await page.getByRole("button", { name: "Top up" }).click();
  const dialog = page.getByRole("dialog", { name: "Top up" });
  await dialog.getByLabel("Pay with").selectOption({ label: "Test card: Visa 0002 (declined)" });
  await dialog.getByRole("button", { name: /^Pay / }).click();
  await dialog.getByRole("alert").getByText("Payment declined: Your card was declined.").waitFor();
  await page.keyboard.press("Escape");
});
await step("transaction tab lists it with its invoice, filters, CSV", async () => {
  await page.getByRole("tab", { name: "Transaction" }).click();
  await page.getByRole("cell", { name: "250", exact: true }).first().waitFor();
  await page.getByLabel("Status").selectOption("FAILED");
  await page.getByText("Your card was declined.").first().waitFor();
  const [download] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: "Download CSV" }).click()]);
  if (download.suggestedFilename() !== "transactions.csv") throw new Error(download.suggestedFilename());
  await page.getByRole("button", { name: "Clear filters" }).click();
});
await step("cancel and resume the subscription", async () => {
  await page.getByRole("tab", { name: "Billing" }).click();
  const cancel = page.getByRole("button", { name: "Cancel at period end" });
  const resume = page.getByRole("button", { name: "Resume subscription" });
  await cancel.or(resume).first().waitFor();
  if (await resume.count()) await resume.click();
  await cancel.click();
  await page.getByText(/Your subscription ends on/).waitFor();
  await page.getByText("Ends on", { exact: true }).waitFor();
  await resume.click();
  await page.getByText("Your subscription continues").waitFor();
  await page.getByText("Renews on", { exact: true }).waitFor();
});
await step("cards: add, make default, in-use refusal", async () => {
  await page.getByRole("tab", { name: "Payment Method" }).click();
  await page.getByLabel("Test card").selectOption("tok_mastercard");
  await page.getByRole("button", { name: "Add card" }).click();
  await page.getByText("Mastercard ending in 4444 was added.").waitFor();
  await page.getByRole("button", { name: "Make default: Mastercard ending in 4444" }).first().click();
  await page.getByText("is now your default card").waitFor();
  await page.getByLabel("Card for auto top-up").selectOption({ index: 1 });
  await page.getByRole("button", { name: "Save auto top-up" }).click();
  await page.getByText(/Auto top-up saved/).waitFor();
  const chosen = await page.getByLabel("Card for auto top-up").locator("option:checked").textContent();
  const name = chosen.replace(" •••• ", " ending in ");
  await page.getByRole("button", { name: `Remove ${name}` }).click();
  await page.getByRole("alert").getByText(/This card is in use/).waitFor();
});
await step("keyboard: arrows move between tabs", async () => {
  await page.getByRole("tab", { name: "Payment Method" }).focus();
  await page.keyboard.press("Home");
  await page.getByRole("tab", { name: "Overview", selected: true }).waitFor();
  await page.keyboard.press("ArrowRight");
  await page.getByRole("tab", { name: "Transaction", selected: true }).waitFor();
});
await browser.close();
console.log(errors.length ? `console errors:\n${errors.join("\n")}` : "no console errors");
