"""No N+1: a page's GraphQL request runs the same SQL statements for 5 rows as for 100.

Every statement goes through one of the Tortoise client's execution methods, whether the ORM or the raw
SQL of ``models.sql`` sends it. The counter wraps those methods on the default connection's class and on
its subclasses (the transaction wrappers), and counts a call made inside another counted call once.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from tortoise import connections
from tortoise.transactions import in_transaction

from models import ledger, money, organizations, payments
from models.credits import MICRO
from models.ledger import alerts
from models.outbox import EventType
from models.sql import Sql
from models.tables import (
    AutoTopUp,
    CreditAccount,
    CreditKind,
    LotSource,
    MemberRole,
    Membership,
    Organization,
    PaymentMethod,
    RollupDimension,
    Subscription,
    SubscriptionStatus,
    TransactionType,
    UsageRollup,
    User,
    WebhookDeliveryStatus,
)
from tests.support.helpers import Api, gid
from tests.support.statements import StatementCounter, tables_read
from tests.support.statements import counter as counter
from tests.support.webhooks import delivery as webhook_delivery
from tests.support.webhooks import endpoint as webhook_endpoint
from tests.support.webhooks import event as webhook_event

SMALL, LARGE = 5, 100

MY_CREDIT_PAGE = """
query MyCredit {
  me {
    email
    credit {
      balance { total free paid held available }
      lots(first: 100) { edges { node { id kind amount remaining expiresAt status } } }
      ledger(first: 100) { edges { node { type delta balanceAfter } } }
      usage(first: 100) { edges { node { id credits activity agentId } } }
      transactions(first: 100) { edges { node { id status credits invoice { number } refunds { credits } } } }
      paymentMethods { last4 }
      subscription { status plan { name } paymentMethod { last4 } }
      autoTopUp { status paymentMethod { last4 } }
    }
    organizations { roles organization { id name } }
  }
}
"""

MEMBERS_PAGE = """
query Members($org: ID!) {
  node(id: $org) {
    ... on Organization {
      name
      myRoles
      members { email roles userId monthlyBudget spentThisMonth }
      creditPool { balance { total } }
    }
  }
}
"""

# The tables the statements of each page read, one entry per statement (the same on SQLite and PostgreSQL,
# for any number of rows). A new entry here is a new round trip for every request of the page.
MY_CREDIT_TABLES = sorted(
    [
        "api_tokens",  # the bearer token
        "users",  # me
        "credit_accounts",  # me.credit
        "credit_accounts",  # balance: held
        "credit_lots",  # balance: live lots
        "holds",  # balance: live holds (only read when the account holds credit)
        "credit_lots",  # lots
        "ledger_entries",  # ledger
        "usage_events",  # usage
        "memberships",  # organizations
        "organizations",  # organizations.organization, batched
        "transactions",  # transactions
        "invoices",  # transactions.invoice, batched
        "refunds",  # transactions.refunds, batched
        "payment_methods",  # paymentMethods
        "subscriptions",  # subscription
        "auto_top_ups",  # autoTopUp
        "transactions",  # autoTopUp: bought this month
        "payment_methods",  # subscription.paymentMethod and autoTopUp.paymentMethod, batched
    ]
)
MEMBERS_TABLES = sorted(
    [
        "api_tokens",  # the bearer token
        "organizations",  # node
        "memberships",  # the caller's roles (myRoles, members, creditPool, budgets share one load)
        "memberships",  # members
        "users",  # members.email, batched
        "spend_limits",  # members.monthlyBudget (the members' limits on the pool), batched
        "usage_rollups",  # members.spentThisMonth, batched
        "credit_accounts",  # creditPool
        "credit_accounts",  # creditPool.balance: held
        "credit_lots",  # creditPool.balance: live lots
        "holds",  # creditPool.balance: live holds
    ]
)

# Lots of 2 credits, FREE and PAID by turns; spends of 0.5 credit (FREE first); 1 credit held; top-ups of 1.
MY_BALANCE = {
    SMALL: {"total": "12.5", "free": "3.5", "paid": "9", "held": "1", "available": "11.5"},
    LARGE: {"total": "250", "free": "50", "paid": "200", "held": "1", "available": "249"},
}


# ------------------------------------------------------------------------------------------- the counter


async def test_the_counter_sees_orm_raw_sql_and_transaction_statements(api: Api, counter: StatementCounter) -> None:
    now = api.clock.now()
    user_ids = [
        await ledger.create_user(f"u{n}@example.com", signup_bonus=0, bonus_lifetime=timedelta(days=1), now=now)
        for n in range(3)
    ]
    account = await CreditAccount.get(user_id=user_ids[0])

    async def orm() -> None:
        await Organization.create(name="Acme", created_at=now)
        assert await Organization.filter(name="Acme").count() == 1
        for user_id in user_ids:  # a deliberate N+1
            assert await User.filter(id=user_id).first() is not None

    async def raw() -> None:
        await ledger.read_balances([account.id], now)  # held, then live lots
        await Sql(connections.get("default")).execute("UPDATE organizations SET name = $1", "Acme Inc")
        await connections.get("default").execute_script("SELECT 1")

    async def transaction() -> None:
        async with in_transaction() as conn:
            await Organization.create(name="Globex", created_at=now)
            await Sql(conn).fetch("SELECT id FROM organizations")

    await counter.during(orm())
    assert len(counter.statements) == 2 + len(user_ids), counter.statements
    await counter.during(raw())
    assert len(counter.statements) == 4, counter.statements
    await counter.during(transaction())
    assert len(counter.statements) == 2, counter.statements
    assert counter.statements[0].lstrip().upper().startswith("INSERT")


# ------------------------------------------------------------------------------------------------ pages


def _key(scope: str, n: int) -> ledger.IdempotencyKey:
    return ledger.IdempotencyKey.for_request(scope, f"k{n}", "test", {"n": n})


async def _user_with_history(api: Api, email: str, rows: int) -> str:
    """A user with ``2 * rows`` lots, ``rows`` usage events, ``3 * rows`` ledger entries, an active hold,
    ``rows`` paid top-ups with invoices, a saved card, a subscription and auto top-up on that card, and
    membership in ``rows`` organizations; returns their token."""
    now = api.clock.now()
    user_id, token = await api.user(email, bonus=0)
    account_id = (await CreditAccount.get(user_id=user_id)).id
    for n in range(rows):
        paid = n % 2 == 1
        await ledger.grant(
            account_id,
            credits=2 * MICRO,
            kind=CreditKind.PAID if paid else CreditKind.FREE,
            source=LotSource.ADJUSTMENT if paid else LotSource.PROMOTION,
            expires_at=None if n % 3 == 0 else now + timedelta(days=n + 1),
            reason=None,
            idem=None,
            now=now,
        )
    for n in range(rows):
        await ledger.spend(
            ("user_id", user_id),
            user_id=user_id,
            organization_id=None,
            agent_id=f"agent-{n % 4}",
            activity="answer",
            credits=MICRO // 2,
            quantity=None,
            idem=_key(email, n),
            now=now,
        )
    await ledger.hold(
        ("user_id", user_id),
        user_id=user_id,
        organization_id=None,
        agent_id="agent-0",
        activity="transcription",
        credits=MICRO,
        expires_at=now + timedelta(hours=1),
        idem=_key(email, -1),
        now=now,
    )
    card = await PaymentMethod.create(
        account_id=account_id,
        gateway="sandbox",
        reference="card_sandbox_tok_visa",
        brand="visa",
        last4="4242",
        exp_month=12,
        exp_year=2034,
        is_default=True,
        created_at=now,
    )
    for n in range(rows):  # paid top-ups, each with its invoice
        txn, _ = await payments.start_top_up(
            account_id,
            credits=MICRO,
            price=money.Price("USD", 100),
            gateway="sandbox",
            payment_method_id=card.id,
            card_reference=card.reference,
            kind=TransactionType.TOP_UP,
            idem=_key(email, 1000 + n),
            now=now,
        )
        await payments.complete(txn.id, succeeded=True, reference=f"ch_{n}", failure_reason=None, now=now)
    await Subscription.create(
        account_id=account_id,
        plan_id="pro-monthly",
        status=SubscriptionStatus.ACTIVE,
        gateway="sandbox",
        payment_method_id=card.id,
        current_period_start=now,
        current_period_end=now + timedelta(days=31),
        idempotency_scope="test",
        idempotency_key=email,
        request_hash="",
        created_at=now,
    )
    await AutoTopUp.create(
        account_id=account_id,
        threshold=MICRO,
        amount=10 * MICRO,
        monthly_cap=100 * MICRO,
        payment_method_id=card.id,
        updated_at=now,
    )
    for n in range(rows):
        org = await Organization.create(name=f"{email} org {n}", created_at=now)
        roles = "OWNER" if n % 2 else "BILLING,MEMBER"
        await Membership.create(organization=org, user_id=user_id, roles=roles, created_at=now)
    return token


async def _organization_with_members(api: Api, name: str, rows: int) -> tuple[str, str]:
    """An organization with a funded pool (partly held) and ``rows`` members besides its owner, each with a
    monthly budget and spending this month; returns the organization's global ID and the owner's token."""
    now = api.clock.now()
    owner_id, owner = await api.user(f"owner@{name}.example", bonus=0)
    org = await organizations.create(name, owner_id, now)
    pool = await organizations.enable_pool(org.id, now)
    await ledger.grant(
        pool.id,
        credits=10 * MICRO,
        kind=CreditKind.PAID,
        source=LotSource.ADJUSTMENT,
        expires_at=None,
        reason=None,
        idem=None,
        now=now,
    )
    await ledger.hold(
        ("organization_id", org.id),
        user_id=owner_id,
        organization_id=org.id,
        agent_id="agent-0",
        activity="transcription",
        credits=MICRO,
        expires_at=now + timedelta(hours=1),
        idem=_key(name, -1),
        now=now,
    )
    hour = now.replace(minute=0, second=0, microsecond=0)
    for n in range(rows):
        member_id = await ledger.create_user(
            f"member-{n}@{name}.example", signup_bonus=0, bonus_lifetime=timedelta(days=1), now=now
        )
        await organizations.add_member(org.id, member_id, [MemberRole.MEMBER], now)
        await organizations.set_budget(org.id, member_id, (n + 1) * MICRO, now)
        # What the member spent from the pool this month, as the spends' rollups record it.
        await UsageRollup.create(
            account_id=pool.id,
            organization_key=org.id,
            dimension=RollupDimension.MEMBER,
            key=str(member_id),
            bucket=hour,
            events=1,
            credits=MICRO // 4,
            paid_credits=MICRO // 4,
        )
    return gid("Organization", org.id), owner


async def test_my_credit_page_runs_the_same_statements_for_5_rows_as_for_100(
    api: Api, counter: StatementCounter
) -> None:
    counted: dict[int, list[str]] = {}
    for rows in (SMALL, LARGE):
        token = await _user_with_history(api, f"user-{rows}@example.com", rows)

        body = await counter.during(api.post(MY_CREDIT_PAGE, token=token))

        assert "errors" not in body, body
        me = body["data"]["me"]
        assert me["email"] == f"user-{rows}@example.com"
        assert me["credit"]["balance"] == MY_BALANCE[rows]
        assert len(me["credit"]["lots"]["edges"]) == min(2 * rows, 100)
        assert len(me["credit"]["usage"]["edges"]) == rows
        assert len(me["credit"]["ledger"]["edges"]) == min(3 * rows + 1, 100)
        transactions = [edge["node"] for edge in me["credit"]["transactions"]["edges"]]
        assert len(transactions) == rows
        assert all(t["invoice"] is not None and t["refunds"] == [] for t in transactions)
        assert me["credit"]["subscription"] == {
            "status": "ACTIVE",
            "plan": {"name": "Pro"},
            "paymentMethod": {"last4": "4242"},
        }
        assert me["credit"]["autoTopUp"]["paymentMethod"] == {"last4": "4242"}
        assert len(me["organizations"]) == rows
        counted[rows] = list(counter.statements)
        print(f"\nMy Credit page, {rows} rows: {len(counted[rows])} statements", *counted[rows], sep="\n  ")

    assert len(counted[SMALL]) > 0
    assert len(counted[SMALL]) == len(counted[LARGE]) == len(MY_CREDIT_TABLES) == 19
    assert tables_read(counted[SMALL]) == tables_read(counted[LARGE]) == MY_CREDIT_TABLES


async def test_members_page_runs_the_same_statements_for_5_members_as_for_100(
    api: Api, counter: StatementCounter
) -> None:
    counted: dict[int, list[str]] = {}
    for rows in (SMALL, LARGE):
        org, owner = await _organization_with_members(api, f"org{rows}", rows)

        body = await counter.during(api.post(MEMBERS_PAGE, {"org": org}, owner))

        assert "errors" not in body, body
        node = body["data"]["node"]
        assert node["name"] == f"org{rows}"
        assert node["myRoles"] == ["OWNER"]
        assert node["creditPool"] == {"balance": {"total": "10"}}
        assert len(node["members"]) == rows + 1
        assert node["members"][0] == {
            "email": f"owner@org{rows}.example",
            "roles": ["OWNER"],
            "userId": node["members"][0]["userId"],
            "monthlyBudget": None,
            "spentThisMonth": "0",
        }
        assert node["members"][-1] == {
            "email": f"member-{rows - 1}@org{rows}.example",
            "roles": ["MEMBER"],
            "userId": node["members"][-1]["userId"],
            "monthlyBudget": str(rows),
            "spentThisMonth": "0.25",
        }
        counted[rows] = list(counter.statements)
        print(f"\nmembers page, {rows} members: {len(counted[rows])} statements", *counted[rows], sep="\n  ")

    assert len(counted[SMALL]) > 0
    assert len(counted[SMALL]) == len(counted[LARGE]) == len(MEMBERS_TABLES) == 11
    assert tables_read(counted[SMALL]) == tables_read(counted[LARGE]) == MEMBERS_TABLES


# ------------------------------------------------------------------------------------------ spends with a run


async def test_a_spend_with_a_run_sends_the_statements_of_one_without(api: Api, counter: StatementCounter) -> None:
    """The run's rollup row rides in the rollup statement every spend sends: no extra round trip."""
    user_id, _ = await api.user("ada@example.com", bonus=10)

    async def spend(n: int, run_id: str | None) -> list[str]:
        await counter.during(
            ledger.spend(
                ("user_id", user_id),
                user_id=user_id,
                organization_id=None,
                agent_id="bot",
                activity="answer",
                credits=MICRO,
                quantity=None,
                idem=_key("runs", n),
                now=api.clock.now(),
                run_id=run_id,
            )
        )
        return list(counter.statements)

    without, with_run = await spend(1, None), await spend(2, "run-1")

    # The lock's statement and one that writes everything (SQLite: its writes, in one hop to its thread).
    assert len(with_run) == len(without) == 2
    # The lock's statement (the first) names the run too: it reads the run's counters when the account has
    # limits (this one has none: it reads nothing more).
    assert [s.startswith("SELECT a.id") and "spend_limits" in s for s in (with_run[0], without[0])] == [True, True]
    assert [s for s in with_run[1:] if "usage_rollups" not in s] == [s for s in without[1:] if "usage_rollups" not in s]
    assert [s.count("), (") for s in with_run if "usage_rollups" in s] == [3]  # four rows, one statement
    assert [s.count("), (") for s in without if "usage_rollups" in s] == [2]


