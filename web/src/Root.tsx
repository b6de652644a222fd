import { useEffect, useMemo, useState, type FormEvent } from "react";
import { Provider } from "urql";
import { SignInError, clearSession, exchangeCode, loadSession, saveSession, takeCredentialsFromUrl, type Session } from "./lib/auth";
import { createApi } from "./lib/client";
import { Shell } from "./Shell";
import { Loading, Notice } from "./components/ui";

type Boot = { state: "loading" } | { state: "signed-out"; error?: string } | { state: "signed-in"; session: Session };

/** Signs in from ?code= (a portal link), #token= or the stored session, then shows the dashboard. */
export function Root() {
  const [boot, setBoot] = useState<Boot>({ state: "loading" });

  useEffect(() => {
    let cancelled = false;
    const { code, token, cleanUrl } = takeCredentialsFromUrl(window.location.href);
    if (code || token) window.history.replaceState(null, "", cleanUrl);
    (async () => {
      if (code) {
        try {
          const session = await exchangeCode(code);
          saveSession(session);
          if (!cancelled) setBoot({ state: "signed-in", session });
        } catch (error) {
          const stored = loadSession();
          if (cancelled) return;
          // A reload of a used link with a session already open keeps that session.
          if (stored) setBoot({ state: "signed-in", session: stored });
          else setBoot({ state: "signed-out", error: error instanceof SignInError ? error.message : "Signing in failed." });
        }
        return;
      }
      if (token) {
        const session: Session = { kind: "token", token, accountId: null };
        saveSession(session);
        setBoot({ state: "signed-in", session });
        return;
      }
      const stored = loadSession();
      setBoot(stored ? { state: "signed-in", session: stored } : { state: "signed-out" });
    })();
    return () => {
      cancelled = true;
    };
  }, []);

  if (boot.state === "loading") {
    return (
      <main className="centered">
        <Loading label="Signing you in…" />
      </main>
    );
  }
  if (boot.state === "signed-out") {
    return (
      <SignIn
        error={boot.error}
        onToken={(token) => {
          const session: Session = { kind: "token", token, accountId: null };
          saveSession(session);
          setBoot({ state: "signed-in", session });
        }}
      />
    );
  }
  return (
    <SignedIn
      key={boot.session.token}
      session={boot.session}
      onSignOut={(error) => {
        clearSession();
        setBoot({ state: "signed-out", error });
      }}
    />
  );
}

function SignedIn({ session, onSignOut }: { session: Session; onSignOut: (error?: string) => void }) {
  const api = useMemo(
    () => createApi(session.token, () => onSignOut("Your session has ended. Open a new sign-in link to continue.")),
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [session.token],
  );
  useEffect(() => () => api.dispose(), [api]);
  return (
    <Provider value={api.client}>
      <Shell session={session} api={api} onSignOut={onSignOut} />
    </Provider>
  );
}

function SignIn({ error, onToken }: { error?: string; onToken: (token: string) => void }) {
  const [token, setToken] = useState("");
  const submit = (event: FormEvent) => {
    event.preventDefault();
    const value = token.trim();
    if (value) onToken(value);
  };
  return (
    <main className="centered">
      <div className="signin card">
        <div className="brand brand-large">
          <span className="brand-mark" aria-hidden="true" />
          My Credit
        </div>
        <h1>Sign in</h1>
        <p className="muted">
          Open the sign-in link your platform gave you, or sign in with an API token.
        </p>
        {error ? <Notice tone="error">{error}</Notice> : null}
        <form onSubmit={submit} className="form">
          <label className="field">
            <span className="field-label">API token</span>
            <input
              type="password"
              autoComplete="off"
              spellCheck={false}
              value={token}
              onChange={(e) => setToken(e.target.value)}
              placeholder="clu_…"
              required
            />
          </label>
          <button type="submit" className="button button-primary">
            Sign in with a token
          </button>
        </form>
      </div>
    </main>
  );
}
