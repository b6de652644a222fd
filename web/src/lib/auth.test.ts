import { describe, expect, it, vi } from "vitest";
import { SignInError, exchangeCode, loadSession, saveSession, takeCredentialsFromUrl } from "./auth";

describe("sign-in from the address", () => {
  it("takes the portal code out of the URL and keeps the rest", () => {
    const got = takeCredentialsFromUrl("http://h/my-credit/billing?code=abc&checkout=success#x=1");
    expect(got.code).toBe("abc");
    expect(got.token).toBeNull();
    expect(got.cleanUrl).toBe("/my-credit/billing?checkout=success#x=1");
  });

  it("takes a token from the fragment", () => {
    const got = takeCredentialsFromUrl("http://h/my-credit/#token=clu_123");
    expect(got.token).toBe("clu_123");
    expect(got.cleanUrl).toBe("/my-credit/");
  });
});

describe("exchangeCode", () => {
  it("answers a portal session", async () => {
    const fetchImpl = vi.fn(async () =>
      new Response(JSON.stringify({ token: "clp_x", sessionId: "s", expiresAt: "2999-01-01T00:00:00Z", accountId: "A" }), {
        status: 200,
      }),
    );
    const session = await exchangeCode("c0de", fetchImpl as unknown as typeof fetch);
    expect(session).toMatchObject({ kind: "portal", token: "clp_x", accountId: "A" });
    expect(fetchImpl).toHaveBeenCalledWith("/portal/session", expect.objectContaining({ method: "POST", body: '{"code":"c0de"}' }));
  });

  it("explains a used or expired link", async () => {
    const fetchImpl = async () => new Response('{"error":{"code":"INVALID_CODE"}}', { status: 401 });
    await expect(exchangeCode("old", fetchImpl as unknown as typeof fetch)).rejects.toThrow(SignInError);
    await expect(exchangeCode("old", fetchImpl as unknown as typeof fetch)).rejects.toThrow(/already been used or has expired/);
  });
});

describe("storage", () => {
  it("forgets an expired session", () => {
    saveSession({ kind: "portal", token: "t", accountId: "A", expiresAt: "2000-01-01T00:00:00Z" });
    expect(loadSession()).toBeNull();
    saveSession({ kind: "token", token: "t", accountId: null });
    expect(loadSession()?.token).toBe("t");
  });
});