# --------------------------------------------------------------------------------------- forecasts of pools

POOLS_PAGE = """
query Pools {
  me {
    organizations {
      organization { name creditPool { balance { available } forecast { burnPerDay runsOutAt basis { spent } } } }
    }
  }
}
"""
POOLS_TABLES = sorted(
    [
        "api_tokens",  # the bearer token
        "users",  # me
        "memberships",  # organizations (and the caller's roles for creditPool: the same rows)
        "organizations",  # organizations.organization, batched
        "credit_accounts",  # creditPool, batched
        "credit_accounts",  # balance: held (forecast's balances share the balance loader)
        "credit_lots",  # balance: live lots
        "usage_rollups",  # forecast: the burn of every pool in the window, batched
    ]
)


async def test_forecasts_of_5_pools_run_the_statements_of_100(api: Api, counter: StatementCounter) -> None:
    now = api.clock.now()
    counted: dict[int, list[str]] = {}
    for rows in (SMALL, LARGE):
        user_id, token = await api.user(f"owner-{rows}@example.com", bonus=0)
        for n in range(rows):
            org = await organizations.create(f"org {rows}-{n}", user_id, now)
            pool = await organizations.enable_pool(org.id, now)
            await ledger.grant(
                pool.id,
                credits=10 * MICRO,
                kind=CreditKind.PAID,
                source=LotSource.ADJUSTMENT,
                expires_at=None,
                reason=None,
                idem=None,
                now=now,
            )
            # A quarter credit spent in the current hour, as a spend's rollup records it (no lot taken).
            await UsageRollup.create(
                account_id=pool.id,
                organization_key=org.id,
                dimension=RollupDimension.ACTIVITY,
                key="answer",
                bucket=now.replace(minute=0, second=0, microsecond=0),
                events=1,
                credits=MICRO // 4,
                paid_credits=MICRO // 4,
            )

        body = await counter.during(api.post(POOLS_PAGE, token=token))

        assert "errors" not in body, body
        pools = [m["organization"]["creditPool"] for m in body["data"]["me"]["organizations"]]
        # A quarter credit over the minimum of an hour: 6 a day; 10 left last 40 hours.
        assert (
            pools
            == [
                {
                    "balance": {"available": "10"},
                    "forecast": {
                        "burnPerDay": "6",
                        "runsOutAt": "2026-01-17T04:00:00+00:00",
                        "basis": {"spent": "0.25"},
                    },
                }
            ]
            * rows
        )
        counted[rows] = list(counter.statements)
        print(f"\npools page, {rows} pools: {len(counted[rows])} statements", *counted[rows], sep="\n  ")

    assert len(counted[SMALL]) == len(counted[LARGE]) == len(POOLS_TABLES) == 8
    assert tables_read(counted[SMALL]) == tables_read(counted[LARGE]) == POOLS_TABLES


