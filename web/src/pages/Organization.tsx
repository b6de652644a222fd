import { useMemo, useState, type FormEvent } from "react";
import { useMutation, useQuery } from "urql";
import { OrganizationQuery, SetMemberBudgetMutation } from "../lib/documents";
import type { OrganizationQuery as OrganizationQueryData } from "../gql/graphql";
import { addCredits, compareCredits, formatCredits, isCredits, percentOf } from "../lib/credits";
import { describeCombinedError, describeResultError } from "../lib/errors";
import { activityName, humanize, last30Days } from "../lib/format";
import { Empty, Loading, Meter, Notice, Section } from "../components/ui";
import { UsageChart, stackRows } from "../components/UsageChart";

type KeyTotals = { key: string; events: number; credits: string };

function sumByKey(rows: { key?: string | null; totals: { events: number; credits: string } }[], name: (k: string | null) => string): KeyTotals[] {
  const map = new Map<string, KeyTotals>();
  for (const row of rows) {
    const key = name(row.key ?? null);
    const prev = map.get(key) ?? { key, events: 0, credits: "0" };
    map.set(key, { key, events: prev.events + row.totals.events, credits: addCredits(prev.credits, row.totals.credits) });
  }
  return [...map.values()].sort((a, b) => compareCredits(b.credits, a.credits));
}

/** An organization: for BILLING and OWNER members its usage by member, agent and activity and the budgets. */
export function OrganizationPanel({ orgId, admin }: { orgId: string; admin: boolean }) {
  const range = useMemo(() => last30Days(), []);
  const [result, refetch] = useQuery({ query: OrganizationQuery, variables: { orgId, from: range.from, to: range.to, admin } });
  const org = result.data?.node?.__typename === "Organization" ? result.data.node : null;
  const emails = useMemo(() => new Map((org?.members ?? []).map((m) => [m.userId, m.email])), [org?.members]);
  const memberName = (key: string | null) => (key ? emails.get(key) ?? key : "Other");

  if (!org) {
    if (result.error) return <Notice tone="error">{describeCombinedError(result.error)}</Notice>;
    return result.fetching ? <Loading label="Loading the organization…" /> : <Notice tone="error">This organization cannot be shown.</Notice>;
  }
  if (!admin) return <MemberOwnUsage org={org} range={range} />;
  const byMember = org.byMember?.__typename === "UsageReport" ? org.byMember : null;
  const stacked = byMember ? stackRows(byMember.rows, range.from, 30, memberName) : null;
  const memberTotals = byMember ? sumByKey(byMember.rows, memberName) : [];
  const agents = org.byAgent?.__typename === "UsageReport" ? sumByKey(org.byAgent.rows, (k) => k ?? "Other") : [];
  const activities = org.byActivity?.__typename === "UsageReport" ? sumByKey(org.byActivity.rows, activityName) : [];
  const reportError = [org.byMember, org.byAgent, org.byActivity].find((r) => r && r.__typename !== "UsageReport");

  return (
    <div className="grid org-grid">
      <Section title="Usage by member" className="span-3">
        {reportError && "message" in reportError ? <Notice tone="error">{reportError.message}</Notice> : null}
        {stacked && stacked.keys.length > 0 ? (
          <>
            <UsageChart data={stacked} label={`Daily usage by member: ${memberTotals.map((m) => `${m.key} ${formatCredits(m.credits, { maxDecimals: 3 })}`).join(", ")}`} />
            <TotalsTable caption="Usage by member, last 30 days" keyLabel="Member" rows={memberTotals} />
          </>
        ) : (
          <Empty title="No usage in the last 30 days" />
        )}
      </Section>
      <Section title="Usage by agent" className="span-half">
        {agents.length ? <TotalsTable caption="Usage by agent, last 30 days" keyLabel="Agent" rows={agents} /> : <Empty title="No usage yet" />}
      </Section>
      <Section title="Usage by activity" className="span-half">
        {activities.length ? (
          <TotalsTable caption="Usage by activity, last 30 days" keyLabel="Activity" rows={activities} />
        ) : (
          <Empty title="No usage yet" />
        )}
      </Section>
      <Section title="Member budgets" className="span-3">
        <ul className="budgets">
          {(org.members ?? []).map((m) => (
            <BudgetRow key={m.userId} orgId={org.id} member={m} onSaved={() => refetch({ requestPolicy: "network-only" })} />
          ))}
        </ul>
      </Section>
    </div>
  );
}

type Org = Extract<NonNullable<OrganizationQueryData["node"]>, { __typename: "Organization" }>;

