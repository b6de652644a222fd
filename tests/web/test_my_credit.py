"""The My Credit page end to end (issue 14, Tests): what a person sees in Chromium, against the API's own answers.

Selectors are the roles and accessible names web/README.md lists. Screenshots of every tab, at 1280 and
360 px, go to test-artifacts/web/."""

from __future__ import annotations

import csv
import io
import json
import re
import time
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Route, expect

from tests.support.browser import ARTIFACTS, ROOT, Server, Watched, screenshot, start_server
from tests.support.stripe_standin import API_KEY, WEBHOOK_SECRET, StripeStandIn, running_in_thread, sign

pytestmark = pytest.mark.xdist_group("web")  # one server and one browser for the module (make pytest: loadgroup)

TABS = ["Overview", "Transaction", "Billing", "Payment Method"]
BALANCE = "{ me { credit { balance { total free paid held available } } } }"
AXE = ROOT / "web" / "node_modules" / "axe-core" / "axe.min.js"


def credits(value: str) -> str:
    """The page's form of a Credits string (web/src/lib/credits.ts): thousands grouped, no trailing zeros."""
    whole, _, fraction = value.partition(".")
    minus = "−" if whole.startswith("-") else ""
    whole = f"{int(whole.lstrip('-')):,}"
    fraction = fraction.rstrip("0")
    return f"{minus}{whole}.{fraction}" if fraction else f"{minus}{whole}"


def sign_in(page: Page, link: str) -> None:
    page.goto(link)
    expect(page.get_by_role("tablist", name="My Credit")).to_be_visible()
    expect(page.get_by_role("status").filter(has_text=re.compile("^Live$"))).to_be_visible()


def balance_of(server: Server) -> dict[str, str]:
    balance: dict[str, str] = server.gql("user", BALANCE)["me"]["credit"]["balance"]
    return balance


def expect_balance(page: Page, balance: dict[str, str]) -> None:
    expect(page.get_by_label(f"Available: {credits(balance['available'])} credits")).to_be_visible()
    chips = page.get_by_role("list", name="Balance by kind").get_by_role("listitem")
    expect(chips).to_have_text([f"Free {credits(balance['free'])}", f"Paid {credits(balance['paid'])}"])


def tab(page: Page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()
    expect(page.get_by_role("tabpanel", name=name, exact=True)).to_be_visible()


@pytest.fixture
def signed_in(page: Watched, server: Server) -> Iterator[Watched]:
    sign_in(page.page, server.portal_link())
    yield page
    page.assert_no_console_errors()


def test_a_portal_link_signs_in_and_shows_the_balance_the_api_has(page: Watched, server: Server) -> None:
    sign_in(page.page, f"{server.url}/my-credit/?code={server.first_code}")  # the link `creditline demo` printed

    expect(page.page.get_by_role("tab")).to_have_text(TABS)
    expect(page.page.get_by_role("tab", name="Overview")).to_have_attribute("aria-selected", "true")
    expect_balance(page.page, balance_of(server))
    expect(page.page.get_by_role("list", name="Expiring credit").get_by_role("listitem").first).to_contain_text(
        "20 Free credits expire in 3 days"
    )
    assert "code=" not in page.page.url  # the used code leaves the address bar (and the history)
    page.page.reload()  # the session outlives a reload (sessionStorage), the code does not need to work again
    expect_balance(page.page, balance_of(server))
    page.assert_no_console_errors()


def test_a_used_link_says_so(page: Watched, server: Server) -> None:
    link = server.portal_link()
    sign_in(page.page, link)
    fresh = page.page.context.new_page()
    fresh.goto(link)
    expect(fresh.get_by_role("alert")).to_contain_text("This sign-in link has already been used or has expired.")


def test_an_agents_spend_updates_the_page_without_a_reload(signed_in: Watched, server: Server) -> None:
    page = signed_in.page
    expect_balance(page, balance_of(server))
    page.evaluate("window.__notReloaded = true")

    spent = server.gql(
        "agent",
        "mutation($u: ID!) { spendCredits(input: {userId: $u, agentId: 'browser-test', activity: 'answer',"
        " credits: '2.5', idempotencyKey: 'web-live-1'}) { __typename } }".replace("'", '"'),
        {"u": server.user_id},
    )
    assert spent == {"spendCredits": {"__typename": "SpendCreditsSuccess"}}

    expect_balance(page, balance_of(server))
    assert page.evaluate("window.__notReloaded") is True


def test_a_top_up_with_tok_visa_appears_in_transaction_with_its_invoice(signed_in: Watched, server: Server) -> None:
    page = signed_in.page
    page.get_by_role("button", name="Top up", exact=True).click()
    dialog = page.get_by_role("dialog", name="Top up")
    dialog.get_by_role("textbox", name="Credits").fill("250")
    expect(dialog).to_contain_text("Price: $2.50")
    dialog.get_by_role("combobox", name="Pay with").select_option(label="Test card: Visa 4242 (succeeds)")
    expect(dialog.get_by_role("option", name="New card")).to_have_count(0)  # a card typed in is legacy's
    dialog.get_by_role("button", name="Pay $2.50").click()
    expect(dialog.get_by_role("status")).to_contain_text("Payment succeeded")
    signed_in.assert_no_stripe_js()  # sandbox's test cards need no Stripe.js
    invoice = dialog.get_by_role("link", name=re.compile(r"^Invoice INV-\d+$"))
    number = (invoice.text_content() or "").removeprefix("Invoice ")
    dialog.get_by_role("button", name="Done").click()

    newest = server.gql(
        "user", "{ me { credit { transactions(first: 1) { edges { node { status credits invoice { number } } } } } } }"
    )["me"]["credit"]["transactions"]["edges"][0]["node"]
    assert newest == {"status": "SUCCEEDED", "credits": "250", "invoice": {"number": number}}
    expect_balance(page, balance_of(server))
    tab(page, "Transaction")
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=f"Invoice {number}"))
    expect(row).to_contain_text("250")
    with page.context.expect_page() as opened:
        row.get_by_role("link", name=f"Invoice {number}").click()
    invoice_page = opened.value
    invoice_page.wait_for_load_state()
    assert urlsplit(invoice_page.url).path.startswith("/invoices/")
    expect(invoice_page.locator("body")).to_contain_text(number)


