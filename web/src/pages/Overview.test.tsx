import { describe, expect, it, vi } from "vitest";
import { render, screen, within } from "@testing-library/react";
import { Provider, type Client } from "urql";
import { never } from "wonka";
import { DashboardContext, type Dashboard } from "../lib/context";
import { Overview } from "./Overview";
import type { AccountData } from "../Shell";

const DAY = 86_400_000;
const now = Date.now();
const range = { from: new Date(Date.UTC(2026, 0, 1)).toISOString(), to: new Date(Date.UTC(2026, 0, 31)).toISOString() };

const account = {
  __typename: "CreditAccount",
  id: "Q3JlZGl0QWNjb3VudDox",
  balance: { total: "120.5", free: "20", paid: "100.5", held: "2.25", available: "118.25", overdraft: "0", owed: "0" },
  lots: {
    edges: [
      { node: { id: "l1", kind: "FREE", source: "PROMOTION", amount: "20", remaining: "20", grantedAt: new Date(now - DAY).toISOString(), expiresAt: new Date(now + 3 * DAY + 3_600_000).toISOString(), status: "ACTIVE" } },
      { node: { id: "l2", kind: "PAID", source: "TOP_UP", amount: "100.5", remaining: "100.5", grantedAt: new Date(now - DAY).toISOString(), expiresAt: null, status: "ACTIVE" } },
    ],
  },
  forecast: {
    burnPerDay: "9.5",
    runsOutAt: new Date(now + 12 * DAY + 3_600_000).toISOString(),
    basis: { from: range.from, to: range.to, hours: 168, spent: "66.5", available: "118.25", held: "2.25" },
  },
  alerts: { edges: [{ node: { id: "a1", kind: "balance.low", level: "150", status: "OPEN", openedAt: new Date(now - 3_600_000).toISOString() } }] },
  subscription: null,
  autoTopUp: null,
  usageReport: {
    __typename: "UsageReport",
    totals: { events: 3, credits: "0.3" },
    rows: [
      { bucketStart: "2026-01-02T00:00:00+00:00", key: "web_search", totals: { credits: "0.2" } },
      { bucketStart: "2026-01-03T00:00:00+00:00", key: "answer", totals: { credits: "0.1" } },
    ],
  },
} as unknown as AccountData;

function renderOverview(shown: AccountData = account) {
  const client = { executeQuery: vi.fn(() => never), executeMutation: vi.fn(), executeSubscription: vi.fn(() => never) } as unknown as Client;
  const openTopUp = vi.fn();
  const goTo = vi.fn();
  const dashboard: Dashboard = {
    session: { kind: "portal", token: "clp_x", accountId: account.id },
    accountId: account.id,
    billingConfig: {
      gateway: "sandbox",
      legacyGateway: true,
      dashboardTabs: ["OVERVIEW", "BILLING"],
      creditPrice: { amount: 100, currency: "USD" },
      topUpMin: "10",
      topUpMax: "1000",
      stripePublishableKey: null,
    },
    liveTick: 0,
    openTopUp,
    goTo,
  };
  render(
    <Provider value={client}>
      <DashboardContext.Provider value={dashboard}>
        <Overview account={shown} balance={shown.balance} range={range} />
      </DashboardContext.Provider>
    </Provider>,
  );
  return { openTopUp, goTo };
}

describe("Overview", () => {
  it("shows the balance with its Free and Paid chips, held and available", () => {
    renderOverview();
    expect(screen.getByLabelText("Available: 118.25 credits")).toBeTruthy();
    const chips = within(screen.getByRole("list", { name: "Balance by kind" })).getAllByRole("listitem");
    expect(chips.map((c) => c.textContent)).toEqual(["Free 20", "Paid 100.5"]);
    expect(screen.getByText("Held").nextElementSibling?.textContent).toBe("2.25");
  });

  it("says which credit expires and when, the forecast and the open alerts", () => {
    renderOverview();
    expect(within(screen.getByRole("list", { name: "Expiring credit" })).getByRole("listitem").textContent).toMatch(
      /^20 Free credits expire in 3 days/,
    );
    expect(screen.getByText("Lasts about 12 days at the current rate.")).toBeTruthy();
    expect(screen.getByText(/Spending about 9.5 credits a day over the last 7 days/)).toBeTruthy();
    expect(screen.getByText(/Available credit fell below 150 credits\./)).toBeTruthy();
  });

  it("does not extrapolate a forecast from less than a day of usage", () => {
    const young = { ...account, forecast: { ...account.forecast!, burnPerDay: "576", basis: { ...account.forecast!.basis, hours: 1 } } };
    renderOverview(young as AccountData);
    expect(screen.getByText("Not enough usage yet to forecast.")).toBeTruthy();
    expect(screen.getByText("Usage in the last 7 days began an hour ago; a forecast needs at least a day of it.")).toBeTruthy();
    expect(screen.queryByText(/Lasts about/)).toBeNull();
    expect(screen.queryByText(/576/)).toBeNull();
  });

  it("shows the forecast from a day of usage on", () => {
    const day = { ...account, forecast: { ...account.forecast!, basis: { ...account.forecast!.basis, hours: 24 } } };
    renderOverview(day as AccountData);
    expect(screen.getByText("Lasts about 12 days at the current rate.")).toBeTruthy();
    expect(screen.getByText(/Spending about 9.5 credits a day over the last 24 hours/)).toBeTruthy();
    expect(screen.queryByText(/Not enough usage/)).toBeNull();
  });

  it("charts usage by activity and offers the quick actions", () => {
    const { openTopUp, goTo } = renderOverview();
    expect(screen.getByRole("img", { name: "Daily usage by activity: Web search 0.2, Answer 0.1" })).toBeTruthy();
    expect(screen.getByRole("button", { name: "By activity" }).getAttribute("aria-pressed")).toBe("true");
    screen.getByRole("button", { name: "Top up" }).click();
    screen.getByRole("button", { name: "Manage plan" }).click();
    expect(openTopUp).toHaveBeenCalledOnce();
    expect(goTo).toHaveBeenCalledWith("BILLING");
  });
});
