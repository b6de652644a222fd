"""DataLoaders, made fresh for every request (and for every event pushed over a websocket).

Each loader is created on first use: most requests touch one or two of them, and a websocket connection
holds its context for as long as it is open.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from functools import cached_property
from typing import TypeVar

from strawberry.dataloader import DataLoader

from models import limits, organizations
from models.balance import Balance
from models.forecast import Forecast, forecasts
from models.ledger import read_balances
from models.limit_rules import LimitView
from models.limits import LimitRow, Usage
from models.tables import (
    CreditAccount,
    Invoice,
    Membership,
    Organization,
    OutboxEvent,
    PaymentMethod,
    Refund,
    User,
    WebhookAttempt,
)

T = TypeVar("T")


def _by_id(rows: Sequence[T], keys: Sequence[int], key: Callable[[T], int | None]) -> list[T | None]:
    found = {key(row): row for row in rows}
    return [found.get(k) for k in keys]


class Loaders:
    def __init__(self, now: Callable[[], datetime]) -> None:
        self._now = now

    @cached_property
    def balance(self) -> DataLoader[int, Balance]:
        return DataLoader(self._balances)

    @cached_property
    def account(self) -> DataLoader[int, CreditAccount | None]:
        return DataLoader(self._accounts)

    @cached_property
    def account_of_user(self) -> DataLoader[int, CreditAccount | None]:
        return DataLoader(self._accounts_of_users)

    @cached_property
    def user(self) -> DataLoader[int, User | None]:
        return DataLoader(self._users)

    @cached_property
    def organization(self) -> DataLoader[int, Organization | None]:
        return DataLoader(self._organizations)

    @cached_property
    def memberships_of_user(self) -> DataLoader[int, list[Membership]]:
        return DataLoader(self._memberships_of_users)

    @cached_property
    def memberships_of_organization(self) -> DataLoader[int, list[Membership]]:
        return DataLoader(self._memberships_of_organizations)

    @cached_property
    def pool_of_organization(self) -> DataLoader[int, CreditAccount | None]:
        return DataLoader(self._pools)

    @cached_property
    def budgets_of_organization(self) -> DataLoader[int, dict[int, int]]:
        return DataLoader(self._budgets)

    @cached_property
    def spent_this_month(self) -> DataLoader[int, dict[int, int]]:
        return DataLoader(self._spent_this_month)

    @cached_property
    def invoice_of_transaction(self) -> DataLoader[int, Invoice | None]:
        return DataLoader(self._invoices_of_transactions)

    @cached_property
    def refunds_of_transaction(self) -> DataLoader[int, list[Refund]]:
        return DataLoader(self._refunds_of_transactions)

    @cached_property
    def payment_method(self) -> DataLoader[int, PaymentMethod | None]:
        return DataLoader(self._payment_methods)

    @cached_property
    def limits_of_account(self) -> DataLoader[int, list[LimitRow]]:
        return DataLoader(self._limits_of_accounts)

    @cached_property
    def limit_row(self) -> DataLoader[int, LimitRow | None]:
        return DataLoader(self._limit_rows)

    @cached_property
    def limit_usage(self) -> DataLoader[LimitView, Usage]:
        return DataLoader(self._limit_usage)

    @cached_property
    def forecast(self) -> DataLoader[int, Forecast | None]:
        return DataLoader(self._forecasts)

    async def _forecasts(self, keys: list[int]) -> list[Forecast | None]:
        # The balances through their own loader: a query that also asks for them reads them once.
        balances = dict(zip(keys, await self.balance.load_many(keys), strict=True))
        found = await forecasts(keys, balances, self._now())
        return [found.get(k) for k in keys]

    async def _limits_of_accounts(self, keys: list[int]) -> list[list[LimitRow]]:
        grouped: dict[int, list[LimitRow]] = {k: [] for k in keys}
        for row in await limits.limits_of(keys):
            grouped[row.view.account_id].append(row)
            self.limit_row.prime(row.view.id, row)  # their velocity state costs no second read
        return [grouped[k] for k in keys]

    async def _limit_rows(self, keys: list[int]) -> list[LimitRow | None]:
        found = await limits.limits_by_id(keys)
        return [found.get(k) for k in keys]

    async def _limit_usage(self, keys: list[LimitView]) -> list[Usage]:
        found = await limits.usage(keys, self._now())
        return [found[k.id] for k in keys]

    async def _invoices_of_transactions(self, keys: list[int]) -> list[Invoice | None]:
        return _by_id(await Invoice.filter(transaction_id__in=keys), keys, lambda i: i.transaction_id)

    async def _refunds_of_transactions(self, keys: list[int]) -> list[list[Refund]]:
        grouped: dict[int, list[Refund]] = {k: [] for k in keys}
        for refund in await Refund.filter(transaction_id__in=keys).order_by("id"):
            grouped[refund.transaction_id].append(refund)
        return [grouped[k] for k in keys]

    async def _payment_methods(self, keys: list[int]) -> list[PaymentMethod | None]:
        return _by_id(await PaymentMethod.filter(id__in=keys), keys, lambda m: m.id)

    async def _balances(self, keys: list[int]) -> list[Balance]:
        found = await read_balances(list(keys), self._now())
        return [found.get(k, Balance(0, 0, 0)) for k in keys]

    async def _accounts(self, keys: list[int]) -> list[CreditAccount | None]:
        return _by_id(await CreditAccount.filter(id__in=keys), keys, lambda a: a.id)

    async def _accounts_of_users(self, keys: list[int]) -> list[CreditAccount | None]:
        return _by_id(await CreditAccount.filter(user_id__in=keys), keys, lambda a: a.user_id)

    async def _users(self, keys: list[int]) -> list[User | None]:
        return _by_id(await User.filter(id__in=keys), keys, lambda u: u.id)

    async def _organizations(self, keys: list[int]) -> list[Organization | None]:
        return _by_id(await Organization.filter(id__in=keys), keys, lambda o: o.id)

    async def _memberships_of_organizations(self, keys: list[int]) -> list[list[Membership]]:
        grouped: dict[int, list[Membership]] = {k: [] for k in keys}
        for membership in await Membership.filter(organization_id__in=keys).order_by("id"):
            grouped[membership.organization_id].append(membership)
        return [grouped[k] for k in keys]

    async def _pools(self, keys: list[int]) -> list[CreditAccount | None]:
        return _by_id(await CreditAccount.filter(organization_id__in=keys), keys, lambda a: a.organization_id)

    async def _budgets(self, keys: list[int]) -> list[dict[int, int]]:
        found = await organizations.budgets(list(keys))
        return [found[k] for k in keys]

    async def _spent_this_month(self, keys: list[int]) -> list[dict[int, int]]:
        found = await organizations.spent_this_month(list(keys), self._now())
        return [found[k] for k in keys]

    async def _memberships_of_users(self, keys: list[int]) -> list[list[Membership]]:
        grouped: dict[int, list[Membership]] = {k: [] for k in keys}
        for membership in await Membership.filter(user_id__in=keys).order_by("id"):
            grouped[membership.user_id].append(membership)
        return [grouped[k] for k in keys]

    # Issue 13: the webhook delivery log (schema/webhooks.py): a page of deliveries reads its events and its
    # attempts in one statement each, whatever its length.
    @cached_property
    def webhook_event(self) -> DataLoader[int, OutboxEvent | None]:
        return DataLoader(self._webhook_events)

    @cached_property
    def webhook_attempts(self) -> DataLoader[int, list[WebhookAttempt]]:
        return DataLoader(self._webhook_attempts)

    async def _webhook_events(self, keys: list[int]) -> list[OutboxEvent | None]:
        return _by_id(await OutboxEvent.filter(id__in=keys), keys, lambda e: e.id)

    async def _webhook_attempts(self, keys: list[int]) -> list[list[WebhookAttempt]]:
        grouped: dict[int, list[WebhookAttempt]] = {k: [] for k in keys}
        for attempt in await WebhookAttempt.filter(delivery_id__in=keys).order_by("id"):
            grouped[attempt.delivery_id].append(attempt)
        return [grouped[k] for k in keys]
