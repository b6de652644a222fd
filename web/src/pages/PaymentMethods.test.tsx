import { afterEach, describe, expect, it, vi } from "vitest";
import { fireEvent, render, screen, waitFor } from "@testing-library/react";
import { Provider, type Client } from "urql";
import { fromValue, never } from "wonka";
import { DashboardContext, type Dashboard } from "../lib/context";
import { PaymentMethods } from "./PaymentMethods";
import { STRIPE_JS_URL, resetStripeJsForTests } from "../lib/stripe";
import { fakeStripe } from "../test/fakeStripe";

const ACCOUNT = "Q3JlZGl0QWNjb3VudDox";
const card = { __typename: "PaymentMethod", id: "pm1", brand: "visa", last4: "4242", expMonth: 12, expYear: 2034, isDefault: true };
const configured = {
  __typename: "AutoTopUp",
  enabled: true,
  status: "ACTIVE",
  statusMessage: "Tops up 100 credits when available credit falls below 50.",
  threshold: "50",
  amount: "100",
  target: null,
  monthlyCap: "1000",
  toppedUpThisMonth: "0",
  declines: 0,
  disabledReason: null,
  nextAttemptAt: null,
  paymentMethod: null,
  pendingTransaction: null,
};

const SANDBOX = { __typename: "BillingConfig", gateway: "sandbox", legacyGateway: true, stripePublishableKey: null };

function setup(autoTopUp: unknown, config: Record<string, unknown> = SANDBOX) {
  const executeMutation = vi.fn((operation: { query: { definitions: { name?: { value: string } }[] } }) =>
    fromValue({
      data:
        operation.query.definitions[0].name?.value === "AddPaymentMethod"
          ? { addPaymentMethod: { __typename: "AddPaymentMethodSuccess", paymentMethod: { ...card, id: "pm2", last4: "4444", brand: "mastercard" } } }
          : { configureAutoTopUp: { __typename: "ConfigureAutoTopUpSuccess", autoTopUp: { ...configured } } },
    }),
  );
  const client = {
    executeQuery: vi.fn(() =>
      fromValue({
        data: {
          billingConfig: config,
          node: { __typename: "CreditAccount", id: ACCOUNT, paymentMethods: [card], autoTopUp },
        },
      }),
    ),
    executeMutation,
    executeSubscription: vi.fn(() => never),
  } as unknown as Client;
  const dashboard: Dashboard = {
    session: { kind: "portal", token: "clp_x", accountId: ACCOUNT },
    accountId: ACCOUNT,
    billingConfig: {
      gateway: "sandbox",
      legacyGateway: true,
      dashboardTabs: ["OVERVIEW", "PAYMENT_METHOD"],
      creditPrice: { amount: 100, currency: "USD" },
      topUpMin: "10",
      topUpMax: "1000",
      stripePublishableKey: null,
    },
    liveTick: 0,
    openTopUp: () => {},
    goTo: () => {},
  };
  render(
    <Provider value={client}>
      <DashboardContext.Provider value={dashboard}>
        <PaymentMethods />
      </DashboardContext.Provider>
    </Provider>,
  );
  return { executeMutation };
}

const field = (name: string) => screen.getByRole("textbox", { name }) as HTMLInputElement;

describe("Auto top-up", () => {
  it("not set up: says so, the checkbox is off and the fields hold only suggestions", () => {
    setup(null);
    expect(screen.getByText("Not set up")).toBeTruthy();
    expect((screen.getByRole("checkbox", { name: "Auto top-up on" }) as HTMLInputElement).checked).toBe(false);
    for (const [name, suggested] of [
      ["When available credit falls below", "50"],
      ["Credits to buy", "100"],
      ["Monthly cap (credits)", "1000"],
    ]) {
      const input = field(name);
      expect(input.value).toBe("");
      expect(input.placeholder).toBe(suggested);
      expect(document.getElementById(input.getAttribute("aria-describedby")!)?.textContent).toMatch(/^Suggested: /);
    }
    expect(document.getElementById(field("Monthly cap (credits)").getAttribute("aria-describedby")!)?.textContent).toBe("Suggested: 1,000");
  });

  it("not set up: saving empty fields asks for the numbers and sends nothing", async () => {
    const { executeMutation } = setup(null);
    fireEvent.click(screen.getByRole("checkbox", { name: "Auto top-up on" }));
    fireEvent.click(screen.getByRole("button", { name: "Save auto top-up" }));
    expect((await screen.findByRole("alert")).textContent).toBe("Enter the threshold as a number of credits.");
    expect(executeMutation).not.toHaveBeenCalled();
  });

  it("not set up: what the person types is what is saved, on", async () => {
    const { executeMutation } = setup(null);
    fireEvent.click(screen.getByRole("checkbox", { name: "Auto top-up on" }));
    fireEvent.change(field("When available credit falls below"), { target: { value: "50" } });
    fireEvent.change(field("Credits to buy"), { target: { value: "100" } });
    fireEvent.change(field("Monthly cap (credits)"), { target: { value: "1000" } });
    fireEvent.click(screen.getByRole("button", { name: "Save auto top-up" }));
    await waitFor(() => expect(executeMutation).toHaveBeenCalledOnce());
    const calls = executeMutation.mock.calls as unknown as [{ variables: { input: Record<string, unknown> } }][];
    expect(calls[0][0].variables.input).toEqual({
      accountId: ACCOUNT,
      enabled: true,
      threshold: "50",
      amount: "100",
      monthlyCap: "1000",
      paymentMethodId: null,
    });
  });

  it("set up: the status, the checkbox and the fields show the saved settings", () => {
    setup(configured);
    expect(screen.getByText("Active")).toBeTruthy();
    expect(screen.queryByText("Not set up")).toBeNull();
    expect((screen.getByRole("checkbox", { name: "Auto top-up on" }) as HTMLInputElement).checked).toBe(true);
    expect(field("When available credit falls below").value).toBe("50");
    expect(field("Credits to buy").value).toBe("100");
    expect(field("Monthly cap (credits)").placeholder).toBe("");
    expect(screen.queryByText(/^Suggested:/)).toBeNull();
  });

  it("set up but off: the checkbox is off", () => {
    setup({ ...configured, enabled: false, status: "OFF", statusMessage: "Auto top-up is off." });
    expect(screen.getByText("Off")).toBeTruthy();
    expect((screen.getByRole("checkbox", { name: "Auto top-up on" }) as HTMLInputElement).checked).toBe(false);
  });
});

