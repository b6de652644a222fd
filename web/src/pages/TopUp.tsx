import { useEffect, useState, type FormEvent } from "react";
import { useMutation, useQuery } from "urql";
import { idempotencyKey, useDashboard } from "../lib/context";
import { TopUpFormQuery, TopUpMutation, TransactionNodeQuery } from "../lib/documents";
import { SANDBOX_TOKENS } from "../lib/cards";
import { compareCredits, formatCredits, formatMoney, isCredits, priceOfCredits } from "../lib/credits";
import { describeCombinedError, describeResultError } from "../lib/errors";
import { brandName } from "../lib/format";
import type { TransactionFieldsFragment } from "../gql/graphql";
import { Dialog, Loading, Notice } from "../components/ui";
import { StripeCardField, useStripeCard } from "../components/StripeCardField";

export function TopUpDialog({ open, onClose }: { open: boolean; onClose: () => void }) {
  return (
    <Dialog title="Top up" open={open} onClose={onClose}>
      <TopUpForm onDone={onClose} />
    </Dialog>
  );
}

const PRESETS = ["100", "500", "1000", "5000"];

/** "Pay with"'s choice of a card typed into Stripe.js now (legacy with a publishable key). */
const NEW_CARD = "new";

// What the server does with a paymentToken on legacy (billing/payments.py top_up, gateway/stripe_api.py): the
// PaymentMethod is read, not attached to the account's Stripe customer, and charged once; no card is saved.
const NEW_CARD_HINT =
  "This card is charged once and not saved. To keep a card for later top-ups and auto top-up, add it on the Payment Method tab. The card number goes straight to Stripe; this page never sees it.";

