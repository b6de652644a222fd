import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { useMutation, useQuery, useSubscription } from "urql";
import type { Session } from "./lib/auth";
import type { Api, LiveState } from "./lib/client";
import { DashboardContext, type BillingConfig, type Dashboard } from "./lib/context";
import { BalanceSubscription, OverviewMeQuery, OverviewNodeQuery, SignOutMutation } from "./lib/documents";
import { describeCombinedError, errorCode } from "./lib/errors";
import { humanize, last30Days } from "./lib/format";
import { TAB_PATHS, useRoute } from "./lib/router";
import type { AccountOverviewFieldsFragment, BalanceChangedSubscription, OverviewMeQuery as OverviewMeData } from "./gql/graphql";
import { LiveIndicator } from "./components/LiveIndicator";
import { Loading, Notice, Tabs } from "./components/ui";
import { Overview } from "./pages/Overview";
import { Transactions } from "./pages/Transactions";
import { Billing } from "./pages/Billing";
import { PaymentMethods } from "./pages/PaymentMethods";
import { TopUpDialog } from "./pages/TopUp";
import { OrganizationPanel } from "./pages/Organization";

export type Balance = NonNullable<BalanceChangedSubscription["balanceChanged"]>["balance"];
export type AccountData = AccountOverviewFieldsFragment;
export type Memberships = OverviewMeData["me"]["organizations"];