/** A plain member: their own usage in the organization and their budget, nothing of the other members. */
function MemberOwnUsage({ org, range }: { org: Org; range: { from: string; to: string } }) {
  const mine = org.mine?.__typename === "UsageReport" ? org.mine : null;
  const me = org.myMembership;
  const stacked = mine ? stackRows(mine.rows, range.from, 30, () => "You") : null;
  const budget = me?.monthlyBudget ?? null;
  const pct = me && budget ? percentOf(me.spentThisMonth, budget) : 0;
  const roles = org.myRoles.map(humanize).join(" and ").toLowerCase();
  return (
    <div className="grid org-grid">
      <Section title="Your usage, last 30 days" className="span-3">
        <p className="muted">
          Work you did in <strong>{org.name}</strong> as a {roles}, paid from its credit pool. The pool, the other members'
          usage and their budgets are shown to its Owner and Billing members.
        </p>
        {org.mine && org.mine.__typename !== "UsageReport" && "message" in org.mine ? <Notice tone="error">{org.mine.message}</Notice> : null}
        {mine && stacked && stacked.keys.length > 0 ? (
          <>
            <dl className="stats">
              <div>
                <dt>Credits used</dt>
                <dd>{formatCredits(mine.totals.credits, { maxDecimals: 3 })}</dd>
              </div>
              <div>
                <dt>Events</dt>
                <dd>{mine.totals.events.toLocaleString("en-US")}</dd>
              </div>
            </dl>
            <UsageChart data={stacked} label={`Your daily usage in ${org.name}: ${formatCredits(mine.totals.credits, { maxDecimals: 3 })} credits in 30 days`} />
          </>
        ) : mine ? (
          <Empty title="No usage in the last 30 days">Your agents' work in this organization shows here.</Empty>
        ) : null}
      </Section>
      {me ? (
        <Section title="Your budget this month" className="span-3">
          <div className="budget">
            <div className="budget-head">
              <div className="budget-name">{me.email}</div>
              <div className="budget-figures">
                {formatCredits(me.spentThisMonth, { maxDecimals: 3 })} {budget ? `of ${formatCredits(budget)}` : "spent"}
                <span className="muted small"> this month</span>
              </div>
            </div>
            {budget ? (
              <Meter label="Your spending of your monthly budget" percent={pct} tone={pct >= 100 ? "bad" : pct >= 80 ? "warn" : "accent"} />
            ) : (
              <div className="muted small">No monthly budget: the pool pays for your work up to its balance.</div>
            )}
          </div>
        </Section>
      ) : null}
    </div>
  );
}

function TotalsTable({ caption, keyLabel, rows }: { caption: string; keyLabel: string; rows: KeyTotals[] }) {
  const top = rows[0]?.credits ?? "0";
  return (
    <div className="table-wrap">
      <table className="table table-responsive">
        <caption className="visually-hidden">{caption}</caption>
        <thead>
          <tr>
            <th scope="col">{keyLabel}</th>
            <th scope="col" className="num">
              Events
            </th>
            <th scope="col" className="num">
              Credits
            </th>
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => (
            <tr key={r.key}>
              <td data-label={keyLabel}>
                <div>{r.key}</div>
                <Meter label={`${r.key}: share of the largest`} percent={percentOf(r.credits, top)} />
              </td>
              <td data-label="Events" className="num">
                {r.events.toLocaleString("en-US")}
              </td>
              <td data-label="Credits" className="num">
                {formatCredits(r.credits, { maxDecimals: 3 })}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

interface Member {
  userId: string;
  email: string;
  roles: string[];
  monthlyBudget?: string | null;
  spentThisMonth: string;
}

function BudgetRow({ orgId, member, onSaved }: { orgId: string; member: Member; onSaved: () => void }) {
  const [editing, setEditing] = useState(false);
  const [value, setValue] = useState(member.monthlyBudget ?? "");
  const [error, setError] = useState<string | null>(null);
  const [, save] = useMutation(SetMemberBudgetMutation);
  const budget = member.monthlyBudget ?? null;
  const pct = budget ? percentOf(member.spentThisMonth, budget) : 0;
  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setError(null);
    const text = value.trim();
    if (text && !isCredits(text)) return setError("Enter the budget as a number of credits, or leave it empty for none.");
    const r = await save({ input: { organizationId: orgId, userId: member.userId, monthlyCredits: text || null } });
    if (r.error) return setError(describeCombinedError(r.error));
    const a = r.data?.setMemberBudget;
    if (a?.__typename === "SetMemberBudgetSuccess") {
      setEditing(false);
      onSaved();
    } else if (a) setError(describeResultError(a));
  };
  return (
    <li className="budget">
      <div className="budget-head">
        <div>
          <div className="budget-name">{member.email}</div>
          <div className="muted small">{member.roles.map(humanize).join(", ")}</div>
        </div>
        <div className="budget-figures">
          {formatCredits(member.spentThisMonth, { maxDecimals: 3 })} {budget ? `of ${formatCredits(budget)}` : "spent"}
          <span className="muted small"> this month</span>
        </div>
      </div>
      {budget ? (
        <Meter label={`${member.email}: spent of monthly budget`} percent={pct} tone={pct >= 100 ? "bad" : pct >= 80 ? "warn" : "accent"} />
      ) : (
        <div className="muted small">No monthly budget</div>
      )}
      {editing ? (
        <form className="budget-form" onSubmit={submit}>
          <label className="field">
            <span className="field-label">Monthly budget for {member.email}</span>
            <input inputMode="decimal" value={value} onChange={(e) => setValue(e.target.value)} placeholder="No budget" autoFocus />
          </label>
          <button type="submit" className="button button-primary button-small">
            Save budget
          </button>
          <button type="button" className="button button-ghost button-small" onClick={() => setEditing(false)}>
            Cancel
          </button>
        </form>
      ) : (
        <button type="button" className="button button-small" onClick={() => setEditing(true)} aria-label={`Edit budget for ${member.email}`}>
          Edit budget
        </button>
      )}
      {error ? <Notice tone="error">{error}</Notice> : null}
    </li>
  );
}
