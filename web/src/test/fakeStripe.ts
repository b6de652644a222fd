import { act } from "@testing-library/react";
import { vi } from "vitest";
import type { StripeCardElement } from "../lib/stripe";

type Made = { paymentMethod?: { id: string }; error?: { message: string } };

/** A stand-in for Stripe.js's factory, installed as `window.Stripe`: a card Element that is ready at once (and
 * empties its field when destroyed), whose createPaymentMethod answers `made`; an id ending in `*` gets the
 * call's number instead, so that each call makes a new PaymentMethod. `type` sends the Element's change event,
 * as typing into it does. `calls` records the keys it was started with, what was asked of it and the mounts. */
export function fakeStripe(made: Made) {
  const calls: { key: string[]; created: unknown[]; mounted: number } = { key: [], created: [], mounted: 0 };
  const handlers: Record<string, ((event?: unknown) => void) | undefined> = {};
  let field: HTMLElement | null = null;
  const card: StripeCardElement = {
    mount: (target) => {
      calls.mounted += 1;
      field = target;
      target.textContent = "[card field]";
      queueMicrotask(() => handlers.ready?.());
    },
    on: ((event: string, handler: () => void) => {
      handlers[event] = handler;
    }) as StripeCardElement["on"],
    clear: vi.fn(),
    destroy: vi.fn(() => {
      if (field) field.textContent = "";
    }),
  };
  window.Stripe = (key: string) => {
    calls.key.push(key);
    return {
      elements: () => ({ create: () => card }),
      createPaymentMethod: async (input) => {
        calls.created.push(input);
        return made.paymentMethod?.id.endsWith("*")
          ? { paymentMethod: { id: made.paymentMethod.id.replace("*", String(calls.created.length)) } }
          : made;
      },
    };
  };
  const type = (event: { complete: boolean; empty: boolean; error?: { message: string } }) => act(() => handlers.change?.(event));
  return { calls, card, type };
}