def test_a_declined_card_shows_the_reason_and_buys_nothing(signed_in: Watched, server: Server) -> None:
    page = signed_in.page
    before = balance_of(server)
    page.get_by_role("button", name="Top up", exact=True).click()
    dialog = page.get_by_role("dialog", name="Top up")
    dialog.get_by_role("textbox", name="Credits").fill("100")
    dialog.get_by_role("combobox", name="Pay with").select_option(label="Test card: Visa 0002 (declined)")
    dialog.get_by_role("button", name="Pay $1.00").click()

    expect(dialog.get_by_role("alert")).to_have_text(re.compile(r"Payment declined: Your card was declined\."))
    assert balance_of(server) == before


def test_cancel_and_resume_the_subscription(signed_in: Watched, server: Server) -> None:
    page = signed_in.page
    tab(page, "Billing")
    panel = page.get_by_role("tabpanel", name="Billing")
    expect(panel.get_by_role("heading", name="Subscription")).to_be_visible()
    expect(panel).to_contain_text("Renews on")

    panel.get_by_role("button", name="Cancel at period end").click()
    expect(panel.get_by_role("button", name="Resume subscription")).to_be_visible()
    expect(panel).to_contain_text("Ends on")
    query = "{ me { credit { subscription { status cancelAtPeriodEnd } } } }"
    assert server.gql("user", query)["me"]["credit"]["subscription"] == {"status": "ACTIVE", "cancelAtPeriodEnd": True}

    panel.get_by_role("button", name="Resume subscription").click()
    expect(panel.get_by_role("button", name="Cancel at period end")).to_be_visible()
    expect(panel).to_contain_text("Renews on")
    assert server.gql("user", query)["me"]["credit"]["subscription"] == {"status": "ACTIVE", "cancelAtPeriodEnd": False}


def test_the_csv_downloads_the_transactions(signed_in: Watched, server: Server) -> None:
    page = signed_in.page
    tab(page, "Transaction")
    with page.expect_download() as downloading:
        page.get_by_role("button", name="Download CSV").click()
    download = downloading.value
    assert download.suggested_filename == "transactions.csv"
    rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text())))
    edges = server.gql("user", "{ me { credit { transactions(first: 100) { edges { node { id } } } } } }")
    assert len(rows) == len(edges["me"]["credit"]["transactions"]["edges"]) >= 2


def test_every_tab_at_1280_and_360_px_has_no_serious_accessibility_violation(browser: Browser, server: Server) -> None:
    # axe-core is injected as a script: its own context lets it past the page's CSP (the other tests keep it).
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    sign_in(page, server.portal_link())
    violations: dict[str, list[str]] = {}
    for width in (1280, 360):
        page.set_viewport_size({"width": width, "height": 900 if width > 400 else 780})
        for name in TABS:
            tab(page, name)
            page.wait_for_load_state("networkidle")
            screenshot(page, f"{name.lower().replace(' ', '-')}-{width}")
            if AXE.is_file():
                page.add_script_tag(path=str(AXE))
                found = page.evaluate(
                    "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
                    ".filter(v => v.impact === 'serious' || v.impact === 'critical')"
                    ".map(v => v.id + ': ' + v.nodes.map(n => n.target.join(' ')).join(', '))"
                )
                if found:
                    violations[f"{name} at {width}px"] = found
        # No horizontal scrolling at 360 px; the tabs keep to one row (it scrolls sideways instead of wrapping).
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), width
        tops = page.get_by_role("tab").evaluate_all("tabs => tabs.map(t => Math.round(t.getBoundingClientRect().top))")
        assert len(tops) == len(TABS), (width, tops)
        assert len(set(tops)) == 1, (width, tops)
    context.close()
    assert violations == {}
    assert errors == []
    if not AXE.is_file():
        pytest.skip(f"axe-core is not installed ({AXE}): screenshots taken, accessibility not checked")


HINTS = """() => { const wrap = document.querySelector('[role=tablist]').parentElement;
  const shown = (side) => getComputedStyle(wrap, side).opacity === '1';
  return {left: shown('::before'), right: shown('::after')}; }"""


def expect_hints(page: Page, *, left: bool, right: bool) -> None:
    """The fades at the tab row's edges come to these (a 0.15 s transition)."""
    deadline = time.monotonic() + 5
    while (shown := page.evaluate(HINTS)) != {"left": left, "right": right} and time.monotonic() < deadline:
        time.sleep(0.05)
    assert shown == {"left": left, "right": right}


def test_at_360_px_the_tab_row_shows_that_it_scrolls(signed_in: Watched) -> None:
    page = signed_in.page
    page.set_viewport_size({"width": 360, "height": 780})
    row = page.get_by_role("tablist", name="My Credit")
    assert row.evaluate("r => r.scrollWidth > r.clientWidth")  # four tabs are wider than 360 px
    expect(page.get_by_role("tab", name="Overview")).to_have_attribute("aria-selected", "true")
    expect_hints(page, left=False, right=True)
    screenshot(page, "tabs-360-more-right")
    row.locator("xpath=..").screenshot(path=str(ARTIFACTS / "tabs-360-more-right-row.png"))

    tab(page, "Payment Method")  # the row scrolls to the last tab: nothing more on the right, some on the left
    expect_hints(page, left=True, right=False)
    assert row.evaluate("r => r.scrollLeft > 0")
    screenshot(page, "tabs-360-more-left")
    row.locator("xpath=..").screenshot(path=str(ARTIFACTS / "tabs-360-more-left-row.png"))

    page.set_viewport_size({"width": 1280, "height": 900})  # wide enough: no hint at all
    expect_hints(page, left=False, right=False)


