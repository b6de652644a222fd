import { useEffect, useRef, useState } from "react";
import { useMutation, useQuery, type OperationResult } from "urql";
import { idempotencyKey, useDashboard } from "../lib/context";
import {
  BillingQuery,
  TransactionNodeQuery,
  CancelCheckoutMutation,
  CancelSubscriptionMutation,
  ChangePlanMutation,
  CustomerPortalMutation,
  ResumeSubscriptionMutation,
  SubscribeMutation,
} from "../lib/documents";
import { formatCredits, formatMoney } from "../lib/credits";
import { describeCombinedError, describeResultError } from "../lib/errors";
import { brandName, formatDate, humanize } from "../lib/format";
import type { CancelCheckoutMutation as CancelCheckoutAnswer, TransactionFieldsFragment } from "../gql/graphql";
import { Empty, Loading, Notice, Section, StatusBadge } from "../components/ui";

type Message = { tone: "error" | "success" | "info" | "warn"; text: string } | null;

function intervalWord(interval: string): string {
  const i = interval.toLowerCase();
  return i === "month" || i === "monthly" ? "month" : i === "year" || i === "yearly" ? "year" : i;
}

export function Billing() {
  const { accountId, liveTick } = useDashboard();
  const [result, refetch] = useQuery({ query: BillingQuery, variables: { accountId } });
  useEffect(() => {
    if (liveTick > 0) refetch({ requestPolicy: "network-only" });
  }, [liveTick, refetch]);
  const [message, setMessage] = useState<Message>(null);
  const [busy, setBusy] = useState<string | null>(null);
  const [, subscribe] = useMutation(SubscribeMutation);
  const [, cancel] = useMutation(CancelSubscriptionMutation);
  const [, resume] = useMutation(ResumeSubscriptionMutation);
  const [, changePlan] = useMutation(ChangePlanMutation);
  const [, customerPortal] = useMutation(CustomerPortalMutation);
  const [, cancelCheckout] = useMutation(CancelCheckoutMutation);

  const returnParams = new URLSearchParams(window.location.search);
  const returned = returnParams.get("checkout");
  const returnedTransaction = returnParams.get("transaction");
  const returnedSubscription = returnParams.get("subscription");
  const data = result.data;
  const account = data?.node?.__typename === "CreditAccount" ? data.node : null;
  // The subscription's transaction may still be waiting for the gateway (Stripe's webhook): re-read until done.
  const waiting = account?.transactions.edges.map((e) => e.node) ?? [];
  // The payment just back from Checkout (a top-up's, or a new subscription's first period) has a notice of its
  // own above: it is not listed again, with a "Complete payment" link, among the other pending payments.
  const back = returned === "success";
  const backedOut = returned === "canceled" || returned === "cancel";
  const justPaid = back
    ? returnedTransaction
      ? waiting.find((t) => t.id === returnedTransaction)
      : returnedSubscription
        ? waiting.find((t) => t.type === "SUBSCRIPTION")
        : undefined
    : undefined;
  const sub = account?.subscription ?? null;
  // An INCOMPLETE subscription's first payment is shown (with Complete payment and Drop) in its own box below.
  const firstPayment =
    sub?.status === "INCOMPLETE" ? waiting.find((t) => t.type === "SUBSCRIPTION" && t !== justPaid) : undefined;
  const pending = waiting.filter(
    (t) => t !== justPaid && t !== firstPayment && !((back || backedOut) && t.id === returnedTransaction),
  );
  useEffect(() => {
    if (waiting.length === 0) return;
    const timer = setInterval(() => refetch({ requestPolicy: "network-only" }), 3000);
    return () => clearInterval(timer);
  }, [waiting.length, refetch]);

  if (!data) {
    return result.error ? <Notice tone="error">{describeCombinedError(result.error)}</Notice> : <Loading label="Loading billing…" />;
  }
  const hosted = !data.billingConfig.legacyGateway;
  const live = sub && sub.status !== "CANCELED";
  const defaultCard = account?.paymentMethods.find((m) => m.isDefault) ?? account?.paymentMethods[0];

  const run = async (label: string, action: () => Promise<Message | void>) => {
    forgetCheckoutReturn(); // the notice about coming back from Checkout gives way to this action's outcome
    setBusy(label);
    setMessage(null);
    try {
      const outcome = await action();
      if (outcome) setMessage(outcome);
      refetch({ requestPolicy: "network-only" });
    } finally {
      setBusy(null);
    }
  };

  const doSubscribe = (planId: string) =>
    run(`subscribe-${planId}`, async () => {
      const r = await subscribe({ input: { accountId, planId, idempotencyKey: idempotencyKey("subscribe") } });
      if (r.error) return { tone: "error", text: describeCombinedError(r.error) };
      const answer = r.data?.subscribe;
      if (!answer) return;
      if (answer.__typename === "SubscribeSuccess") {
        if (answer.checkoutUrl) {
          window.location.assign(answer.checkoutUrl);
          return { tone: "info", text: "Opening the secure checkout page…" };
        }
        return answer.transaction.status === "PENDING"
          ? { tone: "info", text: "Subscribed. The first payment is pending; this page updates when it completes." }
          : { tone: "success", text: "Subscribed. The plan's credit has been added." };
      }
      return { tone: "error", text: describeResultError(answer) };
    });

  const doCancel = () =>
    run("cancel", async () => {
      const r = await cancel({ input: { accountId, atPeriodEnd: true } });
      if (r.error) return { tone: "error", text: describeCombinedError(r.error) };
      const a = r.data?.cancelSubscription;
      if (a?.__typename === "SubscriptionSuccess")
        return { tone: "success", text: `Your subscription ends on ${formatDate(a.subscription.currentPeriodEnd)}. You can resume it until then.` };
      return a ? { tone: "error", text: describeResultError(a) } : undefined;
    });

  // Closes the unfinished checkout page (so it can no longer be paid) and drops the subscription waiting for it.
  const doDrop = () =>
    run("drop", async () => {
      const r = await cancel({ input: { accountId, atPeriodEnd: false } });
      if (r.error) return { tone: "error", text: describeCombinedError(r.error) };
      const a = r.data?.cancelSubscription;
      if (a?.__typename === "SubscriptionSuccess")
        return { tone: "success", text: "The checkout was closed and the subscription dropped: nothing was charged." };
      return a ? { tone: "error", text: describeResultError(a) } : undefined;
    });

  const doResume = () =>
    run("resume", async () => {
      const r = await resume({ input: { accountId } });
      if (r.error) return { tone: "error", text: describeCombinedError(r.error) };
      const a = r.data?.resumeSubscription;
      if (a?.__typename === "SubscriptionSuccess") return { tone: "success", text: "Your subscription continues and renews as usual." };
      return a ? { tone: "error", text: describeResultError(a) } : undefined;
    });

  const doChange = (planId: string, name: string) =>
    run(`change-${planId}`, async () => {
      const r = await changePlan({ input: { accountId, planId } });
      if (r.error) return { tone: "error", text: describeCombinedError(r.error) };
      const a = r.data?.changePlan;
      if (a?.__typename === "SubscriptionSuccess")
        return {
          tone: "success",
          text: a.subscription.nextPlanId ? `You switch to ${name} at the next renewal.` : "The plan change was undone.",
        };
      return a ? { tone: "error", text: describeResultError(a) } : undefined;
    });

  const doCancelPayment = (t: TransactionFieldsFragment) =>
    run(`cancel-payment-${t.id}`, async () => {
      return cancelOutcome(await cancelCheckout({ input: { transactionId: t.id } }));
    });

  const openCustomerPortal = () =>
    run("portal", async () => {
      const r = await customerPortal({ input: { accountId } });
      if (r.error) return { tone: "error", text: describeCombinedError(r.error) };
      const a = r.data?.createCustomerPortalSession;
      if (a?.__typename === "CreateCustomerPortalSessionSuccess") {
        window.location.assign(a.url);
        return { tone: "info", text: "Opening Stripe's customer portal…" };
      }
      return a ? { tone: "error", text: describeResultError(a) } : undefined;
    });

  return (
    <div className="stack">
      {returned === "success" && returnedTransaction ? (
        <ReturnedPayment id={returnedTransaction} />
      ) : returned === "success" && returnedSubscription && justPaid ? (
        <Notice tone="info" title="Payment pending">
          Thanks, your payment is being confirmed. It can take a few seconds; this page updates by itself.
        </Notice>
      ) : returned === "success" && returnedSubscription && sub?.id === returnedSubscription && live ? (
        <Notice tone="success" title="Payment succeeded">
          You are subscribed to {sub.plan?.name ?? sub.planId}. Its credit has been added to your balance.
        </Notice>
      ) : returned === "success" ? (
        <Notice tone="info" title="Thanks, your payment is being confirmed">
          It can take a few seconds; this page updates by itself.
        </Notice>
      ) : backedOut && returnedTransaction ? (
        <CanceledPayment id={returnedTransaction} onSettled={() => refetch({ requestPolicy: "network-only" })} />
      ) : backedOut ? (
        <Notice tone="warn">
          The checkout was canceled: nothing was charged.
          {returnedSubscription && sub?.id === returnedSubscription && sub.status === "INCOMPLETE"
            ? " Complete the payment or drop the subscription below."
            : ""}
        </Notice>
      ) : null}
      {pending.map((t) => (
        <Notice key={t.id} tone="warn" title="Payment pending">
          {humanize(t.type)} of {formatCredits(t.credits)} credits ({formatMoney(t.amount.amount, t.amount.currency)}) is waiting for
          the payment to complete.
          {t.checkoutUrl ? (
            <span className="notice-actions">
              <a className="button button-small button-primary" href={t.checkoutUrl}>
                Complete payment
              </a>
              {t.type === "TOP_UP" && hosted ? (
                <button
                  type="button"
                  className="button button-small"
                  onClick={() => doCancelPayment(t)}
                  disabled={busy !== null}
                >
                  Cancel payment
                </button>
              ) : null}
            </span>
          ) : null}
        </Notice>
      ))}
      {message ? <Notice tone={message.tone}>{message.text}</Notice> : null}

      <Section
        title="Subscription"
        actions={
          hosted ? (
            <button type="button" className="button" onClick={openCustomerPortal} disabled={busy !== null}>
              Manage billing in Stripe
            </button>
          ) : null
        }
      >
        {sub && live ? (
          <div className="subscription">
            <div className="subscription-head">
              <div>
                <div className="subscription-plan">{sub.plan?.name ?? sub.planId}</div>
                {sub.plan ? (
                  <div className="muted">
                    {formatMoney(sub.plan.price.amount, sub.plan.price.currency)} per {intervalWord(sub.plan.interval)} ·{" "}
                    {formatCredits(sub.plan.creditsPerPeriod)} credits each period
                  </div>
                ) : null}
              </div>
              <StatusBadge status={sub.status} />
            </div>
            {sub.status === "INCOMPLETE" ? (
              <>
                <p className="muted">The first period starts once its payment completes; this page updates by itself.</p>
                {firstPayment ? (
                  <div className="actions">
                    {firstPayment.checkoutUrl ? (
                      <a className="button button-primary" href={firstPayment.checkoutUrl}>
                        Complete payment
                      </a>
                    ) : null}
                    <button type="button" className="button" onClick={doDrop} disabled={busy !== null}>
                      Drop this subscription
                    </button>
                  </div>
                ) : null}
              </>
            ) : (
              <dl className="stats">
                <div>
                  <dt>Current period</dt>
                  <dd>
                    {formatDate(sub.currentPeriodStart)} – {formatDate(sub.currentPeriodEnd)}
                  </dd>
                </div>
                <div>
                  <dt>{sub.cancelAtPeriodEnd ? "Ends on" : "Renews on"}</dt>
                  <dd>{formatDate(sub.currentPeriodEnd)}</dd>
                </div>
                {sub.paymentMethod ? (
                  <div>
                    <dt>Card</dt>
                    <dd>
                      {brandName(sub.paymentMethod.brand)} •••• {sub.paymentMethod.last4}
                    </dd>
                  </div>
                ) : null}
              </dl>
            )}
            {sub.nextPlan ? <Notice tone="info">Switches to {sub.nextPlan.name} at the next renewal.</Notice> : null}
            {sub.status === "PAST_DUE" ? (
              <Notice tone="error" title="The last renewal failed">
                {sub.statusReason ?? "The card was declined."}
                {sub.nextAttemptAt ? ` We try again on ${formatDate(sub.nextAttemptAt)}.` : ""}
              </Notice>
            ) : null}
            {sub.status === "INCOMPLETE" ? null : (
              <div className="actions">
                {sub.cancelAtPeriodEnd ? (
                  <button type="button" className="button button-primary" onClick={doResume} disabled={busy !== null}>
                    Resume subscription
                  </button>
                ) : (
                  <button type="button" className="button button-danger" onClick={doCancel} disabled={busy !== null}>
                    Cancel at period end
                  </button>
                )}
              </div>
            )}
          </div>
        ) : (
          <Empty title="No subscription">
            {sub?.status === "CANCELED" ? `Your ${sub.plan?.name ?? ""} subscription was canceled. ` : ""}
            Choose a plan below to get credit every period.
          </Empty>
        )}
      </Section>

      <Section title="Plans">
        {data.plans.length === 0 ? (
          <Empty title="No plans are offered" />
        ) : (
          <ul className="plans">
            {data.plans.map((plan) => {
              const current = live && sub?.planId === plan.id;
              const next = live && sub?.nextPlanId === plan.id;
              return (
                <li key={plan.id} className={`plan ${current ? "plan-current" : ""}`}>
                  <h3 className="plan-name">{plan.name}</h3>
                  <div className="plan-price">
                    {formatMoney(plan.price.amount, plan.price.currency)}
                    <span className="muted"> / {intervalWord(plan.interval)}</span>
                  </div>
                  <p className="muted">
                    {formatCredits(plan.creditsPerPeriod)} credits each {intervalWord(plan.interval)}
                    {plan.creditsExpireAtPeriodEnd ? ", expiring at period end" : ""}
                  </p>
                  {current ? (
                    <span className="badge badge-good">Current plan</span>
                  ) : next ? (
                    <span className="badge badge-warn">From next renewal</span>
                  ) : live && sub?.status === "INCOMPLETE" ? null : !plan.subscribable ? (
                    <span className="muted plan-unavailable">Not available to subscribe here</span>
                  ) : live ? (
                    <button
                      type="button"
                      className="button"
                      onClick={() => doChange(plan.id, plan.name)}
                      disabled={busy !== null}
                    >
                      Switch to {plan.name}
                    </button>
                  ) : (
                    <button
                      type="button"
                      className="button button-primary"
                      onClick={() => doSubscribe(plan.id)}
                      disabled={busy !== null || (!hosted && !defaultCard)}
                      aria-label={`Subscribe to ${plan.name}`}
                    >
                      Subscribe
                    </button>
                  )}
                </li>
              );
            })}
          </ul>
        )}
        {!hosted && !defaultCard && !live ? (
          <p className="muted">Add a card under Payment Method to subscribe.</p>
        ) : !hosted && defaultCard && !live ? (
          <p className="muted">
            Charged to your default card, {brandName(defaultCard.brand)} •••• {defaultCard.last4}.
          </p>
        ) : hosted && !live ? (
          <p className="muted">You pay on Stripe's secure checkout page and come back here.</p>
        ) : null}
      </Section>
    </div>
  );
}

