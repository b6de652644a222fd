import { Client, cacheExchange, fetchExchange, subscriptionExchange } from "urql";
import { createClient as createWsClient, type Client as WsClient } from "graphql-ws";

export type LiveState = "connecting" | "live" | "reconnecting" | "offline";

export interface Api {
  client: Client;
  ws: WsClient;
  /** Called with every change of the websocket's state; returns an unsubscribe. */
  onLive(listener: (state: LiveState, reconnected: boolean) => void): () => void;
  dispose(): void;
}

export function wsUrl(location: Location = window.location): string {
  return `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/graphql`;
}

/**
 * One urql client for HTTP (POST /graphql, Authorization: Bearer) and graphql-transport-ws subscriptions on the
 * same origin. The server reads the websocket's token from the connection_init payload
 * `{"authorization": "Bearer <token>"}` (creditline/graphql.py), so that is what connectionParams sends. The
 * socket retries for ever with back-off; each re-subscription starts with a fresh SNAPSHOT.
 */
export function createApi(token: string, onUnauthenticated: () => void): Api {
  const listeners = new Set<(state: LiveState, reconnected: boolean) => void>();
  let connectedOnce = false;
  let state: LiveState = "connecting";
  const emit = (next: LiveState, reconnected = false) => {
    state = next;
    for (const listener of listeners) listener(next, reconnected);
  };

  const ws = createWsClient({
    url: wsUrl(),
    connectionParams: () => ({ authorization: `Bearer ${token}` }),
    lazy: true,
    keepAlive: 15_000,
    retryAttempts: Number.POSITIVE_INFINITY,
    shouldRetry: () => true,
    retryWait: async (retries) => {
      const base = Math.min(1000 * 2 ** retries, 15_000);
      await new Promise((resolve) => setTimeout(resolve, base / 2 + Math.random() * (base / 2)));
    },
    on: {
      connecting: () => emit(connectedOnce ? "reconnecting" : "connecting"),
      connected: () => {
        const reconnected = connectedOnce;
        connectedOnce = true;
        emit("live", reconnected);
      },
      closed: () => {
        if (state !== "offline") emit(connectedOnce ? "reconnecting" : "connecting");
      },
    },
  });

  const client = new Client({
    url: "/graphql",
    requestPolicy: "cache-and-network",
    exchanges: [
      cacheExchange,
      fetchExchange,
      subscriptionExchange({
        forwardSubscription(request) {
          const input = { ...request, query: request.query || "" };
          return {
            subscribe(sink) {
              const unsubscribe = ws.subscribe(input, {
                next: (value) => sink.next(value as never),
                error: (error) => {
                  if (isUnauthenticated(error)) onUnauthenticated();
                  sink.error(error as Error);
                },
                complete: () => sink.complete(),
              });
              return { unsubscribe };
            },
          };
        },
      }),
    ],
    fetchOptions: () => ({ headers: { Authorization: `Bearer ${token}` } }),
  });

  const online = () => {
    if (state === "offline") emit(connectedOnce ? "reconnecting" : "connecting");
  };
  const offline = () => emit("offline");
  window.addEventListener("online", online);
  window.addEventListener("offline", offline);

  return {
    client,
    ws,
    onLive(listener) {
      listeners.add(listener);
      listener(state, false);
      return () => listeners.delete(listener);
    },
    dispose() {
      window.removeEventListener("online", online);
      window.removeEventListener("offline", offline);
      listeners.clear();
      void ws.dispose();
    },
  };
}

function isUnauthenticated(error: unknown): boolean {
  if (Array.isArray(error)) {
    return error.some((e) => (e as { extensions?: { code?: string } })?.extensions?.code === "UNAUTHENTICATED");
  }
  return false;
}
