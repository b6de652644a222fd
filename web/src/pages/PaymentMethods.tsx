import { useEffect, useId, useState, type FormEvent } from "react";
import { useMutation, useQuery } from "urql";
import { useDashboard } from "../lib/context";
import {
  AddPaymentMethodMutation,
  ConfigureAutoTopUpMutation,
  PaymentMethodsQuery,
  RemovePaymentMethodMutation,
  SetDefaultPaymentMethodMutation,
} from "../lib/documents";
import { SANDBOX_TOKENS } from "../lib/cards";
import { formatCredits, isCredits } from "../lib/credits";
import { describeCombinedError, describeResultError } from "../lib/errors";
import { brandName, formatDateTime } from "../lib/format";
import type { PaymentMethodsQuery as Data } from "../gql/graphql";
import { Empty, Loading, Notice, Section, StatusBadge } from "../components/ui";
import { StripeCardField, useStripeCard } from "../components/StripeCardField";

type Message = { tone: "error" | "success"; text: string } | null;
type Account = Extract<NonNullable<Data["node"]>, { __typename: "CreditAccount" }>;

export function PaymentMethods() {
  const { accountId, liveTick } = useDashboard();
  const [result, refetch] = useQuery({ query: PaymentMethodsQuery, variables: { accountId } });
  useEffect(() => {
    if (liveTick > 0) refetch({ requestPolicy: "network-only" });
  }, [liveTick, refetch]);
  const [message, setMessage] = useState<Message>(null);
  const [, setDefault] = useMutation(SetDefaultPaymentMethodMutation);
  const [, remove] = useMutation(RemovePaymentMethodMutation);
  const data = result.data;
  if (!data) return result.error ? <Notice tone="error">{describeCombinedError(result.error)}</Notice> : <Loading label="Loading cards…" />;
  const account = data.node?.__typename === "CreditAccount" ? data.node : null;
  if (!account) return <Notice tone="error">This account's cards cannot be shown.</Notice>;
  const cards = account.paymentMethods;

  const act = async (kind: "default" | "remove", id: string, name: string) => {
    setMessage(null);
    const input = { accountId, paymentMethodId: id };
    const r = kind === "default" ? await setDefault({ input }) : await remove({ input });
    if (r.error) return setMessage({ tone: "error", text: describeCombinedError(r.error) });
    const answer = r.data && ("setDefaultPaymentMethod" in r.data ? r.data.setDefaultPaymentMethod : r.data.removePaymentMethod);
    if (!answer) return;
    if (answer.__typename === "PaymentMethodsSuccess") {
      setMessage({ tone: "success", text: kind === "default" ? `${name} is now your default card.` : `${name} was removed.` });
      refetch({ requestPolicy: "network-only" });
    } else setMessage({ tone: "error", text: describeResultError(answer) });
  };

  return (
    <div className="stack">
      <Section title="Saved cards">
        {message ? <Notice tone={message.tone}>{message.text}</Notice> : null}
        {cards.length === 0 ? (
          <Empty title="No saved cards">Add a card to top up in one click and to use auto top-up.</Empty>
        ) : (
          <ul className="cards">
            {cards.map((card) => {
              const name = `${brandName(card.brand)} ending in ${card.last4}`;
              return (
                <li key={card.id} className="card-row" aria-label={name}>
                  <div className={`card-brand brand-${card.brand.toLowerCase()}`} aria-hidden="true">
                    {brandMark(card.brand)}
                  </div>
                  <div className="card-info">
                    <div>
                      {brandName(card.brand)} •••• {card.last4} {card.isDefault ? <span className="badge badge-good">Default</span> : null}
                    </div>
                    <div className="muted small">
                      Expires {String(card.expMonth).padStart(2, "0")}/{card.expYear}
                    </div>
                  </div>
                  <div className="card-actions">
                    {!card.isDefault ? (
                      <button type="button" className="button button-small" onClick={() => act("default", card.id, name)} aria-label={`Make default: ${name}`}>
                        Make default
                      </button>
                    ) : null}
                    <button type="button" className="button button-small button-danger" onClick={() => act("remove", card.id, name)} aria-label={`Remove ${name}`}>
                      Remove
                    </button>
                  </div>
                </li>
              );
            })}
          </ul>
        )}
        <AddCard
          legacy={data.billingConfig.gateway === "legacy"}
          publishableKey={data.billingConfig.stripePublishableKey ?? null}
          onAdded={() => refetch({ requestPolicy: "network-only" })} />
      </Section>
      <AutoTopUpSection account={account} onSaved={() => refetch({ requestPolicy: "network-only" })} />
    </div>
  );
}