export function Shell({ session, api, onSignOut }: { session: Session; api: Api; onSignOut: (error?: string) => void }) {
  const [route, navigate] = useRoute();
  const range = useMemo(() => last30Days(), []);
  const isUser = session.kind === "token";
  const orgId = isUser ? route.params.get("org") : null;
  const poolId = isUser ? route.params.get("account") : null;
  const nodeAccount = session.kind === "portal" ? session.accountId : poolId;

  const [meResult, refetchMe] = useQuery({
    query: OverviewMeQuery,
    variables: { from: range.from, to: range.to },
    pause: !!nodeAccount,
  });
  const [nodeResult, refetchNode] = useQuery({
    query: OverviewNodeQuery,
    variables: { accountId: nodeAccount ?? "", withMe: isUser, from: range.from, to: range.to },
    pause: !nodeAccount,
  });
  const overview = nodeAccount ? nodeResult : meResult;
  const refetchOverview = nodeAccount ? refetchNode : refetchMe;
  const data = nodeAccount ? nodeResult.data : meResult.data;
  const me = data?.me ?? null;
  const account: AccountData | null = nodeAccount
    ? nodeResult.data?.node?.__typename === "CreditAccount"
      ? nodeResult.data.node
      : null
    : (meResult.data?.me.credit ?? null);
  const accountId = account?.id ?? null;
  const config = data?.billingConfig as BillingConfig | undefined;

  // Live balance: the subscription's first event is a SNAPSHOT; graphql-ws re-subscribes after a reconnect,
  // which sends a fresh SNAPSHOT, and the overview is read again then (lots, usage, forecast may have moved).
  const [live, setLive] = useState<LiveState>("connecting");
  const [liveTick, setLiveTick] = useState(0);
  const refetchTimer = useRef<ReturnType<typeof setTimeout> | null>(null);
  const refreshSoon = useCallback(() => {
    if (refetchTimer.current) clearTimeout(refetchTimer.current);
    refetchTimer.current = setTimeout(() => {
      refetchOverview({ requestPolicy: "network-only" });
      setLiveTick((t) => t + 1);
    }, 1500);
  }, [refetchOverview]);
  useEffect(() => () => void (refetchTimer.current && clearTimeout(refetchTimer.current)), []);
  useEffect(
    () =>
      api.onLive((state, reconnected) => {
        setLive(state);
        if (reconnected) refreshSoon();
      }),
    [api, refreshSoon],
  );

  const [liveBalance, setLiveBalance] = useState<{ accountId: string; version: number; balance: Balance } | null>(null);
  const [balanceSub] = useSubscription(
    { query: BalanceSubscription, variables: { accountId }, pause: !accountId },
    (_prev: BalanceChangedSubscription | undefined, next: BalanceChangedSubscription) => next,
  );
  useEffect(() => {
    const event = balanceSub.data?.balanceChanged;
    if (!event || !accountId) return;
    setLiveBalance((prev) =>
      prev && prev.accountId === accountId && prev.version > event.version && event.reason !== "SNAPSHOT"
        ? prev
        : { accountId, version: event.version, balance: event.balance },
    );
    if (event.reason !== "SNAPSHOT") refreshSoon();
  }, [balanceSub.data, accountId, refreshSoon]);

  const [topUpOpen, setTopUpOpen] = useState(false);
  const [, signOut] = useMutation(SignOutMutation);

  const tabs = (config?.dashboardTabs ?? []).filter((t) => TAB_PATHS[t]);
  const selectedTab = route.tab && tabs.includes(route.tab) ? route.tab : tabs[0];

  const dashboard: Dashboard | null = useMemo(
    () =>
      accountId && config
        ? {
            session,
            accountId,
            billingConfig: config,
            liveTick,
            openTopUp: () => setTopUpOpen(true),
            goTo: (tab: string) => navigate(tab),
          }
        : null,
    [accountId, config, liveTick, navigate, session],
  );

  const memberships = me?.organizations ?? [];
  const selectedMembership = orgId ? memberships.find((m) => m.organization.id === orgId) : undefined;
  const poolAccess = selectedMembership ? selectedMembership.roles.some((r) => r === "OWNER" || r === "BILLING") : false;

  useEffect(() => {
    if (errorCode(overview.error) === "UNAUTHENTICATED") onSignOut("Your session has ended. Open a new sign-in link to continue.");
  }, [overview.error, onSignOut]);

  const doSignOut = async () => {
    if (session.kind === "portal") await signOut({});
    onSignOut();
  };

  const balance = liveBalance && liveBalance.accountId === accountId ? liveBalance.balance : account?.balance;

  return (
    <div className="app">
      <header className="topbar">
        <div className="topbar-inner">
          <div className="brand">
            <span className="brand-mark" aria-hidden="true" />
            My Credit
          </div>
          <div className="topbar-right">
            {isUser && memberships.length > 0 ? (
              <label className="switcher">
                <span className="visually-hidden">Account</span>
                <select
                  aria-label="Account"
                  value={orgId ?? ""}
                  onChange={(e) => {
                    const m = memberships.find((x) => x.organization.id === e.target.value);
                    const admin = m?.roles.some((r) => r === "OWNER" || r === "BILLING");
                    navigate(route.tab, {
                      org: m ? m.organization.id : null,
                      account: m && admin && m.organization.creditPool ? m.organization.creditPool.id : null,
                    });
                  }}
                >
                  <option value="">Personal{me?.email ? ` (${me.email})` : ""}</option>
                  {memberships.map((m) => (
                    <option key={m.organization.id} value={m.organization.id}>
                      {m.organization.name} · {m.roles.map(humanize).join(", ")}
                    </option>
                  ))}
                </select>
              </label>
            ) : me?.email ? (
              <span className="muted account-email">{me.email}</span>
            ) : null}
            <button type="button" className="button button-ghost" onClick={doSignOut}>
              Sign out
            </button>
          </div>
        </div>
      </header>
      <main className="content">
        <div className="page-head">
          <div>
            <h1>{selectedMembership ? selectedMembership.organization.name : "My Credit"}</h1>
            <p className="muted page-sub">
              {selectedMembership
                ? poolAccess
                  ? "The organization's shared credit pool"
                  : `Your role: ${selectedMembership.roles.map(humanize).join(", ")}`
                : "Your balance, usage and billing"}
            </p>
          </div>
          {dashboard ? <LiveIndicator state={live} /> : null}
        </div>

        {overview.error && !data ? <Notice tone="error">{describeCombinedError(overview.error)}</Notice> : null}
        {!data && overview.fetching ? <Loading label="Loading your account…" /> : null}

        {selectedMembership && !poolAccess ? (
          <OrganizationPanel orgId={selectedMembership.organization.id} admin={false} />
        ) : dashboard && account && balance ? (
          <DashboardContext.Provider value={dashboard}>
            <Tabs
              label="My Credit"
              tabs={tabs.map((t) => ({ id: t, label: humanize(t) }))}
              selected={selectedTab}
              onSelect={(t) => navigate(t)}
            >
              {selectedTab === "OVERVIEW" ? (
                <>
                  <Overview account={account} balance={balance} range={range} />
                  {selectedMembership && poolAccess ? <OrganizationPanel orgId={selectedMembership.organization.id} admin /> : null}
                </>
              ) : selectedTab === "TRANSACTION" ? (
                <Transactions />
              ) : selectedTab === "BILLING" ? (
                <Billing />
              ) : selectedTab === "PAYMENT_METHOD" ? (
                <PaymentMethods />
              ) : null}
            </Tabs>
            <TopUpDialog open={topUpOpen} onClose={() => setTopUpOpen(false)} />
          </DashboardContext.Provider>
        ) : data && !account && !(selectedMembership && !poolAccess) ? (
          <Notice tone="error">This account cannot be shown with your sign-in.</Notice>
        ) : null}
      </main>
      <footer className="footer muted">Amounts are exact to a millionth of a credit · Creditline</footer>
    </div>
  );
}
