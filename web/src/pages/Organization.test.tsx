import { describe, expect, it, vi } from "vitest";
import { render, screen } from "@testing-library/react";
import { Provider, type Client } from "urql";
import { fromValue, never } from "wonka";
import { OrganizationPanel } from "./Organization";

const ORG = "T3JnYW5pemF0aW9uOjE=";

function setup(node: Record<string, unknown>) {
  const executeQuery = vi.fn(() => fromValue({ data: { node: { __typename: "Organization", id: ORG, name: "Acme Research", ...node } } }));
  const client = { executeQuery, executeMutation: vi.fn(), executeSubscription: vi.fn(() => never) } as unknown as Client;
  render(
    <Provider value={client}>
      <OrganizationPanel orgId={ORG} admin={false} />
    </Provider>,
  );
  return { executeQuery };
}

const me = { __typename: "Membership", userId: "VXNlcjoy", email: "member@example.com", roles: ["MEMBER"] };
const today = new Date(Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth(), new Date().getUTCDate())).toISOString();

describe("Organization, for a plain member", () => {
  it("shows their own usage and budget, and asks for nothing of the others", () => {
    const { executeQuery } = setup({
      myRoles: ["MEMBER"],
      myMembership: { ...me, monthlyBudget: "50", spentThisMonth: "12.5" },
      mine: {
        __typename: "UsageReport",
        totals: { events: 3, credits: "12.5" },
        rows: [{ bucketStart: today, key: null, totals: { events: 3, credits: "12.5" } }],
      },
    });
    expect(screen.getByRole("heading", { name: "Your usage, last 30 days" })).toBeTruthy();
    expect(screen.getByRole("img", { name: "Your daily usage in Acme Research: 12.5 credits in 30 days" })).toBeTruthy();
    const budget = screen.getByRole("region", { name: "Your budget this month" });
    expect(budget.textContent).toContain("12.5 of 50 this month");
    expect(screen.getByRole("meter", { name: "Your spending of your monthly budget" }).getAttribute("aria-valuenow")).toBe("25");
    expect(screen.queryByRole("heading", { name: "Member budgets" })).toBeNull();
    const calls = executeQuery.mock.calls as unknown as [{ variables: { admin: boolean } }][];
    expect(calls[0][0].variables.admin).toBe(false); // members, the pool and the others' reports are skipped
  });

  it("without a budget or usage says so", () => {
    setup({
      myRoles: ["MEMBER"],
      myMembership: { ...me, monthlyBudget: null, spentThisMonth: "0" },
      mine: { __typename: "UsageReport", totals: { events: 0, credits: "0" }, rows: [] },
    });
    expect(screen.getByText("No usage in the last 30 days")).toBeTruthy();
    expect(screen.getByText("No monthly budget: the pool pays for your work up to its balance.")).toBeTruthy();
    expect(screen.queryByRole("meter")).toBeNull();
  });
});
