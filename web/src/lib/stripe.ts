// Stripe.js, for entering cards on the `legacy` gateway only. It is never bundled: Stripe requires it to be
// loaded from https://js.stripe.com/v3 (the page's CSP lets that origin in on `legacy` only), and only the
// Payment Method tab of a `legacy` deployment with a publishable key asks for it.

export const STRIPE_JS_URL = "https://js.stripe.com/v3";

/** The few calls of Stripe.js the page makes (https://docs.stripe.com/js). */
export interface StripeCardElement {
  mount(target: HTMLElement): void;
  on(event: "change", handler: (event: { complete: boolean; empty: boolean; error?: { message: string } }) => void): void;
  on(event: "ready", handler: () => void): void;
  clear(): void;
  destroy(): void;
}
export interface StripeElements {
  create(type: "card", options?: { hidePostalCode?: boolean; style?: Record<string, unknown> }): StripeCardElement;
}
export interface StripeClient {
  elements(): StripeElements;
  createPaymentMethod(input: { type: "card"; card: StripeCardElement }): Promise<{
    paymentMethod?: { id: string };
    error?: { message?: string };
  }>;
}
type StripeFactory = (publishableKey: string) => StripeClient;

declare global {
  interface Window {
    Stripe?: StripeFactory;
  }
}

let loading: Promise<StripeFactory> | null = null;

/** Adds Stripe.js's script tag once per page and resolves with its `Stripe` factory. */
export function loadStripeJs(): Promise<StripeFactory> {
  if (window.Stripe) return Promise.resolve(window.Stripe);
  if (loading) return loading;
  loading = new Promise<StripeFactory>((resolve, reject) => {
    const script = document.createElement("script");
    script.src = STRIPE_JS_URL;
    script.async = true;
    script.addEventListener("load", () => (window.Stripe ? resolve(window.Stripe) : reject(new Error("Stripe.js did not start"))));
    script.addEventListener("error", () => reject(new Error("Stripe.js could not be loaded")));
    document.head.appendChild(script);
  }).catch((error: unknown) => {
    loading = null; // a later visit of the tab tries again
    document.querySelectorAll(`script[src="${STRIPE_JS_URL}"]`).forEach((s) => s.remove());
    throw error;
  });
  return loading;
}

/** For tests: forget the script (and the factory) between cases. */
export function resetStripeJsForTests(): void {
  loading = null;
  delete window.Stripe;
  document.querySelectorAll(`script[src="${STRIPE_JS_URL}"]`).forEach((s) => s.remove());
}
