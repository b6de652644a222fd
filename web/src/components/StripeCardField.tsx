import { useEffect, useId, useRef, useState, type ReactNode, type RefObject } from "react";
import { loadStripeJs, type StripeCardElement, type StripeClient } from "../lib/stripe";
import { Notice } from "./ui";

// Stripe.js's card Element, shared by the Payment Method tab (Add a card) and the Top up dialog (New card).
// Stripe.js is loaded only while a form that needs the field shows it: the hook is given a publishable key then,
// and null otherwise (no Stripe.js at all, which is what sandbox and the hosted stripe gateway always get).

export type StripeCard = {
  enabled: boolean;
  status: "loading" | "ready" | "failed";
  failure: string;
  cardError: string | null;
  labelId: string;
  mountRef: RefObject<HTMLDivElement>;
  createPaymentMethod: () => Promise<{ id: string } | { error: string }>;
  clear: () => void;
};

const FAILED = "Stripe's card field could not be loaded. Check your connection and open this tab again.";

/**
 * Stripe.js's card Element, mounted while the form shows (`publishableKey` null: no Stripe.js at all).
 * `onEdit` runs whenever the person types into the card, `failure` is what is said if Stripe.js cannot load.
 */
export function useStripeCard(publishableKey: string | null, onEdit: () => void, failure: string = FAILED): StripeCard {
  const edited = useRef(onEdit);
  edited.current = onEdit; // a message about the card typed before goes once the person types again
  const failureText = useRef(failure);
  failureText.current = failure;
  const mountRef = useRef<HTMLDivElement>(null);
  const labelId = useId();
  const [status, setStatus] = useState<StripeCard["status"]>("loading");
  const [failed, setFailed] = useState("");
  const [cardError, setCardError] = useState<string | null>(null);
  const handles = useRef<{ client: StripeClient; card: StripeCardElement } | null>(null);
  useEffect(() => {
    if (!publishableKey) return;
    let alive = true;
    let card: StripeCardElement | null = null;
    setStatus("loading");
    loadStripeJs().then(
      (Stripe) => {
        if (!alive || !mountRef.current) return;
        const client = Stripe(publishableKey);
        card = client.elements().create("card", { hidePostalCode: true, style: { base: { fontSize: "16px", color: "#0f172a" } } });
        card.on("ready", () => alive && setStatus("ready"));
        card.on("change", (e) => {
          if (!alive) return;
          setCardError(e.error?.message ?? null);
          edited.current();
        });
        card.mount(mountRef.current);
        handles.current = { client, card };
      },
      () => {
        if (!alive) return;
        setStatus("failed");
        setFailed(failureText.current);
      },
    );
    return () => {
      alive = false;
      card?.destroy();
      handles.current = null;
      // shown again later (a form that hides the field and brings it back): a new Element, nothing of the old
      setStatus("loading");
      setCardError(null);
    };
  }, [publishableKey]);
  const createPaymentMethod = async (): Promise<{ id: string } | { error: string }> => {
    const h = handles.current;
    if (!h) return { error: "Stripe's card field is not ready yet." };
    const made = await h.client.createPaymentMethod({ type: "card", card: h.card });
    if (made.paymentMethod) return { id: made.paymentMethod.id };
    return { error: made.error?.message ?? "Stripe did not accept the card." };
  };
  return {
    enabled: publishableKey !== null,
    status,
    failure: failed,
    cardError,
    labelId,
    mountRef,
    createPaymentMethod,
    clear: () => handles.current?.card.clear(),
  };
}

/**
 * The "Card" field around Stripe's Element: its loading and failure, the Element's own error as the person
 * types, `error` (Stripe's refusal of the card on submit, announced) in its place when given, and `hint`.
 */
export function StripeCardField({ stripe, hint, error }: { stripe: StripeCard; hint: ReactNode; error?: string | null }) {
  return (
    <div className="field">
      <span className="field-label" id={stripe.labelId}>
        Card
      </span>
      <div ref={stripe.mountRef} className="stripe-card" role="group" aria-labelledby={stripe.labelId} aria-busy={stripe.status === "loading"} />
      {stripe.status === "loading" ? <span className="field-hint">Loading Stripe's secure card field…</span> : null}
      {stripe.status === "failed" ? <Notice tone="error">{stripe.failure}</Notice> : null}
      {error ? (
        <span className="field-error" role="alert">
          {error}
        </span>
      ) : stripe.cardError ? (
        <span className="field-error">{stripe.cardError}</span>
      ) : null}
      <span className="field-hint">{hint}</span>
    </div>
  );
}
