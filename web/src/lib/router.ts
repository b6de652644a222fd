import { useCallback, useEffect, useState } from "react";

// Client-side routes under /my-credit/: /my-credit/<tab> and ?account=&org= for the account shown.
export const BASE = "/my-credit/";

export const TAB_PATHS: Record<string, string> = {
  OVERVIEW: "overview",
  TRANSACTION: "transaction",
  BILLING: "billing",
  PAYMENT_METHOD: "payment-method",
};

export interface Route {
  tab: string | null;
  params: URLSearchParams;
}

export function parseRoute(location: Location = window.location): Route {
  const path = location.pathname.startsWith(BASE) ? location.pathname.slice(BASE.length) : "";
  const segment = path.split("/")[0];
  const tab = Object.entries(TAB_PATHS).find(([, p]) => p === segment)?.[0] ?? null;
  return { tab, params: new URLSearchParams(location.search) };
}

export function useRoute(): [Route, (tab: string | null, params?: Record<string, string | null>, replace?: boolean) => void] {
  const [route, setRoute] = useState<Route>(() => parseRoute());
  useEffect(() => {
    const onPop = () => setRoute(parseRoute());
    window.addEventListener("popstate", onPop);
    return () => window.removeEventListener("popstate", onPop);
  }, []);
  const navigate = useCallback((tab: string | null, params?: Record<string, string | null>, replace = false) => {
    const current = parseRoute();
    const search = new URLSearchParams(current.params);
    for (const [k, v] of Object.entries(params ?? {})) {
      if (v === null) search.delete(k);
      else search.set(k, v);
    }
    const path = BASE + (tab ? TAB_PATHS[tab] ?? "" : "");
    const qs = search.toString();
    const url = path + (qs ? `?${qs}` : "");
    if (replace) window.history.replaceState(null, "", url);
    else window.history.pushState(null, "", url);
    setRoute(parseRoute());
  }, []);
  return [route, navigate];
}
