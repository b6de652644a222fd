// Credits arrive as exact decimal strings ("12.5", "0.002", "-3"): up to 6 decimals. Everything here works on
// BigInt micro-credits, never on floating point, so what the page shows is exactly what the ledger holds.

export const MICRO = 1_000_000n;
const CREDITS_RE = /^(-)?(\d+)(?:\.(\d{1,6}))?$/;

/** "12.5" -> 12500000n. Throws on anything the API would not send. */
export function toMicro(value: string | number | bigint): bigint {
  if (typeof value === "bigint") return value * MICRO;
  const text = String(value).trim();
  const match = CREDITS_RE.exec(text);
  if (!match) throw new Error(`Not an amount of credits: ${JSON.stringify(text)}`);
  const [, sign, whole, frac = ""] = match;
  const micro = BigInt(whole) * MICRO + BigInt(frac.padEnd(6, "0"));
  return sign ? -micro : micro;
}

/** True when `text` is a non-negative amount the API accepts (at most 6 decimals). */
export function isCredits(text: string): boolean {
  return CREDITS_RE.test(text.trim()) && !text.trim().startsWith("-");
}

/** 12500000n -> "12.5" (the API's own form: no trailing zeros). */
export function fromMicro(micro: bigint): string {
  const negative = micro < 0n;
  const abs = negative ? -micro : micro;
  const whole = abs / MICRO;
  const frac = (abs % MICRO).toString().padStart(6, "0").replace(/0+$/, "");
  return `${negative ? "-" : ""}${whole}${frac ? `.${frac}` : ""}`;
}

function groupThousands(digits: string): string {
  return digits.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

export interface FormatOptions {
  /** Most decimals shown; the rest is cut toward zero (never rounded up past what there is). Default 6. */
  maxDecimals?: number;
  /** Always show at least this many decimals. Default 0. */
  minDecimals?: number;
  /** Prefix "+" on positive amounts (ledger deltas). */
  signed?: boolean;
}

/** "1234567.5" -> "1,234,567.5"; exact, from the string. */
export function formatCredits(value: string | bigint, options: FormatOptions = {}): string {
  const { maxDecimals = 6, minDecimals = 0, signed = false } = options;
  const micro = typeof value === "bigint" ? value : toMicro(value);
  const negative = micro < 0n;
  const abs = negative ? -micro : micro;
  const whole = groupThousands((abs / MICRO).toString());
  let frac = (abs % MICRO).toString().padStart(6, "0").slice(0, Math.max(0, Math.min(6, maxDecimals)));
  frac = frac.replace(/0+$/, "");
  if (frac.length < minDecimals) frac = frac.padEnd(minDecimals, "0");
  const sign = negative ? "−" : signed && micro > 0n ? "+" : "";
  return `${sign}${whole}${frac ? `.${frac}` : ""}`;
}

/** A short form for tight places: two decimals at most, but never "0" for a non-zero amount. */
export function formatCreditsShort(value: string | bigint): string {
  const micro = typeof value === "bigint" ? value : toMicro(value);
  const abs = micro < 0n ? -micro : micro;
  if (abs !== 0n && abs < 10_000n) return formatCredits(micro); // below 0.01: show it whole
  return formatCredits(micro, { maxDecimals: 2 });
}

export function addCredits(...values: string[]): string {
  return fromMicro(values.reduce((sum, v) => sum + toMicro(v), 0n));
}

export function subCredits(a: string, b: string): string {
  return fromMicro(toMicro(a) - toMicro(b));
}

export function compareCredits(a: string, b: string): number {
  const d = toMicro(a) - toMicro(b);
  return d < 0n ? -1 : d > 0n ? 1 : 0;
}

/** Share of `part` in `whole` as a whole percent 0..100 (floored), for bars. */
export function percentOf(part: string, whole: string): number {
  const w = toMicro(whole);
  if (w <= 0n) return 0;
  const p = toMicro(part);
  if (p <= 0n) return 0;
  const pct = (p * 100n) / w;
  return pct > 100n ? 100 : Number(pct);
}

/** A chart needs a number: micro-credits to a JS number of credits (display only, never summed back). */
export function creditsToNumber(value: string): number {
  const micro = toMicro(value);
  return Number(micro / MICRO) + Number(micro % MICRO) / 1e6;
}

const CURRENCY_DIGITS: Record<string, number> = { JPY: 0, KRW: 0, VND: 0, CLP: 0, BHD: 3, KWD: 3, JOD: 3 };
const CURRENCY_SYMBOL: Record<string, string> = { USD: "$", EUR: "€", GBP: "£", JPY: "¥", CAD: "CA$", AUD: "A$" };

export function currencyDigits(currency: string): number {
  return CURRENCY_DIGITS[currency.toUpperCase()] ?? 2;
}

/** Integer minor units + ISO code -> "$1,234.50" (exact; BigInt). */
export function formatMoney(amount: number | bigint | string, currency: string): string {
  const minor = BigInt(amount);
  const digits = currencyDigits(currency);
  const negative = minor < 0n;
  const abs = negative ? -minor : minor;
  const scale = 10n ** BigInt(digits);
  const whole = groupThousands((abs / scale).toString());
  const frac = digits ? `.${(abs % scale).toString().padStart(digits, "0")}` : "";
  const code = currency.toUpperCase();
  const symbol = CURRENCY_SYMBOL[code];
  const body = symbol ? `${symbol}${whole}${frac}` : `${whole}${frac} ${code}`;
  return negative ? `−${body}` : body;
}

/**
 * The price of `credits` when `pricePer100` minor units buy 100 credits, in minor units, rounded up: the
 * server's own rule (models/money.py Price.of), so the form shows what the card is charged.
 */
export function priceOfCredits(credits: string, pricePer100: number): bigint {
  const micro = toMicro(credits);
  const numerator = micro * BigInt(pricePer100);
  const denominator = 100n * MICRO;
  if (numerator <= 0n) return numerator / denominator;
  return (numerator + denominator - 1n) / denominator;
}
