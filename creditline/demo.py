"""What ``creditline demo`` (``make run``) gives the demo user's My Credit page to show, made once with the
domain operations a request would use, back-dated: six days of usage by two agents and three activities, a
saved card, a top-up with its invoice, a subscription, and 20 Free credits that expire in 3 days."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from billing import payments as billing_payments
from billing import subscriptions as billing_subscriptions
from creditline.app import build_services
from creditline.clock import Clock
from creditline.settings import MICRO, Settings
from gateway.base import HostedGateway
from models import ledger
from models.tables import CreditKind, LotSource

DAYS = 6
AGENTS = ("research-agent", "support-agent")
# (activity, agent, credits in micro-credits), spent every day at these hours: 2 agents, 3 activities.
DAILY = (
    (9, "answer", AGENTS[1], 1_200_000),
    (11, "web_search", AGENTS[0], 3_500_000),
    (14, "answer", AGENTS[0], 800_000),
    (16, "transcription", AGENTS[1], 2_400_000),
)
PLAN = "starter-monthly"
TOP_UP_CREDITS = 500
EXPIRING_CREDITS = 20
EXPIRING_IN = timedelta(days=3, hours=1)
"""Reads "expire in 3 days" for the next hour (a page rounds the time left down)."""
SCOPE = "cli:demo"


@dataclass(frozen=True)
class DemoData:
    spends: int
    top_up: str
    """The top-up's status (SUCCEEDED with the sandbox gateway); ``none`` on a hosted gateway."""
    subscription: str | None
    """The subscription's status; ``None`` on a hosted gateway, where subscribing needs its Checkout page."""

    @property
    def payments(self) -> str:
        if self.subscription is None:
            return "none: this gateway takes payments on its Checkout page only"
        return (
            f"a saved tok_visa card; a top-up of {TOP_UP_CREDITS} credits ({self.top_up.lower()}, with its invoice);"
            f" subscription {PLAN} ({self.subscription.lower()})"
        )


def _key(name: str, **request: object) -> ledger.IdempotencyKey:
    return ledger.IdempotencyKey.for_request(SCOPE, f"demo-{name}", name.split("-")[0], request)


def start(now: datetime) -> datetime:
    """When the demo user signed up: before the first day of usage."""
    return (now - timedelta(days=DAYS)).replace(hour=8, minute=0, second=0, microsecond=0)


async def make(settings: Settings, user_id: int, account_id: int, now: datetime) -> DemoData:
    """Everything but the user (made at ``start(now)``) and its tokens, at the times it would have happened."""
    clock = Clock()
    services = build_services(settings, clock)
    await services.bus.start()
    try:
        first = start(now)
        card_at, top_up_at, subscribe_at = (
            first + timedelta(minutes=30),
            first + timedelta(hours=23),
            first + timedelta(days=2),
        )
        spends: list[tuple[datetime, str, str, int]] = []
        for day in range(DAYS, -1, -1):
            for hour, activity, agent, credits in DAILY:
                when = (now - timedelta(days=day)).replace(hour=hour, minute=0, second=0, microsecond=0)
                if first < when < now:
                    spends.append((when, activity, agent, credits))
        card = None
        top_up = subscription = None
        hosted = isinstance(services.gateway, HostedGateway)  # it pays on its Checkout page only
        # In the order it happened, so that the ledger reads as a history.
        done = 0
        for when, activity, agent, credits in spends:
            if not hosted and card is None and when > card_at:
                clock.freeze(card_at)
                card = await billing_payments.save_card(services, account_id, "tok_visa")
            if card is not None and top_up is None and when > top_up_at:
                clock.freeze(top_up_at)
                bought = await billing_payments.top_up(
                    services,
                    account_id,
                    credits=TOP_UP_CREDITS * MICRO,
                    method=card,
                    payment_token=None,
                    idem=_key("topUp-first", credits=TOP_UP_CREDITS),
                )
                top_up = str(bought.status)
            plan = services.plans.get(PLAN)
            if card is not None and plan is not None and subscription is None and when > subscribe_at:
                clock.freeze(subscribe_at)
                sub, _ = await billing_subscriptions.subscribe(
                    services, account_id, plan=plan, method=card, idem=_key("subscribe-first", plan=PLAN)
                )
                subscription = str(sub.status)
            try:
                await ledger.spend(
                    ("id", account_id),
                    user_id=user_id,
                    organization_id=None,
                    agent_id=agent,
                    activity=activity,
                    credits=credits,
                    quantity=None,
                    idem=_key(f"spend-{when:%Y%m%d%H}-{activity}", agent=agent, credits=credits),
                    now=when,
                )
            except ledger.InsufficientCreditsError:
                break  # a small signup bonus on a hosted gateway (no top-up): the usage that it paid for
            done += 1
        # Last, so that no spend used it (Free credit that expires first is spent first).
        clock.freeze(now)
        await ledger.grant(
            account_id,
            credits=EXPIRING_CREDITS * MICRO,
            kind=CreditKind.FREE,
            source=LotSource.PROMOTION,
            expires_at=now + EXPIRING_IN,
            reason="Welcome offer",
            idem=_key("grant-welcome"),
            now=now,
        )
        return DemoData(done, top_up or "none", subscription)
    finally:
        await services.bus.stop()
        await services.gateway.close()