export function TopUpForm({ onDone }: { onDone: () => void }) {
  const { accountId, billingConfig, liveTick, goTo } = useDashboard();
  const [form] = useQuery({ query: TopUpFormQuery, variables: { accountId } });
  const [credits, setCredits] = useState("500");
  const [source, setSource] = useState<string>("");
  const [error, setError] = useState<string | null>(null);
  const [cardError, setCardError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [transaction, setTransaction] = useState<TransactionFieldsFragment | null>(null);
  const [, topUp] = useMutation(TopUpMutation);
  const [txn, refetchTxn] = useQuery({
    query: TransactionNodeQuery,
    variables: { id: transaction?.id ?? "" },
    pause: !transaction || transaction.status !== "PENDING",
    requestPolicy: "network-only",
  });
  const current = txn.data?.node?.__typename === "Transaction" ? txn.data.node : transaction;
  useEffect(() => {
    if (!transaction || transaction.status !== "PENDING" || (current && current.status !== "PENDING")) return;
    const timer = setInterval(() => refetchTxn({ requestPolicy: "network-only" }), 2000);
    return () => clearInterval(timer);
  }, [transaction, current, refetchTxn]);
  useEffect(() => {
    if (liveTick > 0 && transaction?.status === "PENDING") refetchTxn({ requestPolicy: "network-only" });
  }, [liveTick, transaction, refetchTxn]);

  const cards = form.data?.node?.__typename === "CreditAccount" ? form.data.node.paymentMethods : [];
  const loaded = !!form.data;
  const legacy = billingConfig.legacyGateway; // a card-on-file gateway: legacy, or sandbox's test tokens
  const sandbox = billingConfig.gateway === "sandbox";
  // A new card is typed into Stripe.js, which only `legacy` with a publishable key has (and its CSP allows).
  const newCardKey = billingConfig.gateway === "legacy" ? billingConfig.stripePublishableKey : null;
  useEffect(() => {
    if (source || !loaded) return; // the saved cards decide the default: wait for them
    const def = cards.find((c) => c.isDefault) ?? cards[0];
    if (def) setSource(`card:${def.id}`);
    else if (sandbox) setSource("token:tok_visa");
    else if (newCardKey) setSource(NEW_CARD);
  }, [cards, loaded, source, sandbox, newCardKey]);
  const formShown = !current || current.status === "FAILED";
  // Stripe.js is loaded (and its field mounted) only while "New card" is the choice on the form shown.
  const stripe = useStripeCard(
    formShown && source === NEW_CARD ? newCardKey : null,
    () => {
      setCardError(null);
      setError(null);
    },
    "Stripe's card field could not be loaded. Check your connection, then close Top up and open it again.",
  );
  const noCardToPayWith = legacy && loaded && cards.length === 0 && !sandbox && !newCardKey;

  const price = billingConfig.creditPrice;
  const valid = isCredits(credits);
  const inRange = valid && compareCredits(credits, billingConfig.topUpMin) >= 0 && compareCredits(credits, billingConfig.topUpMax) <= 0;
  const cost = valid ? formatMoney(priceOfCredits(credits, price.amount), price.currency) : "—";

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setError(null);
    setCardError(null);
    if (!valid) return setError("Enter a number of credits, such as 500.");
    if (!inRange)
      return setError(`You can buy from ${formatCredits(billingConfig.topUpMin)} to ${formatCredits(billingConfig.topUpMax)} credits at a time.`);
    setBusy(true);
    const input: Parameters<typeof topUp>[0]["input"] = { accountId, credits, idempotencyKey: idempotencyKey("topup") };
    if (legacy) {
      if (source.startsWith("card:")) input.paymentMethodId = source.slice(5);
      else if (source.startsWith("token:")) input.paymentToken = source.slice(6);
      else if (source === NEW_CARD) {
        // Stripe.js turns the card into a PaymentMethod (pm_...) first; its refusal goes under the field
        const made = await stripe.createPaymentMethod();
        if ("error" in made) {
          setBusy(false);
          return setCardError(made.error);
        }
        input.paymentToken = made.id;
      }
    }
    const r = await topUp({ input });
    setBusy(false);
    if (r.error) return setError(describeCombinedError(r.error));
    const answer = r.data?.topUp;
    if (!answer) return;
    if (answer.__typename === "TopUpSuccess") {
      if (answer.checkoutUrl) {
        window.location.assign(answer.checkoutUrl);
        return;
      }
      setTransaction(answer.transaction);
    } else if (answer.__typename === "PaymentDeclined") {
      setTransaction(answer.transaction);
      setError(describeResultError(answer));
    } else setError(describeResultError(answer));
  };

  if (current && current.status !== "FAILED") {
    return (
      <div className="stack">
        {current.status === "PENDING" ? (
          <Notice tone="info" title="Payment pending">
            Your payment of {formatMoney(current.amount.amount, current.amount.currency)} is being processed. This updates by itself.
          </Notice>
        ) : (
          <Notice tone="success" title="Payment succeeded">
            {formatCredits(current.credits)} credits were added to your balance.
            {current.invoice ? (
              <>
                {" "}
                <a href={current.invoice.signedUrl} target="_blank" rel="noopener noreferrer">
                  Invoice {current.invoice.number}
                </a>
              </>
            ) : null}
          </Notice>
        )}
        <div className="actions">
          <button type="button" className="button button-primary" onClick={onDone}>
            Done
          </button>
          <button
            type="button"
            className="button"
            onClick={() => {
              setTransaction(null);
              setError(null);
              setCardError(null);
            }}
          >
            Top up again
          </button>
        </div>
      </div>
    );
  }

  return (
    <form className="form" onSubmit={submit} aria-label="Top up">
      <label className="field">
        <span className="field-label">Credits</span>
        <input
          inputMode="decimal"
          value={credits}
          onChange={(e) => setCredits(e.target.value.trim())}
          aria-describedby="topup-price"
          autoFocus
        />
      </label>
      <div className="presets" role="group" aria-label="Common amounts">
        {PRESETS.map((p) => (
          <button key={p} type="button" className="button button-small" aria-pressed={credits === p} onClick={() => setCredits(p)}>
            {formatCredits(p)}
          </button>
        ))}
      </div>
      <p id="topup-price" className="price-line">
        Price: <strong>{cost}</strong>{" "}
        <span className="muted">({formatMoney(price.amount, price.currency)} per 100 credits)</span>
      </p>
      {legacy ? (
        form.fetching && !form.data ? (
          <Loading label="Loading cards…" />
        ) : form.error && !form.data ? (
          <Notice tone="error">{describeCombinedError(form.error)}</Notice>
        ) : noCardToPayWith ? (
          <div className="no-card" id="topup-no-card">
            <p>You have no saved card to pay with. Add a card on the Payment Method tab, then top up here.</p>
            {billingConfig.dashboardTabs.includes("PAYMENT_METHOD") ? (
              <button
                type="button"
                className="button button-small"
                onClick={() => {
                  onDone();
                  goTo("PAYMENT_METHOD");
                }}
              >
                Go to Payment Method
              </button>
            ) : null}
          </div>
        ) : (
          <>
            <label className="field">
              <span className="field-label">Pay with</span>
              <select
                value={source}
                onChange={(e) => {
                  setSource(e.target.value);
                  setCardError(null);
                }}
              >
                {cards.map((c) => (
                  <option key={c.id} value={`card:${c.id}`}>
                    {brandName(c.brand)} •••• {c.last4}
                    {c.isDefault ? " (default)" : ""}
                  </option>
                ))}
                {sandbox
                  ? SANDBOX_TOKENS.map((t) => (
                      <option key={t.token} value={`token:${t.token}`}>
                        Test card: {t.label}
                      </option>
                    ))
                  : null}
                {newCardKey ? <option value={NEW_CARD}>New card</option> : null}
              </select>
            </label>
            {source === NEW_CARD ? <StripeCardField stripe={stripe} hint={NEW_CARD_HINT} error={cardError} /> : null}
          </>
        )
      ) : (
        <p className="muted">You pay on Stripe's secure checkout page, then come back here.</p>
      )}
      {error ? <Notice tone="error">{error}</Notice> : null}
      <div className="actions">
        <button
          type="submit"
          className="button button-primary"
          disabled={busy || (legacy && !source) || (source === NEW_CARD && stripe.status !== "ready")}
          aria-describedby={noCardToPayWith ? "topup-no-card" : undefined}
        >
          {busy ? "Paying…" : `Pay ${cost}`}
        </button>
      </div>
    </form>
  );
}