# ------------------------------------------------------------------------------------------ balance alerts


async def test_alert_levels_cost_a_spend_nothing_until_it_crosses_one(api: Api, counter: StatementCounter) -> None:
    """The levels come with the lock's row: a spend that crosses none sends the statements of a spend on an
    account without levels; one that crosses adds the event and the alert (one statement on PostgreSQL, a
    data-modifying CTE; two on SQLite, which has none)."""
    plain_user, _ = await api.user("plain@example.com", bonus=10)
    alerted_user, _ = await api.user("alerted@example.com", bonus=10)
    alerted = int((await CreditAccount.get(user_id=alerted_user)).id)
    await alerts.configure(alerted, (2 * MICRO,), api.clock.now())

    async def spend(user_id: int, n: int, credits: int) -> list[str]:
        await counter.during(
            ledger.spend(
                ("user_id", user_id),
                user_id=user_id,
                organization_id=None,
                agent_id="bot",
                activity="answer",
                credits=credits,
                quantity=None,
                idem=_key("alerts", n),
                now=api.clock.now(),
            )
        )
        return list(counter.statements)

    plain = await spend(plain_user, 1, MICRO)
    above = await spend(alerted_user, 2, MICRO)  # 10 -> 9: above the level of 2
    crossing = await spend(alerted_user, 3, 8 * MICRO)  # 9 -> 1: crosses it

    assert above == plain
    added = [s for s in crossing if s not in plain]
    if connections.get("default").capabilities.dialect == "postgres":
        assert len(plain) == 2
        assert len(crossing) == len(plain) + 1
        assert [s.split(" AS (")[0] for s in added] == ["WITH e"]
        assert "INSERT INTO alerts" in added[0]
    else:
        assert len(crossing) == len(plain) + 2
        assert [s.split(" (")[0] for s in added] == ["INSERT INTO events", "INSERT INTO alerts"]