def test_graphiql_renders_and_runs_a_query_with_only_the_server_reachable(page: Watched, server: Server) -> None:
    origin = server.url
    blocked: list[str] = []

    def only_the_server(route: Route) -> None:
        if route.request.url.startswith(origin):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page.page.context.route("**/*", only_the_server)
    graphiql = page.page
    graphiql.goto(f"{origin}/graphql")
    editor = graphiql.locator(".graphiql-query-editor .CodeMirror").first
    expect(editor).to_be_visible()
    graphiql.evaluate(
        "document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror.setValue("
        "'{ billingConfig { gateway dashboardTabs } }')"
    )
    graphiql.get_by_role("button", name=re.compile("Execute query")).click()
    result = graphiql.locator(".result-window")
    expect(result).to_contain_text('"gateway": "sandbox"')
    expect(result).to_contain_text('"PAYMENT_METHOD"')
    assert blocked == []
    page.assert_no_console_errors()


# ------------------------------------------------------------------ organizations: BILLING and MEMBER


def created(answer: dict[str, Any], typename: str) -> Any:
    (result,) = answer.values()
    assert result["__typename"] == typename, result
    return result


@pytest.fixture(scope="module")
def organization(server: Server) -> dict[str, str]:
    """Acme Research, whose credit pool the demo user owns: a BILLING member and a plain MEMBER (budget 50),
    both spent 12."""
    users = {}
    for role in ("billing", "member"):
        made = server.gql(
            "admin",
            "mutation($e: String!) { createUser(input: {email: $e}) { __typename ... on CreateUserSuccess"
            " { user { id } } } }",
            {"e": f"{role}@example.com"},
        )
        users[role] = str(created(made, "CreateUserSuccess")["user"]["id"])
    org = server.gql(
        "user",
        'mutation { createOrganization(input: {name: "Acme Research"}) { __typename'
        " ... on CreateOrganizationSuccess { organization { id } } } }",
    )
    org_id = str(created(org, "CreateOrganizationSuccess")["organization"]["id"])
    pool = server.gql(
        "user",
        "mutation($o: ID!) { enableCreditPool(input: {organizationId: $o}) { __typename"
        " ... on EnableCreditPoolSuccess { creditPool { id } } } }",
        {"o": org_id},
    )
    pool_id = str(created(pool, "EnableCreditPoolSuccess")["creditPool"]["id"])
    granted = server.gql(
        "admin",
        'mutation($a: ID!) { grantCredits(input: {accountId: $a, credits: "1000", kind: PAID,'
        ' idempotencyKey: "web-pool"}) { __typename } }',
        {"a": pool_id},
    )
    created(granted, "GrantCreditsSuccess")
    for role, roles in (("billing", "[BILLING]"), ("member", "[MEMBER]")):
        added = server.gql(
            "admin",
            f"mutation($o: ID!, $u: ID!) {{ addMember(input: {{organizationId: $o, userId: $u, roles: {roles}}})"
            " { __typename } }",
            {"o": org_id, "u": users[role]},
        )
        created(added, "AddMemberSuccess")
        spent = server.gql(
            "agent",
            "mutation($o: ID!, $u: ID!, $k: String!) { spendCredits(input: {userId: $u, organizationId: $o,"
            ' agentId: "pool-agent", activity: "web_search", credits: "12", idempotencyKey: $k}) { __typename } }',
            {"o": org_id, "u": users[role], "k": f"web-pool-{role}"},
        )
        created(spent, "SpendCreditsSuccess")
    budget = server.gql(
        "user",
        'mutation($o: ID!, $u: ID!) { setMemberBudget(input: {organizationId: $o, userId: $u, monthlyCredits: "50"})'
        " { __typename } }",
        {"o": org_id, "u": users["member"]},
    )
    created(budget, "SetMemberBudgetSuccess")
    return {
        "id": org_id,
        "billing": server.user_token("billing@example.com"),
        "member": server.user_token("member@example.com"),
    }


def test_a_billing_member_sees_the_organizations_usage_and_a_member_only_their_own(
    page: Watched, server: Server, organization: dict[str, str]
) -> None:
    seen = {}
    for role in ("billing", "member"):
        page.page.goto(f"{server.url}/my-credit/#token={organization[role]}")
        account = page.page.get_by_role("combobox", name="Account")
        account.select_option(label=account.locator("option", has_text="Acme Research").inner_text())
        expect(page.page.get_by_role("heading", level=1)).to_have_text("Acme Research")
        page.page.wait_for_load_state("networkidle")
        main = page.page.get_by_role("main")
        if role == "member":
            own = main.get_by_role("region", name="Your usage, last 30 days")
            expect(own).to_contain_text("Credits used12")  # the member's own 12, not billing's
            chart = own.get_by_role("img", name=re.compile("^Your daily usage in Acme Research"))
            expect(chart).to_have_accessible_name("Your daily usage in Acme Research: 12 credits in 30 days")
            budget = main.get_by_role("region", name="Your budget this month")
            expect(budget).to_contain_text("member@example.com")
            expect(budget).to_contain_text("12 of 50 this month")
            expect(budget.get_by_role("meter", name="Your spending of your monthly budget")).to_have_attribute(
                "aria-valuenow", "24"
            )
            expect(main).not_to_contain_text("billing@example.com")
            expect(main).not_to_contain_text("976")  # nor the pool (1,000 less both members' 12)
        else:
            expect(page.page.get_by_role("tabpanel")).to_contain_text("member@example.com")
        screenshot(page.page, f"organization-{role}-1280")
        seen[role] = [
            page.page.get_by_role("heading", name=name, exact=True).count()
            for name in ("Usage by member", "Member budgets", "Your usage, last 30 days", "Your budget this month")
        ]
        page.page.evaluate("sessionStorage.clear()")
    assert seen == {"billing": [1, 1, 0, 0], "member": [0, 0, 1, 1]}
    page.assert_no_console_errors()


