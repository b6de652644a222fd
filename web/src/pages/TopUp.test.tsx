import { describe, expect, it, vi } from "vitest";
import { fireEvent, render, screen, waitFor } from "@testing-library/react";
import { Provider, type Client } from "urql";
import { fromValue, never } from "wonka";
import { DashboardContext, type Dashboard } from "../lib/context";
import { TopUpForm } from "./TopUp";

const config = {
  gateway: "sandbox",
  legacyGateway: true,
  dashboardTabs: ["OVERVIEW", "TRANSACTION", "BILLING", "PAYMENT_METHOD"],
  creditPrice: { amount: 99, currency: "USD" },
  topUpMin: "10",
  topUpMax: "100000",
  stripePublishableKey: null as string | null,
};

const failed = {
  __typename: "Transaction",
  id: "VHJhbnNhY3Rpb246OQ==",
  type: "TOP_UP",
  status: "FAILED",
  credits: "500",
  amount: { __typename: "Money", amount: 495, currency: "USD" },
  failureReason: "Your card was declined.",
  checkoutUrl: null,
  createdAt: "2026-01-15T12:00:00+00:00",
  completedAt: "2026-01-15T12:00:00+00:00",
  invoice: null,
  refunds: [],
};

function setup(mutationAnswer: unknown) {
  const executeMutation = vi.fn(() => fromValue({ data: { topUp: mutationAnswer } }));
  const client = {
    executeQuery: vi.fn(() =>
      fromValue({
        data: {
          billingConfig: { __typename: "BillingConfig", ...config },
          node: {
            __typename: "CreditAccount",
            id: "Q3JlZGl0QWNjb3VudDox",
            paymentMethods: [{ __typename: "PaymentMethod", id: "pm1", brand: "visa", last4: "4242", expMonth: 12, expYear: 2034, isDefault: true }],
          },
        },
      }),
    ),
    executeMutation,
    executeSubscription: vi.fn(() => never),
  } as unknown as Client;
  const dashboard: Dashboard = {
    session: { kind: "portal", token: "clp_x", accountId: "Q3JlZGl0QWNjb3VudDox" },
    accountId: "Q3JlZGl0QWNjb3VudDox",
    billingConfig: config,
    liveTick: 0,
    openTopUp: () => {},
    goTo: () => {},
  };
  render(
    <Provider value={client}>
      <DashboardContext.Provider value={dashboard}>
        <TopUpForm onDone={() => {}} />
      </DashboardContext.Provider>
    </Provider>,
  );
  return { executeMutation };
}

describe("TopUpForm", () => {
  it("prices the amount exactly, rounded up like the server", () => {
    setup(null);
    fireEvent.change(screen.getByLabelText("Credits"), { target: { value: "333" } });
    // 333 credits at 99 minor units per 100 credits = 329.67 -> 330 minor units
    expect(screen.getByText("$3.30")).toBeTruthy();
    expect(screen.getByRole("button", { name: "Pay $3.30" })).toBeTruthy();
    expect((screen.getByLabelText("Pay with") as HTMLSelectElement).value).toBe("card:pm1");
  });

  it("refuses an amount out of range without sending anything", () => {
    const { executeMutation } = setup(null);
    fireEvent.change(screen.getByLabelText("Credits"), { target: { value: "5" } });
    fireEvent.click(screen.getByRole("button", { name: /^Pay/ }));
    expect(screen.getByRole("alert").textContent).toBe("You can buy from 10 to 100,000 credits at a time.");
    expect(executeMutation).not.toHaveBeenCalled();
  });

  it("shows a declined card's reason", async () => {
    const { executeMutation } = setup({ __typename: "PaymentDeclined", message: "declined", reason: "Your card was declined.", transaction: failed });
    fireEvent.change(screen.getByLabelText("Pay with"), { target: { value: "token:tok_chargeDeclined" } });
    fireEvent.click(screen.getByRole("button", { name: "Pay $4.95" }));
    await waitFor(() => expect(screen.getByRole("alert").textContent).toBe("Payment declined: Your card was declined."));
    const [[operation]] = executeMutation.mock.calls as unknown as [[{ variables: { input: Record<string, unknown> } }]];
    expect(operation.variables.input).toMatchObject({ credits: "500", paymentToken: "tok_chargeDeclined", accountId: "Q3JlZGl0QWNjb3VudDox" });
    expect(operation.variables.input.paymentMethodId).toBeUndefined();
  });
});
