// Who the page acts for: a portal session (from ?code=, exchanged at POST /portal/session), or a bearer token
// pasted into the sign-in form or handed over as #token=... (a user token: it also sees the user's
// organizations, which a portal session may not read). Kept in sessionStorage: gone with the tab.

export type SessionKind = "portal" | "token";

export interface Session {
  kind: SessionKind;
  token: string;
  /** The portal session's account (CreditAccount ID); null for a user token (its own account: me.credit). */
  accountId: string | null;
  sessionId?: string | null;
  expiresAt?: string | null;
  returnUrl?: string | null;
}

const KEY = "creditline.session";

export function loadSession(storage: Storage = sessionStorage): Session | null {
  try {
    const raw = storage.getItem(KEY);
    if (!raw) return null;
    const parsed = JSON.parse(raw) as Session;
    if (typeof parsed.token !== "string" || !parsed.token) return null;
    if (parsed.expiresAt && Date.parse(parsed.expiresAt) <= Date.now()) {
      storage.removeItem(KEY);
      return null;
    }
    return parsed;
  } catch {
    return null;
  }
}

export function saveSession(session: Session, storage: Storage = sessionStorage): void {
  storage.setItem(KEY, JSON.stringify(session));
}

export function clearSession(storage: Storage = sessionStorage): void {
  storage.removeItem(KEY);
}

export class SignInError extends Error {}

interface PortalAnswer {
  token: string;
  sessionId?: string;
  expiresAt?: string;
  accountId: string;
  returnUrl?: string | null;
}

/** POST /portal/session {code}: a used, expired or unknown code is a readable SignInError. */
export async function exchangeCode(code: string, fetchImpl: typeof fetch = fetch): Promise<Session> {
  let response: Response;
  try {
    response = await fetchImpl("/portal/session", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ code }),
    });
  } catch {
    throw new SignInError("The server could not be reached. Check your connection and open the link again.");
  }
  if (response.status === 401) {
    throw new SignInError(
      "This sign-in link has already been used or has expired. Ask for a new link to open your My Credit page.",
    );
  }
  if (response.status === 429) {
    throw new SignInError("Too many sign-in attempts. Wait a minute and open the link again.");
  }
  if (!response.ok) throw new SignInError(`Signing in failed (HTTP ${response.status}).`);
  const body = (await response.json()) as PortalAnswer;
  return {
    kind: "portal",
    token: body.token,
    accountId: body.accountId,
    sessionId: body.sessionId ?? null,
    expiresAt: body.expiresAt ?? null,
    returnUrl: body.returnUrl ?? null,
  };
}

/** The sign-in material in the address, and the address without it (so a reload or a shared URL never replays it). */
export function takeCredentialsFromUrl(href: string): { code: string | null; token: string | null; cleanUrl: string } {
  const url = new URL(href);
  const code = url.searchParams.get("code");
  url.searchParams.delete("code");
  let token: string | null = null;
  if (url.hash.startsWith("#")) {
    const hash = new URLSearchParams(url.hash.slice(1));
    token = hash.get("token");
    if (token) {
      hash.delete("token");
      const rest = hash.toString();
      url.hash = rest ? `#${rest}` : "";
    }
  }
  return { code, token, cleanUrl: url.pathname + url.search + url.hash };
}