/** What a cancelCheckout answer means for the user: canceled, paid after all (paid meanwhile), being confirmed
 * (CheckoutCompleted), or why it could not be done. */
function cancelOutcome(r: OperationResult<CancelCheckoutAnswer>): Message {
  if (r.error) return { tone: "error", text: describeCombinedError(r.error) };
  const a = r.data?.cancelCheckout;
  if (!a) return null;
  if (a.__typename === "CancelCheckoutSuccess") {
    return a.transaction.status === "SUCCEEDED"
      ? { tone: "success", text: `The payment had gone through: ${formatCredits(a.transaction.credits)} credits were added.` }
      : { tone: "warn", text: "The checkout was canceled: nothing was charged." };
  }
  return { tone: a.__typename === "CheckoutCompleted" ? "info" : "error", text: describeResultError(a) };
}

/** Back from Checkout with Back: the top-up's page is closed at once (cancelCheckout), so that it cannot be paid
 * any more and the payment does not wait, pending, for Stripe to expire it a day later. */
function CanceledPayment({ id, onSettled }: { id: string; onSettled: () => void }) {
  const [, cancelCheckout] = useMutation(CancelCheckoutMutation);
  const [outcome, setOutcome] = useState<Message>(null);
  const sent = useRef<string | null>(null);
  useEffect(() => {
    if (sent.current === id) return; // once per return (React runs effects twice in development)
    sent.current = id;
    void cancelCheckout({ input: { transactionId: id } }).then((r) => {
      setOutcome(cancelOutcome(r));
      onSettled();
    });
  }, [id, cancelCheckout, onSettled]);
  if (!outcome) return <Loading label="Canceling the checkout…" />;
  return <Notice tone={outcome.tone}>{outcome.text}</Notice>;
}