def test_auto_top_up_not_set_up_is_off_until_saved_and_then_the_page_agrees_with_the_api(
    page: Watched, server: Server
) -> None:
    made = server.gql(
        "admin",
        'mutation { createUser(input: {email: "auto@example.com", externalId: "auto-web"}) {'
        " __typename ... on CreateUserSuccess { user { id } } } }",
    )["createUser"]
    assert made["__typename"] == "CreateUserSuccess", made
    user_id = made["user"]["id"]
    auto_top_up = "query($id: ID!) { node(id: $id) { ... on User { credit { autoTopUp {"
    auto_top_up += " enabled threshold amount monthlyCap } } } } }"
    sign_in(page.page, server.portal_link(userId=user_id))
    tab(page.page, "Payment Method")
    panel = page.page.get_by_role("tabpanel", name="Payment Method")
    section = panel.get_by_role("region", name="Auto top-up")
    expect(section).to_contain_text("Not set up")
    switch = section.get_by_role("checkbox", name="Auto top-up on")
    expect(switch).not_to_be_checked()
    threshold = section.get_by_role("textbox", name="When available credit falls below", exact=True)
    expect(threshold).to_have_value("")
    expect(threshold).to_have_attribute("placeholder", "50")
    expect(section).to_contain_text("Suggested: 50")
    assert server.gql("admin", auto_top_up, {"id": user_id})["node"]["credit"]["autoTopUp"] is None

    panel.get_by_role("button", name="Add card").click()
    expect(panel.get_by_role("listitem", name="Visa ending in 4242")).to_be_visible()
    switch.check()
    threshold.fill("50")
    section.get_by_role("textbox", name="Credits to buy", exact=True).fill("100")
    section.get_by_role("textbox", name="Monthly cap (credits)", exact=True).fill("1000")
    section.get_by_role("button", name="Save auto top-up").click()
    expect(section.get_by_role("status").filter(has_text="Auto top-up saved")).to_be_visible()
    expect(section).not_to_contain_text("Not set up")
    expect(switch).to_be_checked()
    saved = server.gql("admin", auto_top_up, {"id": user_id})["node"]["credit"]["autoTopUp"]
    assert saved == {"enabled": True, "threshold": "50", "amount": "100", "monthlyCap": "1000"}
    page.assert_no_stripe_js()  # the sandbox's test cards need no Stripe.js
    page.assert_no_console_errors()


# ------------------------------------------------------------------ the stripe gateway


