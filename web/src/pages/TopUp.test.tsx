import { afterEach, describe, expect, it, vi } from "vitest";
import { cleanup, fireEvent, render, screen, waitFor } from "@testing-library/react";
import { Provider, type Client } from "urql";
import { fromValue, never } from "wonka";
import { DashboardContext, type Dashboard } from "../lib/context";
import { TopUpForm } from "./TopUp";
import { STRIPE_JS_URL, resetStripeJsForTests } from "../lib/stripe";
import { fakeStripe } from "../test/fakeStripe";

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

const saved = { __typename: "PaymentMethod", id: "pm1", brand: "visa", last4: "4242", expMonth: 12, expYear: 2034, isDefault: true };

function setup(mutationAnswer: unknown, options: { config?: Partial<typeof config>; cards?: unknown[] } = {}) {
  const shown = { ...config, ...options.config };
  const answers = Array.isArray(mutationAnswer) ? [...mutationAnswer] : null;
  const executeMutation = vi.fn(() => fromValue({ data: { topUp: answers ? answers.shift() : mutationAnswer } }));
  const goTo = vi.fn();
  const onDone = vi.fn();
  const client = {
    executeQuery: vi.fn(() =>
      fromValue({
        data: {
          billingConfig: { __typename: "BillingConfig", ...shown },
          node: { __typename: "CreditAccount", id: "Q3JlZGl0QWNjb3VudDox", paymentMethods: options.cards ?? [saved] },
        },
      }),
    ),
    executeMutation,
    executeSubscription: vi.fn(() => never),
  } as unknown as Client;
  const dashboard: Dashboard = {
    session: { kind: "portal", token: "clp_x", accountId: "Q3JlZGl0QWNjb3VudDox" },
    accountId: "Q3JlZGl0QWNjb3VudDox",
    billingConfig: shown,
    liveTick: 0,
    openTopUp: () => {},
    goTo,
  };
  render(
    <Provider value={client}>
      <DashboardContext.Provider value={dashboard}>
        <TopUpForm onDone={onDone} />
      </DashboardContext.Provider>
    </Provider>,
  );
  const sent = () => executeMutation.mock.calls.map((c) => (c as unknown as [{ variables: { input: Record<string, unknown> } }])[0].variables.input);
  return { executeMutation, sent, goTo, onDone };
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

const LEGACY = { gateway: "legacy", legacyGateway: true, stripePublishableKey: "pk_test_page" };
const stripeScripts = () => document.querySelectorAll(`script[src="${STRIPE_JS_URL}"]`);
const succeeded = {
  ...failed,
  id: "VHJhbnNhY3Rpb246MTA=",
  status: "SUCCEEDED",
  failureReason: null,
  invoice: { __typename: "Invoice", id: "SW52b2ljZTox", number: "INV-0007", signedUrl: "https://example.test/invoices/7?sig=x" },
};
const payButton = () => screen.getByRole("button", { name: /^Pay/ }) as HTMLButtonElement;

describe("TopUpForm: a new card on legacy", () => {
  afterEach(() => resetStripeJsForTests());

  it("without a saved card, New card is the choice and Stripe's field loads; Pay waits for it", async () => {
    const { calls } = fakeStripe({ paymentMethod: { id: "pm_1Stand" } });
    setup(null, { config: LEGACY, cards: [] });
    const select = screen.getByRole("combobox", { name: "Pay with" }) as HTMLSelectElement;
    expect(select.value).toBe("new");
    expect([...select.options].map((o) => o.textContent)).toEqual(["New card"]);
    const field = screen.getByRole("group", { name: "Card" });
    expect(payButton().disabled).toBe(true);
    expect(screen.getByText("Loading Stripe's secure card field…")).toBeTruthy();
    await waitFor(() => expect(field.textContent).toBe("[card field]"));
    await waitFor(() => expect(payButton().disabled).toBe(false));
    expect(calls.key).toEqual(["pk_test_page"]);
    expect(screen.getByText(/^This card is charged once and not saved\./)).toBeTruthy();
  });

  it("without Stripe.js yet, it is loaded from js.stripe.com once", () => {
    setup(null, { config: LEGACY, cards: [] });
    const scripts = stripeScripts();
    expect(scripts).toHaveLength(1);
    expect(scripts[0].getAttribute("src")).toBe("https://js.stripe.com/v3");
    expect(payButton().disabled).toBe(true);
  });

  it("sends Stripe's PaymentMethod id as paymentToken, with a fresh idempotency key each time", async () => {
    const { calls, card } = fakeStripe({ paymentMethod: { id: "pm_new*" } });
    const { sent } = setup([{ __typename: "TopUpSuccess", checkoutUrl: null, transaction: succeeded }, { __typename: "TopUpSuccess", checkoutUrl: null, transaction: succeeded }], {
      config: LEGACY,
      cards: [],
    });
    await waitFor(() => expect(payButton().disabled).toBe(false));
    fireEvent.click(payButton());
    const notice = await screen.findByRole("status");
    expect(notice.textContent).toContain("500 credits were added to your balance.");
    expect(screen.getByRole("link", { name: "Invoice INV-0007" }).getAttribute("href")).toBe(succeeded.invoice.signedUrl);
    expect(calls.created).toEqual([{ type: "card", card }]);

    fireEvent.click(screen.getByRole("button", { name: "Top up again" }));
    await waitFor(() => expect(calls.mounted).toBe(2)); // a new Element in the form shown again
    await waitFor(() => expect(payButton().disabled).toBe(false));
    fireEvent.click(payButton());
    await screen.findByRole("button", { name: "Top up again" });

    const [first, second] = sent();
    expect(sent()).toHaveLength(2);
    expect(first).toEqual({ accountId: "Q3JlZGl0QWNjb3VudDox", credits: "500", paymentToken: "pm_new1", idempotencyKey: expect.stringMatching(/^mycredit-topup-/) });
    expect(second).toMatchObject({ paymentToken: "pm_new2" });
    expect(second.paymentMethodId).toBeUndefined();
    expect(second.idempotencyKey).not.toBe(first.idempotencyKey);
  });

  it("Stripe's refusal of the card shows under the field and no topUp is sent; typing again takes it away", async () => {
    const { type } = fakeStripe({ error: { message: "Your card number is incomplete." } });
    const { executeMutation } = setup(null, { config: LEGACY, cards: [] });
    await waitFor(() => expect(payButton().disabled).toBe(false));
    fireEvent.click(payButton());
    const alert = await screen.findByRole("alert");
    expect(alert.textContent).toBe("Your card number is incomplete.");
    expect(alert.closest(".field")?.querySelector("[role=group]")).toBe(screen.getByRole("group", { name: "Card" }));
    expect(executeMutation).not.toHaveBeenCalled();
    expect(payButton().disabled).toBe(false); // the person can fix the card and pay again

    type({ complete: false, empty: false });
    expect(screen.queryByRole("alert")).toBeNull();
    type({ complete: false, empty: false, error: { message: "Your card number is invalid." } });
    expect(screen.getByText("Your card number is invalid.")).toBeTruthy();
  });

  it("a declined new card shows the reason", async () => {
    fakeStripe({ paymentMethod: { id: "pm_declined" } });
    setup({ __typename: "PaymentDeclined", message: "declined", reason: "Your card was declined.", transaction: failed }, { config: LEGACY, cards: [] });
    await waitFor(() => expect(payButton().disabled).toBe(false));
    fireEvent.click(payButton());
    await waitFor(() => expect(screen.getByRole("alert").textContent).toBe("Payment declined: Your card was declined."));
    expect(screen.getByRole("group", { name: "Card" })).toBeTruthy(); // still on the form, to try another card
  });

  it("with a saved card, that card is the choice and Stripe.js waits until New card is chosen", async () => {
    setup(null, { config: LEGACY });
    expect(stripeScripts()).toHaveLength(0); // no Stripe.js on the page yet, and none asked for
    cleanup();
    const { calls } = fakeStripe({ paymentMethod: { id: "pm_1Stand" } });
    const { sent } = setup({ __typename: "TopUpSuccess", checkoutUrl: null, transaction: succeeded }, { config: LEGACY });
    const select = screen.getByRole("combobox", { name: "Pay with" }) as HTMLSelectElement;
    expect(select.value).toBe("card:pm1");
    expect([...select.options].map((o) => o.textContent)).toEqual(["Visa •••• 4242 (default)", "New card"]);
    expect(screen.queryByRole("group", { name: "Card" })).toBeNull();
    expect(calls.key).toEqual([]);
    expect(payButton().disabled).toBe(false);

    fireEvent.change(select, { target: { value: "new" } });
    await waitFor(() => expect(screen.getByRole("group", { name: "Card" }).textContent).toBe("[card field]"));
    expect(calls.key).toEqual(["pk_test_page"]);
    fireEvent.change(select, { target: { value: "card:pm1" } });
    expect(screen.queryByRole("group", { name: "Card" })).toBeNull();
    fireEvent.click(payButton());
    await screen.findByRole("button", { name: "Top up again" });
    expect(sent()).toEqual([{ accountId: "Q3JlZGl0QWNjb3VudDox", credits: "500", paymentMethodId: "pm1", idempotencyKey: expect.any(String) }]);
  });

  it("sandbox: test cards, no New card and no Stripe.js, with or without a saved card", () => {
    for (const cards of [[saved], []]) {
      setup(null, { config: { stripePublishableKey: "pk_test_page" }, cards });
      const select = screen.getByRole("combobox", { name: "Pay with" }) as HTMLSelectElement;
      expect(select.value).toBe(cards.length ? "card:pm1" : "token:tok_visa");
      expect([...select.options].map((o) => o.value)).not.toContain("new");
      expect(screen.queryByRole("group", { name: "Card" })).toBeNull();
      expect(stripeScripts()).toHaveLength(0);
      cleanup();
    }
  });

  it("legacy without a publishable key and no saved card: says where to add one, no empty list, Pay stays off", () => {
    const { goTo, onDone } = setup(null, { config: { ...LEGACY, stripePublishableKey: null }, cards: [] });
    expect(screen.queryByRole("combobox", { name: "Pay with" })).toBeNull();
    expect(screen.getByText("You have no saved card to pay with. Add a card on the Payment Method tab, then top up here.")).toBeTruthy();
    expect(payButton().disabled).toBe(true);
    expect(payButton().getAttribute("aria-describedby")).toBe("topup-no-card");
    expect(stripeScripts()).toHaveLength(0);
    fireEvent.click(screen.getByRole("button", { name: "Go to Payment Method" }));
    expect(onDone).toHaveBeenCalledOnce();
    expect(goTo).toHaveBeenCalledWith("PAYMENT_METHOD");
  });

  it("legacy without a publishable key but a saved card: the saved cards only", () => {
    setup(null, { config: { ...LEGACY, stripePublishableKey: null } });
    const select = screen.getByRole("combobox", { name: "Pay with" }) as HTMLSelectElement;
    expect([...select.options].map((o) => o.value)).toEqual(["card:pm1"]);
    expect(stripeScripts()).toHaveLength(0);
  });
});
