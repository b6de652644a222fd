import { createContext, useContext } from "react";
import type { Session } from "./auth";

export interface BillingConfig {
  gateway: string;
  legacyGateway: boolean;
  dashboardTabs: string[];
  creditPrice: { amount: number; currency: string };
  topUpMin: string;
  topUpMax: string;
  /** Stripe.js's key for entering cards (legacy only; null without one, and on every other gateway). */
  stripePublishableKey: string | null;
}

export interface Dashboard {
  session: Session;
  /** The CreditAccount shown (the user's own, a portal session's, or an organization's pool). */
  accountId: string;
  billingConfig: BillingConfig;
  /** Goes up whenever the live balance changes: panels that show payments re-read then. */
  liveTick: number;
  openTopUp: () => void;
  goTo: (tab: string) => void;
}

export const DashboardContext = createContext<Dashboard | null>(null);

export function useDashboard(): Dashboard {
  const value = useContext(DashboardContext);
  if (!value) throw new Error("useDashboard outside the dashboard");
  return value;
}

export function idempotencyKey(prefix: string): string {
  const random = typeof crypto !== "undefined" && "randomUUID" in crypto ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`;
  return `mycredit-${prefix}-${random}`;
}