@pytest.fixture(scope="module")
def stripe_server(web_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The stripe gateway without keys: billingConfig answers, payments are refused (enough for the tabs)."""
    yield from start_server(tmp_path_factory.mktemp("web-stripe"), "stripe")


def test_the_payment_method_tab_is_absent_on_the_stripe_gateway(page: Watched, stripe_server: Server) -> None:
    tabs = stripe_server.gql("user", "{ billingConfig { dashboardTabs } }")["billingConfig"]["dashboardTabs"]
    assert "PAYMENT_METHOD" not in tabs

    sign_in(page.page, stripe_server.portal_link())

    expect(page.page.get_by_role("tab")).to_have_text(["Overview", "Transaction", "Billing"])
    expect(page.page.get_by_role("tab", name="Payment Method")).to_have_count(0)
    screenshot(page.page, "overview-stripe-1280")
    tab(page.page, "Billing")
    page.page.wait_for_load_state("networkidle")
    page.assert_no_stripe_js()  # Checkout takes the card on Stripe's own page
    page.assert_no_console_errors()


# ------------------------------------------------------------------ the legacy gateway: Stripe.js card entry

STRIPE_JS_STANDIN = Path(__file__).with_name("stripe_js_standin.js")
PUBLISHABLE_KEY = "pk_test_creditline_page"


@pytest.fixture(scope="module")
def legacy_stripe() -> Iterator[StripeStandIn]:
    """The Stripe API stand-in (tests/support/stripe_standin.py) on a thread, the legacy server's Stripe. Each
    server has its own: Creditline's idempotency keys are made from its own ids, which two databases share."""
    with running_in_thread() as standin:
        yield standin


@pytest.fixture(scope="module")
def checkout_stripe() -> Iterator[StripeStandIn]:
    """The stripe server's Stripe: its API, and the Checkout and customer-portal pages the browser opens."""
    with running_in_thread() as standin:
        yield standin


def stripe_env(standin: StripeStandIn, **more: str) -> dict[str, str]:
    return {"CREDITLINE_STRIPE_SECRET_KEY": API_KEY, "CREDITLINE_STRIPE_API_BASE": standin.url, **more}


@pytest.fixture(scope="module")
def legacy_server(
    web_build: Path, tmp_path_factory: pytest.TempPathFactory, legacy_stripe: StripeStandIn
) -> Iterator[Server]:
    settings = stripe_env(legacy_stripe, CREDITLINE_STRIPE_PUBLISHABLE_KEY=PUBLISHABLE_KEY)
    yield from start_server(tmp_path_factory.mktemp("web-legacy"), "legacy", settings=settings, demo_gateway="sandbox")


def new_user(server: Server, email: str) -> str:
    made = server.gql(
        "admin",
        "mutation($e: String!) { createUser(input: {email: $e}) { __typename ... on CreateUserSuccess"
        " { user { id } } } }",
        {"e": email},
    )
    return str(created(made, "CreateUserSuccess")["user"]["id"])


def test_on_legacy_a_card_typed_into_stripe_js_is_added_through_the_api(
    page: Watched, legacy_server: Server, legacy_stripe: StripeStandIn
) -> None:
    stripe_standin = legacy_stripe
    served: list[str] = []

    def stripe_js(route: Route) -> None:  # Stripe.js's stand-in, in place of https://js.stripe.com/v3
        served.append(route.request.url)
        route.fulfill(path=STRIPE_JS_STANDIN, content_type="text/javascript; charset=utf-8")

    page.page.route("https://js.stripe.com/**", stripe_js)
    user_id = new_user(legacy_server, "stripe-js@example.com")
    cards = "query($id: ID!) { node(id: $id) { ... on User { credit { paymentMethods { brand last4 isDefault } } } } }"
    sign_in(page.page, legacy_server.portal_link(userId=user_id))
    assert served == []  # the Overview needs no Stripe.js
    tab(page.page, "Payment Method")
    panel = page.page.get_by_role("tabpanel", name="Payment Method")
    card = panel.get_by_role("group", name="Card", exact=True)
    number = card.get_by_role("textbox", name="Card number")
    expect(number).to_be_visible()
    assert served == ["https://js.stripe.com/v3"]
    expect(panel.get_by_role("textbox", name="Stripe PaymentMethod ID")).to_have_count(0)

    number.fill("4242 4242 4242")  # Stripe.js refuses a short number before anything reaches the API
    panel.get_by_role("button", name="Add card").click()
    expect(panel.get_by_role("alert")).to_have_text("Your card number is incomplete.")
    assert legacy_server.gql("admin", cards, {"id": user_id})["node"]["credit"]["paymentMethods"] == []

    number.fill("4242 4242 4242 4242")
    expect(panel.get_by_role("alert")).to_have_count(0)  # typing again takes the old refusal away
    screenshot(page.page, "payment-method-legacy-1280")
    panel.get_by_role("button", name="Add card").click()
    expect(panel.get_by_role("listitem", name="Visa ending in 4242")).to_be_visible()
    expect(panel.get_by_role("status").filter(has_text="Visa ending in 4242 was added.")).to_be_visible()
    expect(number).to_have_value("")  # the field is cleared for another card

    saved = legacy_server.gql("admin", cards, {"id": user_id})["node"]["credit"]["paymentMethods"]
    assert saved == [{"brand": "visa", "last4": "4242", "isDefault": True}]
    # Stripe.js made pm_card_visa with the page's publishable key; the server attached it to the customer.
    assert page.page.evaluate("window.__stripeJsStandIn.keys") == [PUBLISHABLE_KEY]
    assert len(stripe_standin.calls("POST", "/v1/payment_methods/pm_card_visa/attach")) == 1
    assert served == ["https://js.stripe.com/v3"]  # loaded once
    screenshot(page.page, "payment-method-legacy-added-1280")
    page.assert_no_console_errors()


ACCOUNT_OF_USER = """query($id: ID!) { node(id: $id) { ... on User { credit {
  balance { total paid available }
  paymentMethods { last4 }
  transactions(first: 20) { edges { node { type status credits failureReason invoice { number } } } }
} } } }"""


def test_on_legacy_a_user_with_no_card_tops_up_with_a_card_typed_into_stripe_js(
    page: Watched, legacy_server: Server, legacy_stripe: StripeStandIn
) -> None:
    served: list[str] = []

    def stripe_js(route: Route) -> None:  # Stripe.js's stand-in, in place of https://js.stripe.com/v3
        served.append(route.request.url)
        route.fulfill(path=STRIPE_JS_STANDIN, content_type="text/javascript; charset=utf-8")

    def account() -> dict[str, Any]:
        found: dict[str, Any] = legacy_server.gql("admin", ACCOUNT_OF_USER, {"id": user_id})["node"]["credit"]
        return found

    def top_ups() -> list[dict[str, Any]]:
        return [e["node"] for e in account()["transactions"]["edges"] if e["node"]["type"] == "TOP_UP"]

    page.page.route("https://js.stripe.com/**", stripe_js)
    user_id = new_user(legacy_server, "top-up-new-card@example.com")
    before = account()
    assert before["paymentMethods"] == []
    requests_before = len(legacy_stripe.requests)
    sign_in(page.page, legacy_server.portal_link(userId=user_id))
    assert served == []  # no Stripe.js until the dialog needs the card field

    page.page.get_by_role("button", name="Top up", exact=True).click()
    dialog = page.page.get_by_role("dialog", name="Top up")
    dialog.get_by_role("textbox", name="Credits").fill("500")
    expect(dialog.get_by_role("combobox", name="Pay with")).to_have_value("new")  # no saved card: New card
    number = dialog.get_by_role("group", name="Card", exact=True).get_by_role("textbox", name="Card number")
    expect(number).to_be_visible()
    assert served == ["https://js.stripe.com/v3"]
    expect(dialog).to_contain_text("This card is charged once and not saved.")
    pay = dialog.get_by_role("button", name=re.compile(r"^Pay \$"))
    expect(pay).to_be_enabled()

    # a card the bank declines: the reason, and no credit
    number.fill("4000 0000 0000 0002")
    screenshot(page.page, "top-up-legacy-new-card-1280")
    pay.click()
    expect(dialog.get_by_role("alert")).to_have_text("Payment declined: Your card was declined.")
    screenshot(page.page, "top-up-legacy-new-card-declined-1280")
    assert account()["balance"] == before["balance"]
    assert [(t["status"], t["credits"]) for t in top_ups()] == [("FAILED", "500")]

    # a good card: 500 credits, the notice with its invoice
    number.fill("4242 4242 4242 4242")
    expect(dialog.get_by_role("alert")).to_have_count(0)  # typing again takes the old refusal away
    pay.click()
    notice = dialog.get_by_role("status").filter(has_text="Payment succeeded")
    expect(notice).to_contain_text("500 credits were added to your balance.")
    invoice = notice.get_by_role("link", name=re.compile(r"^Invoice INV-\d+$"))
    expect(invoice).to_be_visible()
    number_shown = (invoice.text_content() or "").removeprefix("Invoice ")
    screenshot(page.page, "top-up-legacy-new-card-succeeded-1280")

    after = account()
    for kind in ("total", "paid", "available"):
        assert Decimal(after["balance"][kind]) - Decimal(before["balance"][kind]) == 500, kind
    succeeded = [t for t in top_ups() if t["status"] == "SUCCEEDED"]
    assert succeeded == [
        {
            "type": "TOP_UP",
            "status": "SUCCEEDED",
            "credits": "500",
            "failureReason": None,
            "invoice": {"number": number_shown},
        }
    ]
    # charged once as a paymentToken and not saved: no card here, none attached to a customer at Stripe
    assert after["paymentMethods"] == []
    ours = legacy_stripe.requests[requests_before:]
    assert [r.path for r in ours if r.path.endswith("/attach")] == []
    charged = [r.params for r in ours if (r.method, r.path) == ("POST", "/v1/payment_intents")]
    assert [(c["payment_method"], c["amount"], "customer" in c) for c in charged] == [
        ("pm_card_chargeDeclined", "500", False),
        ("pm_card_visa", "500", False),
    ]
    assert page.page.evaluate("window.__stripeJsStandIn.keys") == [PUBLISHABLE_KEY]

    # at 360 px, again: Stripe.js's own refusal of a short number goes under the field, nothing is charged
    page.page.set_viewport_size({"width": 360, "height": 800})
    dialog.get_by_role("button", name="Top up again").click()
    number.fill("4242 4242")
    pay.click()
    card_field = dialog.locator(".field").filter(has=page.page.get_by_role("group", name="Card", exact=True))
    expect(card_field.get_by_role("alert")).to_have_text("Your card number is incomplete.")
    screenshot(page.page, "top-up-legacy-new-card-360")
    assert account()["balance"] == after["balance"]
    assert served == ["https://js.stripe.com/v3"]  # loaded once
    page.assert_no_console_errors()


# ------------------------------------------------------------------ the stripe gateway: Checkout and the portal


@pytest.fixture(scope="module")
def checkout_server(
    web_build: Path, tmp_path_factory: pytest.TempPathFactory, checkout_stripe: StripeStandIn
) -> Iterator[Server]:
    """The stripe gateway against the stand-in: Checkout pages that send the browser back, webhooks the test
    sends when it chooses."""
    tmp = tmp_path_factory.mktemp("web-checkout")
    plans = tmp / "plans.toml"  # Starter billed as the stand-in's recurring Price
    plans.write_text(
        '[starter-monthly]\nname = "Starter"\nprice = 1000\ninterval = "MONTH"\ncredits = "1100"\n'
        'stripe_price = "price_starter_monthly"\n'
        '[founders]\nname = "Founders"\nprice = 2000\ninterval = "MONTH"\ncredits = "3000"\n'  # no Stripe price
    )
    settings = stripe_env(checkout_stripe, CREDITLINE_STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET, CREDITLINE_PLANS=str(plans))
    yield from start_server(tmp, "stripe", settings=settings)


def send_webhook(server: Server, event: dict[str, Any]) -> None:
    """POST a Stripe event to the server's /webhooks/stripe, signed as Stripe signs it."""
    payload = json.dumps(event)
    request = urllib.request.Request(
        f"{server.url}/webhooks/stripe",
        data=payload.encode(),
        headers={"content-type": "application/json", "stripe-signature": sign(payload, int(time.time()))},
    )
    with urllib.request.urlopen(request, timeout=15) as response:
        assert response.status == 200


def test_on_stripe_a_top_up_goes_through_checkout_and_is_pending_back_here_until_the_webhook(
    page: Watched, checkout_server: Server, checkout_stripe: StripeStandIn
) -> None:
    stripe_standin = checkout_stripe
    user_id = new_user(checkout_server, "checkout@example.com")
    newest = "query($id: ID!) { node(id: $id) { ... on User { credit { balance { total }"
    newest += " transactions(first: 1) { edges { node { id status credits } } } } } } }"
    sign_in(page.page, checkout_server.portal_link(userId=user_id))
    before = checkout_server.gql("admin", newest, {"id": user_id})["node"]["credit"]["balance"]["total"]

    page.page.get_by_role("button", name="Top up", exact=True).click()
    dialog = page.page.get_by_role("dialog", name="Top up")
    dialog.get_by_role("textbox", name="Credits").fill("500")
    expect(dialog).to_contain_text("You pay on Stripe's secure checkout page")
    dialog.get_by_role("button", name="Pay $5.00").click()

    # Stripe's Checkout page (the stand-in's), then back to the Billing tab.
    page.page.wait_for_url(f"{stripe_standin.url}/pay/*")
    expect(page.page.get_by_role("heading", name="Pay 5.00 USD")).to_be_visible()
    page.page.get_by_role("button", name="Pay").click()
    page.page.wait_for_url(re.compile(re.escape(checkout_server.url) + r"/my-credit/billing\?checkout=success"))
    expect(page.page.get_by_role("tab", name="Billing")).to_have_attribute("aria-selected", "true")
    panel = page.page.get_by_role("tabpanel", name="Billing")
    pending = panel.get_by_role("status").filter(has_text="Payment pending")
    expect(pending).to_have_count(1)  # this payment once, not again among the other pending ones
    expect(pending).to_contain_text("Thanks, your payment is being confirmed.")
    credit = checkout_server.gql("admin", newest, {"id": user_id})["node"]["credit"]
    transaction = credit["transactions"]["edges"][0]["node"]
    assert (transaction["status"], transaction["credits"], credit["balance"]["total"]) == ("PENDING", "500", before)
    assert f"transaction={transaction['id']}" in page.page.url.replace("%3D", "=")
    screenshot(page.page, "billing-stripe-pending-1280")

    (session,) = [s for s in stripe_standin.sessions.values() if s["client_reference_id"] and s["amount_total"] == 500]
    send_webhook(checkout_server, stripe_standin.event("checkout.session.completed", dict(session)))

    done = panel.get_by_role("status").filter(has_text="Payment succeeded")
    expect(done).to_contain_text("500 credits were added ($5.00).")
    expect(done.get_by_role("link", name=re.compile(r"^Invoice INV-\d+$"))).to_be_visible()
    expect(pending).to_have_count(0)
    credit = checkout_server.gql("admin", newest, {"id": user_id})["node"]["credit"]
    assert credit["transactions"]["edges"][0]["node"]["status"] == "SUCCEEDED"
    screenshot(page.page, "billing-stripe-succeeded-1280")
    page.assert_no_stripe_js()
    page.assert_no_console_errors()


def test_on_stripe_manage_billing_opens_the_customer_portal_and_comes_back(
    page: Watched, checkout_server: Server, checkout_stripe: StripeStandIn
) -> None:
    stripe_standin = checkout_stripe
    user_id = new_user(checkout_server, "portal@example.com")
    sign_in(page.page, checkout_server.portal_link(userId=user_id))
    tab(page.page, "Billing")

    page.page.get_by_role("button", name="Manage billing in Stripe").click()

    page.page.wait_for_url(f"{stripe_standin.url}/portal/*")
    expect(page.page.get_by_role("heading", name="Customer portal")).to_be_visible()
    assert stripe_standin.portals[-1]["return_url"] == f"{checkout_server.url}/my-credit/billing"
    page.page.get_by_role("link", name="Return to Creditline").click()
    page.page.wait_for_url(f"{checkout_server.url}/my-credit/billing")
    billing = page.page.get_by_role("tabpanel", name="Billing")
    expect(billing.get_by_role("heading", name="Subscription")).to_be_visible()
    expect(page.page.get_by_role("status").filter(has_text=re.compile("^Live$"))).to_be_visible()
    page.assert_no_console_errors()


def test_on_stripe_subscribing_goes_through_checkout_and_is_active_once_stripe_says_it_was_paid(
    page: Watched, checkout_server: Server, checkout_stripe: StripeStandIn
) -> None:
    stripe_standin = checkout_stripe
    user_id = new_user(checkout_server, "subscriber@example.com")
    subscription = "query($id: ID!) { node(id: $id) { ... on User { credit { balance { total }"
    subscription += " subscription { id status planId } } } } }"
    sign_in(page.page, checkout_server.portal_link(userId=user_id))
    tab(page.page, "Billing")
    panel = page.page.get_by_role("tabpanel", name="Billing")

    panel.get_by_role("button", name="Subscribe to Starter").click()

    page.page.wait_for_url(f"{stripe_standin.url}/pay/*")
    expect(page.page.get_by_role("heading", name="Pay 10.00 USD")).to_be_visible()
    page.page.get_by_role("button", name="Pay").click()
    page.page.wait_for_url(re.compile(re.escape(checkout_server.url) + r"/my-credit/billing\?checkout=success"))
    pending = panel.get_by_role("status").filter(has_text="Payment pending")
    expect(pending).to_have_count(1)
    expect(pending).to_contain_text("Thanks, your payment is being confirmed.")
    expect(panel.get_by_role("link", name="Complete payment")).to_have_count(0)  # it was paid a moment ago
    expect(panel).to_contain_text("The first period starts once its payment completes")
    expect(panel).not_to_contain_text("Renews on")  # no period yet, nothing to cancel
    expect(panel.get_by_role("button", name="Cancel at period end")).to_have_count(0)
    before = checkout_server.gql("admin", subscription, {"id": user_id})["node"]["credit"]
    screenshot(page.page, "billing-stripe-subscribe-pending-1280")

    (session,) = [
        s for s in stripe_standin.sessions.values() if s["mode"] == "subscription" and s["status"] == "complete"
    ]
    made = stripe_standin.subscriptions[session["subscription"]]
    send_webhook(checkout_server, stripe_standin.event("customer.subscription.created", dict(made)))
    send_webhook(checkout_server, stripe_standin.event("checkout.session.completed", dict(session)))
    send_webhook(checkout_server, stripe_standin.event("invoice.paid", stripe_standin.invoice_of(made["id"])))

    done = panel.get_by_role("status").filter(has_text="Payment succeeded")
    expect(done).to_contain_text("You are subscribed to Starter.")
    expect(pending).to_have_count(0)
    expect(panel).to_contain_text("Renews on")
    expect(panel.get_by_role("button", name="Cancel at period end")).to_be_visible()
    after = checkout_server.gql("admin", subscription, {"id": user_id})["node"]["credit"]
    assert after["subscription"]["status"] == "ACTIVE"
    assert after["subscription"]["planId"] == "starter-monthly"
    assert Decimal(after["balance"]["total"]) == Decimal(before["balance"]["total"]) + 1100
    screenshot(page.page, "billing-stripe-subscribed-1280")
    page.assert_no_console_errors()


def test_on_stripe_a_checkout_left_with_back_can_be_completed_or_dropped_and_a_plan_without_a_price_is_not_offered(
    page: Watched, checkout_server: Server, checkout_stripe: StripeStandIn
) -> None:
    stripe_standin = checkout_stripe
    user_id = new_user(checkout_server, "backed-out@example.com")
    subscription = "query($id: ID!) { node(id: $id) { ... on User { credit { balance { total }"
    subscription += " subscription { id status } transactions(first: 5) { edges { node { status } } } } } } }"
    sign_in(page.page, checkout_server.portal_link(userId=user_id))
    tab(page.page, "Billing")
    panel = page.page.get_by_role("tabpanel", name="Billing")
    founders = panel.get_by_role("listitem").filter(has=page.page.get_by_role("heading", name="Founders"))
    expect(founders).to_contain_text("Not available to subscribe here")
    expect(founders.get_by_role("button")).to_have_count(0)
    before = checkout_server.gql("admin", subscription, {"id": user_id})["node"]["credit"]

    panel.get_by_role("button", name="Subscribe to Starter").click()
    page.page.wait_for_url(f"{stripe_standin.url}/pay/*")
    pay_page = page.page.url
    page.page.get_by_role("link", name="Back").click()

    page.page.wait_for_url(re.compile(re.escape(checkout_server.url) + r"/my-credit/billing\?checkout=canceled"))
    expect(panel.get_by_role("status").filter(has_text="The checkout was canceled")).to_have_text(
        "The checkout was canceled: nothing was charged. Complete the payment or drop the subscription below."
    )
    expect(panel.get_by_role("link", name="Complete payment")).to_have_count(1)  # in the subscription's box only
    expect(panel.get_by_role("link", name="Complete payment")).to_have_attribute("href", pay_page)
    expect(panel.get_by_role("status").filter(has_text="Payment pending")).to_have_count(0)
    waiting = checkout_server.gql("admin", subscription, {"id": user_id})["node"]["credit"]
    assert waiting["subscription"]["status"] == "INCOMPLETE"
    screenshot(page.page, "billing-stripe-checkout-canceled-1280")

    panel.get_by_role("button", name="Drop this subscription").click()

    expect(panel.get_by_role("status").filter(has_text="dropped")).to_have_text(
        "The checkout was closed and the subscription dropped: nothing was charged."
    )
    expect(panel.get_by_role("button", name="Subscribe to Starter")).to_be_enabled()
    expect(panel.get_by_role("link", name="Complete payment")).to_have_count(0)
    expect(panel).to_contain_text("No subscription")
    expect(panel).not_to_contain_text("The checkout was canceled")  # the outcome replaces the return's notice
    assert "checkout=" not in page.page.url
    after = checkout_server.gql("admin", subscription, {"id": user_id})["node"]["credit"]
    assert after["subscription"] is None  # dropped: no subscription is live
    assert [e["node"]["status"] for e in after["transactions"]["edges"]] == ["FAILED"]
    assert after["balance"] == before["balance"]
    (session,) = [s for s in stripe_standin.sessions.values() if s["url"] == pay_page]
    assert session["status"] == "expired"  # the page can no longer be paid
    screenshot(page.page, "billing-stripe-checkout-dropped-1280")
    page.assert_no_console_errors()


def test_on_stripe_a_top_up_left_with_back_is_canceled_and_a_waiting_one_can_be_canceled_from_its_notice(
    page: Watched, checkout_server: Server, checkout_stripe: StripeStandIn
) -> None:
    stripe_standin = checkout_stripe
    user_id = new_user(checkout_server, "changed-mind@example.com")
    newest = "query($id: ID!) { node(id: $id) { ... on User { credit { balance { total paid available }"
    newest += " transactions(first: 5) { edges { node { status failureReason } } } } } } }"
    sign_in(page.page, checkout_server.portal_link(userId=user_id))
    before = checkout_server.gql("admin", newest, {"id": user_id})["node"]["credit"]["balance"]

    def start_top_up(credits: str) -> str:
        page.page.get_by_role("button", name="Top up", exact=True).click()
        dialog = page.page.get_by_role("dialog", name="Top up")
        dialog.get_by_role("textbox", name="Credits").fill(credits)
        dialog.get_by_role("button", name=re.compile(r"^Pay \$")).click()
        page.page.wait_for_url(f"{stripe_standin.url}/pay/*")
        return page.page.url

    first = start_top_up("500")
    page.page.get_by_role("link", name="Back").click()

    page.page.wait_for_url(re.compile(re.escape(checkout_server.url) + r"/my-credit/billing\?checkout=canceled"))
    panel = page.page.get_by_role("tabpanel", name="Billing")
    expect(panel.get_by_role("status").filter(has_text="canceled")).to_have_text(
        "The checkout was canceled: nothing was charged."
    )
    expect(panel.get_by_role("status").filter(has_text="Payment pending")).to_have_count(0)
    credit = checkout_server.gql("admin", newest, {"id": user_id})["node"]["credit"]
    assert [e["node"] for e in credit["transactions"]["edges"]] == [
        {"status": "FAILED", "failureReason": "The checkout was canceled"}
    ]
    assert credit["balance"] == before
    assert [s["status"] for s in stripe_standin.sessions.values() if s["url"] == first] == ["expired"]
    screenshot(page.page, "billing-stripe-top-up-canceled-1280")

    tab(page.page, "Overview")  # where the Top up button is
    second = start_top_up("1000")
    page.page.goto(f"{checkout_server.url}/my-credit/billing")  # left Checkout without its Back link
    pending = panel.get_by_role("status").filter(has_text="Payment pending")
    expect(pending).to_contain_text("Top-up of 1,000 credits ($10.00) is waiting for the payment to complete.")
    expect(pending.get_by_role("link", name="Complete payment")).to_have_attribute("href", second)
    screenshot(page.page, "billing-stripe-top-up-waiting-1280")
    pending.get_by_role("button", name="Cancel payment").click()

    expect(panel.get_by_role("status").filter(has_text="canceled")).to_have_text(
        "The checkout was canceled: nothing was charged."
    )
    expect(pending).to_have_count(0)
    credit = checkout_server.gql("admin", newest, {"id": user_id})["node"]["credit"]
    assert [e["node"]["status"] for e in credit["transactions"]["edges"]] == ["FAILED", "FAILED"]
    assert credit["balance"] == before
    assert [s["status"] for s in stripe_standin.sessions.values() if s["url"] == second] == ["expired"]
    page.assert_no_stripe_js()
    page.assert_no_console_errors()