/** Drops ?checkout=, ?transaction= and ?subscription= (Checkout's return) from the address, keeping the rest. */
function forgetCheckoutReturn(): void {
  const url = new URL(window.location.href);
  if (!url.searchParams.has("checkout")) return;
  for (const name of ["checkout", "transaction", "subscription"]) url.searchParams.delete(name);
  window.history.replaceState(null, "", url.pathname + url.search);
}

/** Back from a hosted checkout page: that payment, pending until the gateway's webhook completes it. */
function ReturnedPayment({ id }: { id: string }) {
  const [result, refetch] = useQuery({ query: TransactionNodeQuery, variables: { id }, requestPolicy: "network-only" });
  const t = result.data?.node?.__typename === "Transaction" ? result.data.node : null;
  const pending = !t || t.status === "PENDING";
  useEffect(() => {
    if (!pending) return;
    const timer = setInterval(() => refetch({ requestPolicy: "network-only" }), 2000);
    return () => clearInterval(timer);
  }, [pending, refetch]);
  if (!t || t.status === "PENDING") {
    return (
      <Notice tone="info" title="Payment pending">
        Thanks, your payment is being confirmed. It can take a few seconds; this page updates by itself.
      </Notice>
    );
  }
  if (t.status === "FAILED") {
    return <Notice tone="error">Payment failed{t.failureReason ? `: ${t.failureReason}` : "."}</Notice>;
  }
  return (
    <Notice tone="success" title="Payment succeeded">
      {formatCredits(t.credits)} credits were added ({formatMoney(t.amount.amount, t.amount.currency)}).
      {t.invoice ? (
        <>
          {" "}
          <a href={t.invoice.signedUrl} target="_blank" rel="noopener noreferrer">
            Invoice {t.invoice.number}
          </a>
        </>
      ) : null}
    </Notice>
  );
}
