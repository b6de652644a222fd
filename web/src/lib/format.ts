// Dates and words for what the API sends (ISO-8601 instants, enum names).

const DAY_MS = 86_400_000;
const HOUR_MS = 3_600_000;

const dateFmt = new Intl.DateTimeFormat("en-US", { month: "short", day: "numeric", year: "numeric" });
const dateTimeFmt = new Intl.DateTimeFormat("en-US", {
  month: "short",
  day: "numeric",
  year: "numeric",
  hour: "numeric",
  minute: "2-digit",
});
const dayFmt = new Intl.DateTimeFormat("en-US", { month: "short", day: "numeric", timeZone: "UTC" });

export function formatDate(iso: string | null | undefined): string {
  return iso ? dateFmt.format(new Date(iso)) : "—";
}

export function formatDateTime(iso: string | null | undefined): string {
  return iso ? dateTimeFmt.format(new Date(iso)) : "—";
}

/** A UTC day bucket's label ("Dec 2"). */
export function formatDay(iso: string): string {
  return dayFmt.format(new Date(iso));
}

/**
 * How far off an instant is, as a person says it: to the nearest day from a day on ("in 3 days" for 2 days
 * 23 hours), to the nearest hour below a day ("in 5 hours"), "in less than an hour" below an hour.
 */
export function relativeFromNow(iso: string, now: number = Date.now()): string {
  const ms = Date.parse(iso) - now;
  if (ms <= 0) return "now";
  if (ms < HOUR_MS) return "in less than an hour";
  if (ms < DAY_MS) {
    const hours = Math.round(ms / HOUR_MS);
    return `in ${hours} ${hours === 1 ? "hour" : "hours"}`;
  }
  const days = Math.round(ms / DAY_MS);
  return `in ${days} ${days === 1 ? "day" : "days"}`;
}

/** Hours of usage a run-out forecast needs before the page shows it: less than a day is too little to go on. */
export const FORECAST_MIN_HOURS = 24;

/** Whether a forecast's basis (`basis.hours`: whole hours of usage the rate is taken over) is enough to show it. */
export function forecastHasEnoughHistory(basis: { hours: number }): boolean {
  return basis.hours >= FORECAST_MIN_HOURS;
}

/** The forecast's sentence: "lasts about 12 days at the current rate". */
export function forecastSentence(runsOutAt: string | null | undefined, now: number = Date.now()): string {
  if (!runsOutAt) return "At the current rate your credit lasts for years.";
  const ms = Date.parse(runsOutAt) - now;
  if (ms <= 0) return "At the current rate your credit has run out.";
  if (ms < DAY_MS) {
    const hours = Math.max(1, Math.floor(ms / HOUR_MS));
    return `Lasts about ${hours} ${hours === 1 ? "hour" : "hours"} at the current rate.`;
  }
  const days = Math.floor(ms / DAY_MS);
  if (days > 730) return "At the current rate your credit lasts for years.";
  return `Lasts about ${days} ${days === 1 ? "day" : "days"} at the current rate.`;
}

const WORDS: Record<string, string> = {
  TOP_UP: "Top-up",
  AUTO_TOP_UP: "Auto top-up",
  SUBSCRIPTION: "Subscription",
  PENDING: "Pending",
  SUCCEEDED: "Succeeded",
  FAILED: "Failed",
  ACTIVE: "Active",
  PAST_DUE: "Past due",
  CANCELED: "Canceled",
  INCOMPLETE: "Incomplete",
  RETRY_SCHEDULED: "Retry scheduled",
  CAP_REACHED: "Monthly cap reached",
  OFF: "Off",
  SIGNUP_BONUS: "Signup bonus",
  PROMOTION: "Promotion",
  ADJUSTMENT: "Adjustment",
  FREE: "Free",
  PAID: "Paid",
  OWNER: "Owner",
  BILLING: "Billing",
  MEMBER: "Member",
  OVERVIEW: "Overview",
  TRANSACTION: "Transaction",
  PAYMENT_METHOD: "Payment Method",
};

export function humanize(value: string): string {
  return WORDS[value] ?? value.charAt(0) + value.slice(1).toLowerCase().replace(/_/g, " ");
}

export function brandName(brand: string): string {
  const known: Record<string, string> = { visa: "Visa", mastercard: "Mastercard", amex: "American Express", discover: "Discover" };
  return known[brand.toLowerCase()] ?? brand.charAt(0).toUpperCase() + brand.slice(1);
}

export function activityName(key: string | null): string {
  if (!key) return "Other";
  return key.replace(/_/g, " ").replace(/^\w/, (c) => c.toUpperCase());
}

/** The last 30 UTC days, as whole hours (usage reports take whole hours): from 29 days before today to tomorrow. */
export function last30Days(now: Date = new Date()): { from: string; to: string } {
  const today = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate());
  return { from: new Date(today - 29 * DAY_MS).toISOString(), to: new Date(today + DAY_MS).toISOString() };
}
