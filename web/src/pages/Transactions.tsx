import { useEffect, useMemo, useState } from "react";
import { useQuery } from "urql";
import { useDashboard } from "../lib/context";
import { TransactionsQuery } from "../lib/documents";
import { formatCredits, formatMoney } from "../lib/credits";
import { describeCombinedError } from "../lib/errors";
import { formatDateTime, humanize } from "../lib/format";
import type { TransactionFieldsFragment, TransactionFilter } from "../gql/graphql";
import { Empty, Loading, Notice, Section, StatusBadge } from "../components/ui";

const PAGE = 25;

/** yyyy-mm-dd (a date input) -> the instant that day starts in UTC. */
function dayStart(value: string): string {
  return `${value}T00:00:00Z`;
}
function dayAfter(value: string): string {
  return new Date(Date.parse(`${value}T00:00:00Z`) + 86_400_000).toISOString();
}

export function Transactions() {
  const { accountId, session, liveTick } = useDashboard();
  const [type, setType] = useState("");
  const [status, setStatus] = useState("");
  const [from, setFrom] = useState("");
  const [to, setTo] = useState("");
  const [pages, setPages] = useState<(string | null)[]>([null]);
  const filter: TransactionFilter = useMemo(
    () => ({
      type: (type || null) as TransactionFilter["type"],
      status: (status || null) as TransactionFilter["status"],
      from: from ? dayStart(from) : null,
      to: to ? dayAfter(to) : null,
    }),
    [type, status, from, to],
  );
  useEffect(() => setPages([null]), [filter]);
  const [downloadError, setDownloadError] = useState<string | null>(null);
  const [downloading, setDownloading] = useState(false);

  const download = async () => {
    setDownloadError(null);
    setDownloading(true);
    const params = new URLSearchParams({ account: accountId });
    if (filter.type) params.set("type", filter.type);
    if (filter.status) params.set("status", filter.status);
    if (filter.from) params.set("from", filter.from);
    if (filter.to) params.set("to", filter.to);
    try {
      const response = await fetch(`/exports/transactions.csv?${params}`, { headers: { Authorization: `Bearer ${session.token}` } });
      if (!response.ok) throw new Error((await response.text()) || `HTTP ${response.status}`);
      const blob = await response.blob();
      const url = URL.createObjectURL(blob);
      const a = document.createElement("a");
      a.href = url;
      a.download = "transactions.csv";
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (error) {
      setDownloadError(`The CSV could not be downloaded: ${error instanceof Error ? error.message : String(error)}`);
    } finally {
      setDownloading(false);
    }
  };

  const filtered = !!(type || status || from || to);
  return (
    <Section
      title="Transactions"
      actions={
        <button type="button" className="button" onClick={download} disabled={downloading}>
          {downloading ? "Preparing CSV…" : "Download CSV"}
        </button>
      }
    >
      <form className="filters" aria-label="Filter transactions" onSubmit={(e) => e.preventDefault()}>
        <label className="field">
          <span className="field-label">Type</span>
          <select value={type} onChange={(e) => setType(e.target.value)}>
            <option value="">All types</option>
            <option value="TOP_UP">Top-up</option>
            <option value="AUTO_TOP_UP">Auto top-up</option>
            <option value="SUBSCRIPTION">Subscription</option>
          </select>
        </label>
        <label className="field">
          <span className="field-label">Status</span>
          <select value={status} onChange={(e) => setStatus(e.target.value)}>
            <option value="">All statuses</option>
            <option value="PENDING">Pending</option>
            <option value="SUCCEEDED">Succeeded</option>
            <option value="FAILED">Failed</option>
          </select>
        </label>
        <label className="field">
          <span className="field-label">From</span>
          <input type="date" value={from} max={to || undefined} onChange={(e) => setFrom(e.target.value)} />
        </label>
        <label className="field">
          <span className="field-label">To</span>
          <input type="date" value={to} min={from || undefined} onChange={(e) => setTo(e.target.value)} />
        </label>
        {filtered ? (
          <button
            type="button"
            className="button button-ghost filters-clear"
            onClick={() => {
              setType("");
              setStatus("");
              setFrom("");
              setTo("");
            }}
          >
            Clear filters
          </button>
        ) : null}
      </form>
      {downloadError ? <Notice tone="error">{downloadError}</Notice> : null}
      <div className="table-wrap">
        <table className="table table-responsive">
          <caption className="visually-hidden">Payments and top-ups</caption>
          <thead>
            <tr>
              <th scope="col">Date</th>
              <th scope="col">Type</th>
              <th scope="col">Status</th>
              <th scope="col" className="num">
                Credits
              </th>
              <th scope="col" className="num">
                Amount
              </th>
              <th scope="col">Invoice</th>
            </tr>
          </thead>
          {pages.map((after, i) => (
            <TransactionPage
              key={`${after ?? "first"}-${i}`}
              accountId={accountId}
              after={after}
              filter={filter}
              liveTick={liveTick}
              last={i === pages.length - 1}
              first={i === 0}
              filtered={filtered}
              onMore={(cursor) => setPages((p) => [...p, cursor])}
            />
          ))}
        </table>
      </div>
    </Section>
  );
}

function TransactionPage(props: {
  accountId: string;
  after: string | null;
  filter: TransactionFilter;
  liveTick: number;
  last: boolean;
  first: boolean;
  filtered: boolean;
  onMore: (cursor: string) => void;
}) {
  const [result, refetch] = useQuery({
    query: TransactionsQuery,
    variables: { accountId: props.accountId, first: PAGE, after: props.after, filter: props.filter },
  });
  useEffect(() => {
    if (props.liveTick > 0) refetch({ requestPolicy: "network-only" });
  }, [props.liveTick, refetch]);
  const node = result.data?.node;
  const connection = node?.__typename === "CreditAccount" ? node.transactions : null;
  const rows = connection?.edges.map((e) => e.node) ?? [];
  return (
    <tbody>
      {result.error && !connection ? (
        <tr>
          <td colSpan={6}>
            <Notice tone="error">{describeCombinedError(result.error)}</Notice>
          </td>
        </tr>
      ) : null}
      {!connection && result.fetching ? (
        <tr>
          <td colSpan={6}>
            <Loading label="Loading transactions…" />
          </td>
        </tr>
      ) : null}
      {connection && rows.length === 0 && props.first ? (
        <tr>
          <td colSpan={6}>
            <Empty title={props.filtered ? "No transactions match these filters" : "No payments yet"}>
              {props.filtered ? "Change or clear the filters." : "Top-ups and subscription payments appear here."}
            </Empty>
          </td>
        </tr>
      ) : null}
      {rows.map((t) => (
        <TransactionRow key={t.id} t={t} />
      ))}
      {props.last && connection?.pageInfo.hasNextPage ? (
        <tr className="more-row">
          <td colSpan={6}>
            <button type="button" className="button" onClick={() => props.onMore(connection.pageInfo.endCursor!)}>
              Show more
            </button>
          </td>
        </tr>
      ) : null}
    </tbody>
  );
}

function TransactionRow({ t }: { t: TransactionFieldsFragment }) {
  const refunded = t.refunds.filter((r) => r.status === "SUCCEEDED");
  return (
    <tr>
      <td data-label="Date">{formatDateTime(t.createdAt)}</td>
      <td data-label="Type">{humanize(t.type)}</td>
      <td data-label="Status">
        <StatusBadge status={t.status} />
        {t.failureReason ? <div className="small muted">{t.failureReason}</div> : null}
        {refunded.length > 0 ? (
          <div className="small muted">
            Refunded {formatMoney(refunded.reduce((sum, r) => sum + BigInt(r.amount.amount), 0n), t.amount.currency)}
          </div>
        ) : null}
      </td>
      <td data-label="Credits" className="num">
        {formatCredits(t.credits)}
      </td>
      <td data-label="Amount" className="num">
        {formatMoney(t.amount.amount, t.amount.currency)}
      </td>
      <td data-label="Invoice">
        {t.invoice ? (
          <a href={t.invoice.signedUrl} target="_blank" rel="noopener noreferrer" aria-label={`Invoice ${t.invoice.number}`}>
            {t.invoice.number}
          </a>
        ) : t.status === "PENDING" && t.checkoutUrl ? (
          <a href={t.checkoutUrl}>Complete payment</a>
        ) : (
          <span className="muted">—</span>
        )}
      </td>
    </tr>
  );
}