# ------------------------------------------------------------------------------- webhook delivery log (issue 13)

DELIVERY_LOG = """
query Log($id: ID!) {
  webhookEndpoint(id: $id) {
    url
    deliveries(first: 100) {
      edges { node { status attempts lastStatusCode event { id type sequence accountId }
                     attemptLog { attempt statusCode latencyMs responseBody error startedAt } } }
    }
  }
}
"""
DELIVERY_LOG_TABLES = ["api_tokens", "events", "webhook_attempts", "webhook_deliveries", "webhook_endpoints"]


async def test_the_delivery_log_runs_the_same_statements_for_5_deliveries_as_for_100(
    api: Api, counter: StatementCounter
) -> None:
    admin = await api.admin()
    now = api.clock.now()
    counted: dict[int, list[str]] = {}
    for rows in (SMALL, LARGE):
        hook = await webhook_endpoint(now, url=f"https://hooks.example.com/{rows}")
        for _ in range(rows):
            sent = await webhook_event(now, account_id=None, type=EventType.BALANCE_LOW)
            await webhook_delivery(hook, sent, now, WebhookDeliveryStatus.FAILED, answers=(500, None))

        body = await counter.during(api.post(DELIVERY_LOG, {"id": gid("WebhookEndpoint", hook.id)}, admin))

        assert "errors" not in body, body
        edges = body["data"]["webhookEndpoint"]["deliveries"]["edges"]
        assert len(edges) == rows
        assert all([a["statusCode"] for a in e["node"]["attemptLog"]] == [500, None] for e in edges)
        assert all(e["node"]["event"]["type"] == "balance.low" for e in edges)
        counted[rows] = list(counter.statements)
        print(f"\ndelivery log, {rows} rows: {len(counted[rows])} statements", *counted[rows], sep="\n  ")

    assert len(counted[SMALL]) == len(counted[LARGE]) == len(DELIVERY_LOG_TABLES)
    assert tables_read(counted[SMALL]) == tables_read(counted[LARGE]) == DELIVERY_LOG_TABLES


