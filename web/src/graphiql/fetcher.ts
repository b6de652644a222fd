import { createGraphiQLFetcher, type Fetcher, type FetcherParams, type FetcherReturnType } from "@graphiql/toolkit";
import { createClient, type Client } from "graphql-ws";
import { getOperationAST, parse } from "graphql";

function wsUrl(path: string): string {
  return `${window.location.protocol === "https:" ? "wss:" : "ws:"}//${window.location.host}${path}`;
}

function authorizationOf(headers: Record<string, unknown> | undefined): string {
  for (const [name, value] of Object.entries(headers ?? {})) {
    if (name.toLowerCase() === "authorization" && typeof value === "string") return value;
  }
  return "";
}

/**
 * HTTP for queries and mutations; graphql-transport-ws for subscriptions, whose connection_init payload carries
 * the Authorization header from GraphiQL's headers editor ({"authorization": "Bearer ..."}, what the server
 * reads). One socket per distinct header value.
 */
export function createFetcher(path: string): Fetcher {
  const http = createGraphiQLFetcher({ url: path });
  const sockets = new Map<string, Client>();
  const socketFor = (authorization: string) => {
    let client = sockets.get(authorization);
    if (!client) {
      client = createClient({
        url: wsUrl(path),
        connectionParams: authorization && authorization.trim() !== "Bearer" ? { authorization } : {},
        lazy: true,
      });
      sockets.set(authorization, client);
    }
    return client;
  };
  return (params, opts) => {
    let isSubscription = false;
    try {
      const op = getOperationAST(parse(params.query), params.operationName ?? undefined);
      isSubscription = op?.operation === "subscription";
    } catch {
      // let the server answer the syntax error
    }
    const headers = (opts?.headers ?? {}) as Record<string, unknown>;
    if (isSubscription) return overSocket(socketFor(authorizationOf(headers)), params) as unknown as FetcherReturnType;
    // An empty "Bearer " placeholder is not sent: the schema and public fields load without a token.
    const cleaned = Object.fromEntries(
      Object.entries(headers).filter(([name, value]) => !(name.toLowerCase() === "authorization" && String(value).trim() === "Bearer")),
    );
    return http(params, { ...opts, headers: cleaned });
  };
}

/** An observable of one operation over graphql-ws (GraphiQL unsubscribes when the user stops it). */
function overSocket(client: Client, params: FetcherParams) {
  return {
    subscribe(observer: { next: (value: unknown) => void; error: (error: unknown) => void; complete: () => void }) {
      const dispose = client.subscribe(
        { query: params.query, operationName: params.operationName ?? undefined, variables: params.variables },
        {
          next: (value) => observer.next(value),
          error: (error) => observer.error(error instanceof Error ? error : { errors: error }),
          complete: () => observer.complete(),
        },
      );
      return { unsubscribe: dispose };
    },
  };
}
