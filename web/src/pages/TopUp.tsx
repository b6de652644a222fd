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

export function TopUpDialog({ open, onClose }: { open: boolean; onClose: () => void }) {
  return (
    <Dialog title="Top up" open={open} onClose={onClose}>
      <TopUpForm onDone={onClose} />
    </Dialog>
  );
}

const PRESETS = ["100", "500", "1000", "5000"];

export function TopUpForm({ onDone }: { onDone: () => void }) {
  const { accountId, billingConfig, liveTick } = useDashboard();
  const [form] = useQuery({ query: TopUpFormQuery, variables: { accountId } });
  const [credits, setCredits] = useState("500");
  const [source, setSource] = useState<string>("");
  const [error, setError] = useState<string | null>(null);
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
  const legacy = billingConfig.legacyGateway;
  const sandbox = billingConfig.gateway === "sandbox";
  useEffect(() => {
    if (source) return;
    const def = cards.find((c) => c.isDefault) ?? cards[0];
    if (def) setSource(`card:${def.id}`);
    else if (sandbox) setSource("token:tok_visa");
  }, [cards, source, sandbox]);

  const price = billingConfig.creditPrice;
  const valid = isCredits(credits);
  const inRange = valid && compareCredits(credits, billingConfig.topUpMin) >= 0 && compareCredits(credits, billingConfig.topUpMax) <= 0;
  const cost = valid ? formatMoney(priceOfCredits(credits, price.amount), price.currency) : "—";

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setError(null);
    if (!valid) return setError("Enter a number of credits, such as 500.");
    if (!inRange)
      return setError(`You can buy from ${formatCredits(billingConfig.topUpMin)} to ${formatCredits(billingConfig.topUpMax)} credits at a time.`);
    setBusy(true);
    const input: Parameters<typeof topUp>[0]["input"] = { accountId, credits, idempotencyKey: idempotencyKey("topup") };
    if (legacy) {
      if (source.startsWith("card:")) input.paymentMethodId = source.slice(5);
      else if (source.startsWith("token:")) input.paymentToken = source.slice(6);
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
        ) : (
          <label className="field">
            <span className="field-label">Pay with</span>
            <select value={source} onChange={(e) => setSource(e.target.value)}>
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
            </select>
          </label>
        )
      ) : (
        <p className="muted">You pay on Stripe's secure checkout page, then come back here.</p>
      )}
      {error ? <Notice tone="error">{error}</Notice> : null}
      <div className="actions">
        <button type="submit" className="button button-primary" disabled={busy || (legacy && !source)}>
          {busy ? "Paying…" : `Pay ${cost}`}
        </button>
      </div>
    </form>
  );
}