const LEGACY = { __typename: "BillingConfig", gateway: "legacy", legacyGateway: true, stripePublishableKey: "pk_test_page" };
const stripeScripts = () => document.querySelectorAll(`script[src="${STRIPE_JS_URL}"]`);

describe("Add a card", () => {
  afterEach(() => resetStripeJsForTests());

  it("sandbox: a test card from the list, and no Stripe.js", () => {
    setup(null);
    expect(screen.getByRole("combobox", { name: /^Test card/ })).toBeTruthy();
    expect(stripeScripts()).toHaveLength(0);
  });

  it("legacy without a publishable key: a PaymentMethod id is typed in, and no Stripe.js", () => {
    setup(null, { ...LEGACY, stripePublishableKey: null });
    expect(screen.getByRole("textbox", { name: /^Stripe PaymentMethod ID/ })).toBeTruthy();
    expect(stripeScripts()).toHaveLength(0);
  });

  it("legacy with a key: loads Stripe.js from js.stripe.com once, while the field loads the button waits", async () => {
    setup(null, LEGACY);
    expect(screen.getByText("Loading Stripe's secure card field…")).toBeTruthy();
    expect((screen.getByRole("button", { name: "Add card" }) as HTMLButtonElement).disabled).toBe(true);
    const scripts = stripeScripts();
    expect(scripts).toHaveLength(1);
    expect(scripts[0].getAttribute("src")).toBe("https://js.stripe.com/v3");
    expect(screen.queryByRole("textbox", { name: /^Stripe PaymentMethod ID/ })).toBeNull();
  });

  it("legacy with a key: the card Element makes a PaymentMethod that addPaymentMethod takes", async () => {
    const { calls, card } = fakeStripe({ paymentMethod: { id: "pm_1Stand" } });
    const { executeMutation } = setup(null, LEGACY);
    const field = screen.getByRole("group", { name: "Card" });
    await waitFor(() => expect(field.textContent).toBe("[card field]"));
    const button = screen.getByRole("button", { name: "Add card" }) as HTMLButtonElement;
    await waitFor(() => expect(button.disabled).toBe(false));
    fireEvent.click(button);
    expect((await screen.findByText("Mastercard ending in 4444 was added.")).closest("[role=status]")).toBeTruthy();
    expect(calls.key).toEqual(["pk_test_page"]);
    expect(calls.created).toEqual([{ type: "card", card }]);
    const sent = executeMutation.mock.calls.map((c) => (c as unknown as [{ variables: { input: unknown } }])[0].variables.input);
    expect(sent).toEqual([{ accountId: ACCOUNT, token: "pm_1Stand" }]);
    expect(card.clear).toHaveBeenCalledOnce();
    expect(stripeScripts()).toHaveLength(0); // window.Stripe was there already: no second copy
  });

  it("legacy with a key: Stripe's refusal is shown and nothing is sent to the API", async () => {
    fakeStripe({ error: { message: "Your card number is incomplete." } });
    const { executeMutation } = setup(null, LEGACY);
    const button = screen.getByRole("button", { name: "Add card" }) as HTMLButtonElement;
    await waitFor(() => expect(button.disabled).toBe(false));
    fireEvent.click(button);
    expect((await screen.findByRole("alert")).textContent).toBe("Your card number is incomplete.");
    expect(executeMutation).not.toHaveBeenCalled();
  });
});