function AddCard({ legacy, publishableKey, onAdded }: { legacy: boolean; publishableKey: string | null; onAdded: () => void }) {
  const { accountId } = useDashboard();
  const [token, setToken] = useState(legacy ? "" : "tok_visa");
  const [message, setMessage] = useState<Message>(null);
  const [busy, setBusy] = useState(false);
  const [, add] = useMutation(AddPaymentMethodMutation);
  // On `legacy` with a publishable key the card is typed into Stripe's own field (Stripe.js Elements) and
  // becomes a PaymentMethod there; without a key, a PaymentMethod id made elsewhere is typed in.
  const stripe = useStripeCard(legacy ? publishableKey : null, () => setMessage(null));
  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setMessage(null);
    let paymentToken = token.trim();
    setBusy(true);
    try {
      if (stripe.enabled) {
        const made = await stripe.createPaymentMethod();
        if ("error" in made) return setMessage({ tone: "error", text: made.error });
        paymentToken = made.id;
      }
      const r = await add({ input: { accountId, token: paymentToken } });
      if (r.error) return setMessage({ tone: "error", text: describeCombinedError(r.error) });
      const a = r.data?.addPaymentMethod;
      if (a?.__typename === "AddPaymentMethodSuccess") {
        setMessage({ tone: "success", text: `${brandName(a.paymentMethod.brand)} ending in ${a.paymentMethod.last4} was added.` });
        stripe.clear();
        onAdded();
      } else if (a) setMessage({ tone: "error", text: describeResultError(a) });
    } finally {
      setBusy(false);
    }
  };
  return (
    <form className="form add-card" onSubmit={submit} aria-label="Add a card">
      <h3>Add a card</h3>
      {stripe.enabled ? (
        <StripeCardField stripe={stripe} hint="The card number goes straight to Stripe; this page never sees it." />
      ) : legacy ? (
        <label className="field">
          <span className="field-label">Stripe PaymentMethod ID</span>
          <input value={token} onChange={(e) => setToken(e.target.value)} placeholder="pm_…" required spellCheck={false} />
          <span className="field-hint">The id Stripe.js gives for a card (pm_…).</span>
        </label>
      ) : (
        <label className="field">
          <span className="field-label">Test card</span>
          <select value={token} onChange={(e) => setToken(e.target.value)}>
            {SANDBOX_TOKENS.map((t) => (
              <option key={t.token} value={t.token}>
                {t.label}
              </option>
            ))}
          </select>
          <span className="field-hint">The sandbox gateway takes test card tokens; no real card is charged.</span>
        </label>
      )}
      {message ? <Notice tone={message.tone}>{message.text}</Notice> : null}
      <div className="actions">
        <button type="submit" className="button button-primary" disabled={busy || (stripe.enabled && stripe.status !== "ready")}>
          {busy ? "Adding…" : "Add card"}
        </button>
      </div>
    </form>
  );
}

/** What the form suggests before auto top-up is set up (placeholders, never pre-filled values). */
const SUGGESTED = { threshold: "50", amount: "100", target: "200", cap: "1000" } as const;

