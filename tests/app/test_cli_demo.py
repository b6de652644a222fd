"""``make run`` prints a sign-in link to the demo user's My Credit page on every run (``creditline demo``):
its code is new each time, works once, and opens a portal session of the demo user's account. The demo data
gives the page something to show (issue 14, point 2), made once."""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.processes import cli, served

LINK = re.compile(r"^  (http://127\.0\.0\.1:8000/my-credit/\?code=[A-Za-z0-9_-]{43})$", re.M)


def exchange(url: str, code: str) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(
        f"{url}/portal/session",
        data=json.dumps({"code": code}).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_demo_prints_a_new_single_use_sign_in_link_on_every_run(tmp_path: Path) -> None:
    env = {**os.environ, "CREDITLINE_DATABASE_URL": f"sqlite://{tmp_path}/demo.sqlite3"}
    env.pop("CREDITLINE_PUBLIC_URL", None)
    assert cli(env, "migrate").returncode == 0

    first, again = cli(env, "demo"), cli(env, "demo")

    assert (first.returncode, again.returncode) == (0, 0)
    assert "My Credit of demo@creditline.local (sign-in link, works once, for 10 min):" in first.stdout
    assert again.stdout.startswith("demo data exists already")
    links = [LINK.findall(first.stdout), LINK.findall(again.stdout)]
    assert [len(found) for found in links] == [1, 1]
    codes = [parse_qs(urlsplit(found[0]).query)["code"][0] for found in links]
    assert codes[0] != codes[1]
    assert "not served" not in first.stdout + again.stdout

    with served(env) as (url, _):
        status, session = exchange(url, codes[1])
        assert status == 200, session
        reused, _ = exchange(url, codes[1])
        assert reused == 401
        request = urllib.request.Request(
            f"{url}/graphql",
            data=json.dumps({"query": "{ me { email } }"}).encode(),
            headers={"content-type": "application/json", "authorization": f"Bearer {session['token']}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read()) == {"data": {"me": {"email": "demo@creditline.local"}}}


DEMO_QUERY = """{ me { credit {
  balance { total free paid held available }
  lots(first: 10) { edges { node { kind source amount remaining expiresAt reason } } }
  usage(first: 100) { edges { node { agentId activity credits occurredAt } } }
  transactions(first: 10) { edges { node { type status credits amount { amount currency } invoice { number } } } }
  subscription { status planId cancelAtPeriodEnd }
  paymentMethods { brand last4 isDefault }
} } }"""
SPENDS = re.compile(r"^  usage +(\d+) spends over 6 days by research-agent, support-agent", re.M)


def graphql(url: str, token: str, query: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def test_the_demo_data_gives_the_page_usage_payments_and_an_expiring_lot(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "CREDITLINE_DATABASE_URL": f"sqlite://{tmp_path}/demo.sqlite3",
        "CREDITLINE_GATEWAY": "sandbox",
    }
    env.pop("CREDITLINE_PUBLIC_URL", None)
    assert cli(env, "migrate").returncode == 0
    started = datetime.now(UTC)

    first = cli(env, "demo")
    again = cli(env, "demo")

    assert (first.returncode, again.returncode) == (0, 0), first.stderr
    assert (
        "  payments       a saved tok_visa card; a top-up of 500 credits (succeeded, with its invoice);"
        " subscription starter-monthly (active)\n"
        "  expiring       20 Free credits expire in 3 days\n"
    ) in first.stdout
    assert again.stdout.startswith("demo data exists already")
    spends = SPENDS.findall(first.stdout)
    assert len(spends) == 1
    code = parse_qs(urlsplit(LINK.findall(again.stdout)[0]).query)["code"][0]
    with served(env) as (url, _):
        status, session = exchange(url, code)
        assert status == 200, session
        credit = graphql(url, str(session["token"]), DEMO_QUERY)["data"]["me"]["credit"]
    assert cli(env, "audit").stdout == "audit: 1 accounts checked, 0 problems\n"

    usage = [edge["node"] for edge in credit["usage"]["edges"]]
    # Every day since sign-up, 6 days ago, at 09:00, 11:00, 14:00 and 16:00 UTC (today's until now): the
    # second run added none.
    assert len(usage) == int(spends[0]) >= 24
    assert {u["agentId"] for u in usage} == {"research-agent", "support-agent"}
    assert {u["activity"] for u in usage} == {"answer", "web_search", "transcription"}
    days = {u["occurredAt"][:10] for u in usage}
    assert len(days) >= 6
    assert all(datetime.fromisoformat(u["occurredAt"]) < started for u in usage)
    spent = sum(Decimal(u["credits"]) for u in usage)
    # 100 Free credits of signup bonus spent first, then (not needed here) paid: 500 bought, 1,100 of the plan.
    assert spent < 100
    assert credit["balance"] == {
        "total": str(Decimal(1720) - spent),
        "free": str(Decimal(120) - spent),
        "paid": "1600",
        "held": "0",
        "available": str(Decimal(1720) - spent),
    }
    lots = [edge["node"] for edge in credit["lots"]["edges"]]
    welcome = [lot for lot in lots if lot["reason"] == "Welcome offer"]
    assert [(lot["kind"], lot["source"], lot["amount"], lot["remaining"]) for lot in welcome] == [
        ("FREE", "PROMOTION", "20", "20")
    ]
    left = datetime.fromisoformat(welcome[0]["expiresAt"]) - started
    assert timedelta(days=3, hours=1) <= left < timedelta(days=3, hours=1, minutes=5)  # from when the command ran
    assert sorted((lot["source"], lot["amount"]) for lot in lots) == [
        ("PROMOTION", "20"),
        ("SIGNUP_BONUS", "100"),
        ("SUBSCRIPTION", "1100"),
        ("TOP_UP", "500"),
    ]
    transactions = [edge["node"] for edge in credit["transactions"]["edges"]]
    assert sorted((t["type"], t["status"], t["credits"], t["invoice"] is not None) for t in transactions) == [
        ("SUBSCRIPTION", "SUCCEEDED", "1100", True),
        ("TOP_UP", "SUCCEEDED", "500", True),
    ]
    assert credit["subscription"] == {"status": "ACTIVE", "planId": "starter-monthly", "cancelAtPeriodEnd": False}
    assert credit["paymentMethods"] == [{"brand": "visa", "last4": "4242", "isDefault": True}]