# ------------------------------------------------------------------------- the My Credit page's own documents

PAGE_DOCUMENTS = Path(__file__).resolve().parents[2] / "web" / "src" / "lib" / "documents.ts"


def page_document(name: str) -> str:
    """The operation ``name`` as the page sends it (web/src/lib/documents.ts), with the fragments it spreads."""
    texts = re.findall(r"graphql\(`(.*?)`\)", PAGE_DOCUMENTS.read_text(), re.DOTALL)
    defined = {re.search(r"(?:query|fragment|mutation|subscription) (\w+)", text).group(1): text for text in texts}  # type: ignore[union-attr]
    wanted, seen = [name], []
    while wanted:
        current = wanted.pop()
        if current not in seen:
            seen.append(current)
            wanted += re.findall(r"\.\.\.(\w+)", re.sub(r"\.\.\. on \w+", "", defined[current]))
    return "\n".join(defined[n] for n in seen)


async def test_the_pages_own_documents_run_the_same_statements_for_5_rows_as_for_100(
    api: Api, counter: StatementCounter
) -> None:
    """The Overview (its one query), Transaction, Billing and Payment Method tabs, with the page's variables."""
    pages = {
        "OverviewMe": lambda account: {
            "from": (api.clock.now() - timedelta(days=30)).isoformat(),
            "to": api.clock.now().isoformat(),
        },
        "Transactions": lambda account: {"accountId": account, "first": 25},
        "Billing": lambda account: {"accountId": account},
        "PaymentMethods": lambda account: {"accountId": account},
    }
    counted: dict[str, dict[int, int]] = {name: {} for name in pages}
    for rows in (SMALL, LARGE):
        token = await _user_with_history(api, f"page-{rows}@example.com", rows)
        account = gid("CreditAccount", (await CreditAccount.get(user__email=f"page-{rows}@example.com")).id)
        for name, variables in pages.items():
            body = await counter.during(api.post(page_document(name), variables(account), token=token))

            assert "errors" not in body, (name, body)
            counted[name][rows] = len(counter.statements)
            if name == "Transactions":
                assert len(body["data"]["node"]["transactions"]["edges"]) == min(rows, 25)
            if name == "OverviewMe":
                assert len(body["data"]["me"]["organizations"]) == rows
                assert body["data"]["me"]["credit"]["balance"]["total"] == MY_BALANCE[rows]["total"]
    print("\nstatements per page document (5 rows, 100 rows):", counted)
    assert all(by_rows[SMALL] > 0 for by_rows in counted.values())
    assert {name: by_rows[SMALL] for name, by_rows in counted.items()} == {
        name: by_rows[LARGE] for name, by_rows in counted.items()
    }