function AutoTopUpSection({ account, onSaved }: { account: Account; onSaved: () => void }) {
  const { accountId } = useDashboard();
  const auto = account.autoTopUp;
  // Not set up: the form is off and empty, and shows the suggested values as placeholders and hints, so the
  // checkbox and the fields agree with the "Not set up" status until the person saves settings of their own.
  const [enabled, setEnabled] = useState(auto?.enabled ?? false);
  const [mode, setMode] = useState<"amount" | "target">(auto?.target ? "target" : "amount");
  const [threshold, setThreshold] = useState(auto?.threshold ?? "");
  const [amount, setAmount] = useState(auto?.amount ?? auto?.target ?? "");
  const [cap, setCap] = useState(auto?.monthlyCap ?? "");
  const ids = useId();
  // The hint describes the field without becoming part of its name ("When available credit falls below").
  const suggest = (field: string, value: string) =>
    auto ? { "aria-labelledby": `${ids}-${field}` } : { placeholder: value, "aria-labelledby": `${ids}-${field}`, "aria-describedby": `${ids}-${field}-hint` };
  const hint = (field: string, value: string) =>
    auto ? null : (
      <span className="field-hint" id={`${ids}-${field}-hint`}>
        Suggested: {formatCredits(value)}
      </span>
    );
  const [card, setCard] = useState(auto?.paymentMethod?.id ?? "");
  const [message, setMessage] = useState<Message>(null);
  const [busy, setBusy] = useState(false);
  const [, configure] = useMutation(ConfigureAutoTopUpMutation);
  const cards = account.paymentMethods;

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setMessage(null);
    for (const [label, value] of [
      ["threshold", threshold],
      [mode === "amount" ? "credits to buy" : "target balance", amount],
      ["monthly cap", cap],
    ] as const) {
      if (!isCredits(value)) return setMessage({ tone: "error", text: `Enter the ${label} as a number of credits.` });
    }
    setBusy(true);
    const r = await configure({
      input: {
        accountId,
        enabled,
        threshold,
        monthlyCap: cap,
        ...(mode === "amount" ? { amount } : { target: amount }),
        paymentMethodId: card || null,
      },
    });
    setBusy(false);
    if (r.error) return setMessage({ tone: "error", text: describeCombinedError(r.error) });
    const a = r.data?.configureAutoTopUp;
    if (a?.__typename === "ConfigureAutoTopUpSuccess") {
      setMessage({ tone: "success", text: `Auto top-up saved: ${a.autoTopUp.statusMessage}` });
      onSaved();
    } else if (a) setMessage({ tone: "error", text: describeResultError(a) });
  };

  return (
    <Section title="Auto top-up" actions={auto ? <StatusBadge status={auto.status} /> : <StatusBadge status="OFF" label="Not set up" />}>
      {auto ? (
        <div className="auto-status">
          <p>{auto.statusMessage}</p>
          <p className="muted small">
            Bought this month: {formatCredits(auto.toppedUpThisMonth)} of {formatCredits(auto.monthlyCap)} credits
            {auto.paymentMethod ? ` · charged to ${brandName(auto.paymentMethod.brand)} •••• ${auto.paymentMethod.last4}` : ""}
            {auto.declines > 0 ? ` · ${auto.declines} declined in a row` : ""}
            {auto.nextAttemptAt ? ` · next try ${formatDateTime(auto.nextAttemptAt)}` : ""}
          </p>
          {auto.disabledReason ? <Notice tone="warn">Switched off: {auto.disabledReason}</Notice> : null}
        </div>
      ) : (
        <p className="muted">
          Buy credit by itself when your available balance runs low, on a saved card, within a monthly cap. It is not set
          up: tick Auto top-up on, enter the amounts (suggestions are shown) and save.
        </p>
      )}
      <form className="form auto-form" onSubmit={submit} aria-label="Auto top-up settings">
        <label className="checkbox">
          <input type="checkbox" checked={enabled} onChange={(e) => setEnabled(e.target.checked)} />
          <span>Auto top-up on</span>
        </label>
        <div className="form-row">
          <label className="field">
            <span className="field-label" id={`${ids}-threshold`}>
              When available credit falls below
            </span>
            <input inputMode="decimal" value={threshold} onChange={(e) => setThreshold(e.target.value)} {...suggest("threshold", SUGGESTED.threshold)} />
            {hint("threshold", SUGGESTED.threshold)}
          </label>
          <fieldset className="field radio-group">
            <legend className="field-label">How much to buy</legend>
            <label className="radio">
              <input type="radio" name="auto-mode" checked={mode === "amount"} onChange={() => setMode("amount")} />
              <span>A fixed amount</span>
            </label>
            <label className="radio">
              <input type="radio" name="auto-mode" checked={mode === "target"} onChange={() => setMode("target")} />
              <span>Up to a target balance</span>
            </label>
          </fieldset>
          <label className="field">
            <span className="field-label" id={`${ids}-amount`}>
              {mode === "amount" ? "Credits to buy" : "Target balance"}
            </span>
            <input inputMode="decimal" value={amount} onChange={(e) => setAmount(e.target.value)} {...suggest("amount", SUGGESTED[mode])} />
            {hint("amount", SUGGESTED[mode])}
          </label>
          <label className="field">
            <span className="field-label" id={`${ids}-cap`}>
              Monthly cap (credits)
            </span>
            <input inputMode="decimal" value={cap} onChange={(e) => setCap(e.target.value)} {...suggest("cap", SUGGESTED.cap)} />
            {hint("cap", SUGGESTED.cap)}
          </label>
          <label className="field">
            <span className="field-label">Card for auto top-up</span>
            <select value={card} onChange={(e) => setCard(e.target.value)}>
              <option value="">Default card</option>
              {cards.map((c) => (
                <option key={c.id} value={c.id}>
                  {brandName(c.brand)} •••• {c.last4}
                </option>
              ))}
            </select>
          </label>
        </div>
        {message ? <Notice tone={message.tone}>{message.text}</Notice> : null}
        <div className="actions">
          <button type="submit" className="button button-primary" disabled={busy || cards.length === 0}>
            {busy ? "Saving…" : "Save auto top-up"}
          </button>
          {cards.length === 0 ? <span className="muted small">Add a card first.</span> : null}
        </div>
      </form>
    </Section>
  );
}

function brandMark(brand: string): string {
  const marks: Record<string, string> = { visa: "VISA", mastercard: "MC", amex: "AMEX", discover: "DISC" };
  return marks[brand.toLowerCase()] ?? brand.slice(0, 4).toUpperCase();
}
