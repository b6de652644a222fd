import type { CombinedError } from "urql";

// GraphQL answers come in two shapes: a result union whose error member implements `Error` (typed: we read its
// __typename and fields), and top-level `errors` with `extensions.code` (authentication, limits, bad input).

const CODE_MESSAGES: Record<string, string> = {
  UNAUTHENTICATED: "Your session has ended. Open a new sign-in link to continue.",
  FORBIDDEN: "You do not have access to this.",
  QUERY_TOO_COMPLEX: "This request is too large for the server. Try fewer rows.",
  RATE_LIMITED: "Too many requests right now. Wait a moment and try again.",
  SERVICE_UNAVAILABLE: "The service is busy. Try again in a moment.",
  BAD_USER_INPUT: "Some of the input was not accepted.",
};

export function errorCode(error: CombinedError | undefined): string | null {
  const code = error?.graphQLErrors.find((e) => e.extensions?.code)?.extensions?.code;
  return typeof code === "string" ? code : null;
}

/** One readable sentence for a failed request. */
export function describeCombinedError(error: CombinedError): string {
  if (error.networkError) {
    return "The server could not be reached. Check your connection; the page retries by itself.";
  }
  const code = errorCode(error);
  if (code && CODE_MESSAGES[code]) return CODE_MESSAGES[code];
  const first = error.graphQLErrors[0];
  return first?.message ? first.message : "Something went wrong. Try again.";
}

interface TypedError {
  __typename: string;
  message?: string;
  reason?: string;
  field?: string | null;
}

const TYPE_LEADS: Record<string, string> = {
  PaymentDeclined: "Payment declined",
  PaymentUnavailable: "Payments are unavailable",
  PaymentMethodInUse: "This card is in use",
  ValidationError: "Please check the form",
  Forbidden: "Not allowed",
  NotFound: "Not found",
  IdempotencyConflict: "Already sent",
  AlreadySubscribed: "Already subscribed",
  SubscriptionNotChangeable: "This subscription cannot be changed now",
  CheckoutCompleted: "Already paid",
  InsufficientCredits: "Not enough credit",
  BudgetExceeded: "Over budget",
};

/** A result union's error member as one readable line ("Payment declined: Your card was declined."). */
export function describeResultError(result: TypedError): string {
  const lead = TYPE_LEADS[result.__typename] ?? "Not done";
  if (result.__typename === "PaymentMethodInUse") {
    return `${lead}: auto top-up charges it. Choose another card for auto top-up or switch auto top-up off first, then remove it.`;
  }
  const detail = result.reason ?? result.message ?? "";
  return detail ? `${lead}: ${detail}` : lead;
}

/** True when a union answer is not its success member. */
export function isResultError(result: { __typename?: string } | null | undefined, success: string): boolean {
  return !!result && result.__typename !== success;
}
