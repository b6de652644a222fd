import { useMemo, useState } from "react";
import { useQuery } from "urql";
import type { AccountData, Balance } from "../Shell";
import { useDashboard } from "../lib/context";
import { UsageByAgentQuery } from "../lib/documents";
import { formatCredits, formatCreditsShort, toMicro } from "../lib/credits";
import { activityName, forecastHasEnoughHistory, forecastSentence, formatDate, formatDateTime, humanize, relativeFromNow } from "../lib/format";
import { Empty, Loading, Notice, Section, StatusBadge } from "../components/ui";
import { UsageChart, stackRows, type ReportRow } from "../components/UsageChart";

export function Overview({ account, balance, range }: { account: AccountData; balance: Balance; range: { from: string; to: string } }) {
  const { openTopUp, goTo, billingConfig } = useDashboard();
  const lots = account.lots.edges.map((e) => e.node).filter((l) => l.status === "ACTIVE" || toMicro(l.remaining) > 0n);
  const expiring = lots
    .filter((l) => l.expiresAt && toMicro(l.remaining) > 0n && Date.parse(l.expiresAt) > Date.now())
    .sort((a, b) => Date.parse(a.expiresAt!) - Date.parse(b.expiresAt!));
  const alerts = account.alerts.edges.map((e) => e.node);
  const owed = toMicro(balance.owed) > 0n;

  return (
    <div className="grid">
      <Section title="Balance" className="span-2 balance-card">
        <div className="balance-main">
          <div>
            <div className="balance-label">Available</div>
            <div className="balance-value" aria-label={`Available: ${formatCredits(balance.available)} credits`}>
              {formatCredits(balance.available)} <span className="unit">credits</span>
            </div>
          </div>
          <ul className="chips" aria-label="Balance by kind">
            <li className="chip chip-free">
              <span className="chip-label">Free</span> <span className="chip-value">{formatCredits(balance.free)}</span>
            </li>
            <li className="chip chip-paid">
              <span className="chip-label">Paid</span> <span className="chip-value">{formatCredits(balance.paid)}</span>
            </li>
          </ul>
        </div>
        <dl className="stats">
          <div>
            <dt>Total</dt>
            <dd>{formatCredits(balance.total)}</dd>
          </div>
          <div>
            <dt>Held</dt>
            <dd>{formatCredits(balance.held)}</dd>
          </div>
          {owed ? (
            <div>
              <dt>Owed</dt>
              <dd>{formatCredits(balance.owed)}</dd>
            </div>
          ) : null}
        </dl>
        <div className="actions">
          <button type="button" className="button button-primary" onClick={openTopUp}>
            Top up
          </button>
          {billingConfig.dashboardTabs.includes("BILLING") ? (
            <button type="button" className="button" onClick={() => goTo("BILLING")}>
              Manage plan
            </button>
          ) : null}
        </div>
      </Section>

      <Section title="Forecast">
        {account.forecast && forecastHasEnoughHistory(account.forecast.basis) ? (
          <>
            <p className="forecast-line">{forecastSentence(account.forecast.runsOutAt)}</p>
            <p className="muted">
              Spending about {formatCreditsShort(account.forecast.burnPerDay)} credits a day over the last{" "}
              {windowWords(account.forecast.basis.hours)}
              {account.forecast.runsOutAt ? `; runs out around ${formatDate(account.forecast.runsOutAt)}` : ""}.
            </p>
          </>
        ) : account.forecast ? (
          <>
            <p className="forecast-line">Not enough usage yet to forecast.</p>
            <p className="muted">
              Usage in the last 7 days began {windowWords(account.forecast.basis.hours)} ago; a forecast needs at least a day of it.
            </p>
          </>
        ) : (
          <p className="muted">No usage in the last 7 days, so there is no run-out forecast.</p>
        )}
        {account.subscription ? (
          <p className="plan-line">
            Plan: <strong>{account.subscription.plan?.name ?? account.subscription.planId}</strong>{" "}
            <StatusBadge status={account.subscription.status} />
            {account.subscription.currentPeriodEnd ? (
              <span className="muted">
                {" "}
                · {account.subscription.cancelAtPeriodEnd ? "ends" : "renews"} {formatDate(account.subscription.currentPeriodEnd)}
              </span>
            ) : null}
          </p>
        ) : null}
        {account.autoTopUp?.enabled ? <p className="muted">Auto top-up: {account.autoTopUp.statusMessage}</p> : null}
        <h3 className="subheading">Open alerts</h3>
        {alerts.length === 0 ? (
          <p className="muted">No open alerts.</p>
        ) : (
          <ul className="list">
            {alerts.map((a) => (
              <li key={a.id}>
                <Notice tone={a.kind === "balance.depleted" ? "error" : "warn"}>
                  {a.kind === "balance.depleted"
                    ? "Your available credit has run out."
                    : `Available credit fell below ${formatCredits(a.level)} credits.`}{" "}
                  <span className="muted">Since {formatDateTime(a.openedAt)}.</span>
                </Notice>
              </li>
            ))}
          </ul>
        )}
      </Section>

      <Section title="Credit lots" className="span-3">
        {expiring.length > 0 ? (
          <ul className="expiring" aria-label="Expiring credit">
            {expiring.slice(0, 3).map((lot) => (
              <li key={lot.id}>
                <strong>
                  {formatCredits(lot.remaining)} {humanize(lot.kind)} credits
                </strong>{" "}
                expire {relativeFromNow(lot.expiresAt!)}
                <span className="muted"> ({formatDate(lot.expiresAt)})</span>
              </li>
            ))}
          </ul>
        ) : null}
        {lots.length === 0 ? (
          <Empty title="No credit yet">Top up to add credit.</Empty>
        ) : (
          <div className="table-wrap">
            <table className="table table-responsive">
              <caption className="visually-hidden">Credit lots</caption>
              <thead>
                <tr>
                  <th scope="col">Kind</th>
                  <th scope="col">Source</th>
                  <th scope="col" className="num">
                    Remaining
                  </th>
                  <th scope="col" className="num">
                    Granted
                  </th>
                  <th scope="col">Expires</th>
                </tr>
              </thead>
              <tbody>
                {lots.map((lot) => (
                  <tr key={lot.id}>
                    <td data-label="Kind">
                      <span className={`kind kind-${lot.kind.toLowerCase()}`}>{humanize(lot.kind)}</span>
                    </td>
                    <td data-label="Source">{humanize(lot.source)}</td>
                    <td data-label="Remaining" className="num">
                      {formatCredits(lot.remaining)}
                    </td>
                    <td data-label="Granted" className="num">
                      {formatCredits(lot.amount)}
                    </td>
                    <td data-label="Expires">{lot.expiresAt ? formatDate(lot.expiresAt) : "Never"}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </Section>

      <UsageSection account={account} range={range} />
    </div>
  );
}

function UsageSection({ account, range }: { account: AccountData; range: { from: string; to: string } }) {
  const [groupBy, setGroupBy] = useState<"ACTIVITY" | "AGENT">("ACTIVITY");
  const [byAgent] = useQuery({
    query: UsageByAgentQuery,
    variables: { accountId: account.id, from: range.from, to: range.to },
    pause: groupBy !== "AGENT",
  });
  const report =
    groupBy === "ACTIVITY"
      ? account.usageReport
      : byAgent.data?.node?.__typename === "CreditAccount"
        ? byAgent.data.node.usageReport
        : null;
  const rows: ReportRow[] | null = report?.__typename === "UsageReport" ? report.rows : null;
  const stacked = useMemo(
    () => (rows ? stackRows(rows, range.from, 30, groupBy === "ACTIVITY" ? activityName : (k) => k ?? "Other") : null),
    [rows, range.from, groupBy],
  );
  const total = report?.__typename === "UsageReport" ? report.totals : null;

  return (
    <Section
      title="Usage, last 30 days"
      className="span-3"
      actions={
        <div className="segmented" role="group" aria-label="Group usage by">
          <button type="button" aria-pressed={groupBy === "ACTIVITY"} onClick={() => setGroupBy("ACTIVITY")}>
            By activity
          </button>
          <button type="button" aria-pressed={groupBy === "AGENT"} onClick={() => setGroupBy("AGENT")}>
            By agent
          </button>
        </div>
      }
    >
      {total ? (
        <p className="muted usage-total">
          {formatCredits(total.credits, { maxDecimals: 3 })} credits over {total.events.toLocaleString("en-US")}{" "}
          {total.events === 1 ? "event" : "events"}
        </p>
      ) : null}
      {report && report.__typename !== "UsageReport" && "message" in report ? <Notice tone="error">{report.message}</Notice> : null}
      {!report && byAgent.fetching ? <Loading label="Loading usage by agent…" /> : null}
      {stacked && stacked.keys.length === 0 ? (
        <Empty title="No usage in the last 30 days">Usage appears here as your agents spend credit.</Empty>
      ) : stacked ? (
        <UsageChart
          data={stacked}
          label={`Daily usage by ${groupBy === "ACTIVITY" ? "activity" : "agent"}: ${stacked.keys
            .map((k) => `${k} ${formatCredits(stacked.totals[k], { maxDecimals: 3 })}`)
            .join(", ")}`}
        />
      ) : null}
    </Section>
  );
}

function windowWords(hours: number): string {
  if (hours >= 48) return `${Math.floor(hours / 24)} days`;
  return hours === 1 ? "an hour" : `${hours} hours`;
}
