"""Live: the GraphQL subscriptions to balance changes and usage. Events are published only after their
transaction commits.

Each resolver checks who may watch what, subscribes on the bus, sends what comes first and then hands the
subscription over to its websocket operation (creditline/live.py), which sends each later event through
the resolver's ``Feed`` without holding a task or this generator while idle.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime
from typing import TypeVar

import strawberry
from strawberry.types import Info

from creditline.events import ALERT, BALANCE, QUEUE_LIMIT, RESYNC, USAGE
from models import alert_replay, ledger
from models.balance import Balance
from models.ids import decode_id
from models.ledger import Event
from models.ledger.alerts import AlertChanged
from models.tables import CreditAccount as CreditAccountRow
from models.tables import CreditLot, LedgerEntry, LedgerEntryType, MemberRole, Membership
from models.tokens import BALANCE_READ
from resolvers.accounts import named_account
from resolvers.context import Context
from resolvers.errors import ClientError, ForbiddenError
from resolvers.feeds import Feed
from resolvers.permissions import can_read_account, may_read_account, portal_account, principal
from resolvers.references import organization_pk
from schema.alert_events import AlertEvent
from schema.errors import ValidationError
from schema.scalars import Credits
from schema.types import BalanceEvent, CreditAccount, CreditBalance, UsageEvent

T = TypeVar("T")


async def _account_to_watch(
    info: Info[Context, None],
    account_id: strawberry.ID | None,
    external_user_id: str | None = None,
    external_organization_id: str | None = None,
) -> BalanceFeed:
    who = principal(info)
    loaders = info.context.loaders
    named = await named_account(account_id, external_user_id, external_organization_id)
    if isinstance(named, ValidationError):
        raise ClientError(named.message, "BAD_REQUEST")
    if named is None and (bound := portal_account(who)) is not None:
        account = await loaders.account.load(bound)
    elif named is None:
        if who.user_id is None:
            raise ClientError("Give accountId: this token belongs to a service or an admin", "BAD_REQUEST")
        account = await loaders.account_of_user.load(who.user_id)
    else:
        # Unknown, or an organization without a pool: as unwatchable as another tenant's account.
        account = named if isinstance(named, CreditAccountRow) else None
    # A service watches balances with balance:read (the events carry the balance).
    if account is None or not await may_read_account(info, account, (BALANCE_READ,)):
        raise ForbiddenError("You may not watch this account")
    # Watching a pool through a role in its organization lasts only as long as the role does.
    access = None
    readable = can_read_account(who, account.user_id, account_id=account.id)
    if not readable and account.organization_id is not None and who.user_id is not None:
        access = (int(account.organization_id), who.user_id)
    return BalanceFeed(int(account.id), access)


async def _follow(ctx: Context, feed: Feed[T]) -> AsyncGenerator[T, None]:
    """Subscribe, send the feed's first payload (if it has one), then hand over to the live operation."""
    live = ctx.live
    if live is None:
        raise ClientError("Subscriptions need a websocket: connect with the graphql-transport-ws protocol")
    # Subscribed before the first payload is read, so nothing between them is missed.
    live.follow(feed, ctx.services.bus)
    first = await feed.first(ctx)
    if first is not None:
        yield first
    live.handed_over = True


GRANT_REASONS = frozenset({"TOP_UP", "AUTO_TOP_UP", "SUBSCRIPTION"})
"""Lot sources a grant's event is named after (models/ledger/grants.py ``grant_locked``); others are GRANT."""


class BalanceFeed:
    """An account's balance now (reason SNAPSHOT), then every committed version after it, once, in order.

    Events reach a process out of version order when several processes write one account (each publishes
    after its own commit). One that comes early is held back until the versions before it arrive; after
    ``CREDITLINE_LIVE_REORDER_MS`` those still missing are read from the ledger (``fill``). A RESYNC marker
    (events may have been lost while Redis was away) sends the versions missed, from the ledger, then a
    fresh snapshot.
    """

    __slots__ = ("access", "account_id", "early", "seen")
    topic = BALANCE

    def __init__(self, account_id: int, access: tuple[int, int] | None = None) -> None:
        self.account_id = account_id
        self.access = access
        self.seen = -1
        """The version last sent: older events (read into the snapshot already) are skipped."""
        self.early: dict[int, ledger.BalanceChange] | None = None
        """Events past a missing version, by version (``None`` while nothing is held back)."""

    @property
    def keys(self) -> frozenset[int]:
        return frozenset({self.account_id})

    @property
    def waiting(self) -> bool:
        return bool(self.early)

    async def first(self, ctx: Context) -> BalanceEvent:
        state = await ledger.account_state(self.account_id, ctx.now())
        if state is None:
            raise ForbiddenError("You may not watch this account")
        balance, self.seen = state
        return _balance_event(self.account_id, balance, 0, "SNAPSHOT", self.seen, ctx.now())

    async def payloads(self, event: Event, ctx: Context) -> list[BalanceEvent]:
        assert isinstance(event, ledger.BalanceChange)
        if event.reason == RESYNC:
            return await self._resync(ctx)
        if event.version <= self.seen:
            return []
        if event.version - event.changes > self.seen:  # a batch's event follows on from its first version
            early = self.early if self.early is not None else {}
            early.setdefault(event.version - event.changes + 1, event)
            self.early = early
            if len(early) >= QUEUE_LIMIT:  # no more waiting than a subscriber's queue would hold
                return await self.fill(ctx)
            return []
        self.seen = event.version
        return [_event_of(event), *self._release()]

    def _release(self) -> list[BalanceEvent]:
        """What was held back and follows on from the version last sent."""
        out = []
        early = self.early
        while early:
            event = early.pop(self.seen + 1, None)
            if event is None:
                for version in [v for v in early if v <= self.seen]:
                    del early[version]
                break
            self.seen = event.version
            out.append(_event_of(event))
        if not early:
            self.early = None
        return out

    async def fill(self, ctx: Context) -> list[BalanceEvent]:
        """Send the versions still missing before the first event held back, from the ledger, then it and
        what follows on."""
        if not self.early:
            return []
        anchor = self.early.pop(min(self.early))
        missed = await self._from_ledger(anchor)
        self.seen = anchor.version
        return (missed or [_event_of(anchor)]) + self._release()

    async def _resync(self, ctx: Context) -> list[BalanceEvent]:
        """After events may have been lost: the versions missed, from the ledger, then a fresh snapshot."""
        state = await ledger.account_state(self.account_id, ctx.now())
        if state is None:
            raise ForbiddenError("You may not watch this account")
        balance, version = state
        now = _balance_event(self.account_id, balance, 0, "SNAPSHOT", version, ctx.now())
        missed = []
        if version > self.seen:
            missed = await self._from_ledger(ledger.BalanceChange(self.account_id, version, 0, "", balance, ctx.now()))
        self.seen = max(self.seen, version)
        return [*missed, now, *self._release()]

    async def _from_ledger(self, anchor: ledger.BalanceChange) -> list[BalanceEvent]:
        """One event per ledger entry after the version last sent, up to ``anchor`` (empty: the ledger does
        not have them, which one database never allows).

        An entry carries its change (``amount``, its free and paid parts, ``held_delta``) and version; its
        balance is the anchor's minus the changes after it, so every balance agrees with what the client
        sees next. An event that covers several entries (a sweep expiring two lots at once) is sent entry by
        entry, each version once; the anchor's own entry keeps its reason when it has one."""
        entries = await LedgerEntry.filter(
            account_id=self.account_id, version__gt=self.seen, version__lte=anchor.version
        ).order_by("version")
        if not entries or entries[-1].version != anchor.version:
            return []
        sources = await _lot_sources([e.lot_id for e in entries if e.entry_type == LedgerEntryType.GRANT])
        out: list[BalanceEvent] = []
        balance = anchor.balance
        for entry in reversed(entries):
            if entry.version == anchor.version and anchor.reason:
                reason, at = anchor.reason, anchor.occurred_at
            else:
                reason, at = _reason_of(entry, sources), entry.created_at
            out.append(_balance_event(self.account_id, balance, entry.amount, reason, entry.version, at))
            balance = Balance(
                balance.free - entry.free_amount,
                balance.paid - entry.paid_amount,
                balance.held - entry.held_delta,
                balance.owed - entry.owed_delta,
                balance.overdraft,  # not on the ledger: the anchor's, as the snapshot after these shows it
            )
        out.reverse()
        return out


async def _lot_sources(lot_ids: list[int | None]) -> dict[int, str]:
    ids = {lot_id for lot_id in lot_ids if lot_id is not None}
    if not ids:
        return {}
    return {int(pk): str(source) for pk, source in await CreditLot.filter(id__in=ids).values_list("id", "source")}


def _reason_of(entry: LedgerEntry, lot_sources: dict[int, str]) -> str:
    """The reason the event of a ledger entry carries (models/ledger/ names them so)."""
    if entry.entry_type == LedgerEntryType.GRANT:
        source = lot_sources.get(entry.lot_id or 0, "")
        return source if source in GRANT_REASONS else "GRANT"
    if entry.entry_type == LedgerEntryType.RELEASE and entry.reason in ("RELEASE", "HOLD_TIMEOUT"):
        return entry.reason
    if entry.entry_type == LedgerEntryType.HOLD and entry.reason in ("EXTEND", "INCREASE"):
        return entry.reason  # an adjusted hold, as extend_hold and increase_hold publish it
    return str(entry.entry_type.value)


def _event_of(change: ledger.BalanceChange) -> BalanceEvent:
    return _balance_event(
        change.account_id,
        change.balance,
        change.delta,
        change.reason,
        change.version,
        change.occurred_at,
        change.changes,
    )


def _balance_event(
    account_id: int, balance: Balance, delta: int, reason: str, version: int, at: datetime, changes: int = 1
) -> BalanceEvent:
    return BalanceEvent(
        account=CreditAccount(id=account_id),
        balance=CreditBalance.of(balance),
        delta=Credits(delta),
        reason=reason,
        version=version,
        occurred_at=at,
        changes=changes,
    )


class UsageFeed:
    """Each usage event inside an organization as it happens."""

    __slots__ = ("access", "organization_id")
    topic = USAGE
    waiting = False

    def __init__(self, organization_id: int, access: tuple[int, int] | None) -> None:
        self.organization_id = organization_id
        self.access = access

    @property
    def keys(self) -> frozenset[int]:
        return frozenset({self.organization_id})

    async def first(self, ctx: Context) -> UsageEvent | None:
        return None

    async def payloads(self, event: Event, ctx: Context) -> list[UsageEvent]:
        assert isinstance(event, ledger.UsageRecorded)
        return [UsageEvent.recorded(event)]

    async def fill(self, ctx: Context) -> list[UsageEvent]:
        return []


async def balance_changed(
    info: Info[Context, None],
    account_id: strawberry.ID | None = None,
    external_user_id: str | None = None,
    external_organization_id: str | None = None,
) -> AsyncGenerator[BalanceEvent, None]:
    """The account's balance now (reason SNAPSHOT), then every committed change to it, in order. ``accountId``
    takes a CreditAccount, User or Organization ID; or name the account by ``externalUserId`` or
    ``externalOrganizationId`` (at most one of the three)."""
    feed = await _account_to_watch(info, account_id, external_user_id, external_organization_id)
    async for event in _follow(info.context, feed):
        yield event


async def usage_recorded(
    info: Info[Context, None],
    organization_id: strawberry.ID | None = None,
    external_organization_id: str | None = None,
) -> AsyncGenerator[UsageEvent, None]:
    """Each usage event inside an organization as it happens. BILLING and OWNER members only. Exactly one of
    ``organizationId`` or ``externalOrganizationId``."""
    who = principal(info)
    if organization_id is not None and external_organization_id is None:
        org_id = decode_id(organization_id, "Organization")
    else:
        found = await organization_pk(organization_id, external_organization_id)
        if isinstance(found, ValidationError):
            raise ClientError(found.message, "BAD_REQUEST")
        org_id = found if isinstance(found, int) else None  # unknown: refused as any organization not yours
    allowed = who.is_admin
    if org_id is not None and who.user_id is not None and not allowed:
        membership = await Membership.filter(organization_id=org_id, user_id=who.user_id).first()
        allowed = membership is not None and bool(membership.role_set & {MemberRole.BILLING, MemberRole.OWNER})
    if org_id is None or not allowed:
        raise ForbiddenError("Watching usage needs the BILLING or OWNER role in that organization")
    # An admin watches for as long as the token lasts; a member for as long as the role does.
    access = None if who.is_admin or who.user_id is None else (org_id, who.user_id)
    async for event in _follow(info.context, UsageFeed(org_id, access)):
        yield event


class AlertFeed:
    """An account's alerts as they are raised and resolved (nothing first: ``CreditAccount.alerts`` has them).

    ``seen`` is the ``sequence`` of the account's newest event when the watch began, then the newest one a
    resync read; ``sent`` the alert events sent since (as they arrived, in any order when several processes
    write the account) and those the last resync sent. A RESYNC marker (events may have been lost while Redis
    was away) sends the alert events numbered after ``seen`` not sent yet, read back from the outbox, in order:
    none is missed, none sent twice."""

    __slots__ = ("access", "account_id", "seen", "sent")
    topic = ALERT
    waiting = False

    def __init__(self, account_id: int, access: tuple[int, int] | None) -> None:
        self.account_id = account_id
        self.access = access
        self.seen = 0
        self.sent: set[int] = set()

    @property
    def keys(self) -> frozenset[int]:
        return frozenset({self.account_id})

    async def first(self, ctx: Context) -> AlertEvent | None:
        self.seen = await alert_replay.last_sequence(self.account_id)
        return None

    async def payloads(self, event: Event, ctx: Context) -> list[AlertEvent]:
        assert isinstance(event, AlertChanged)
        if event.event_type == RESYNC:
            missed = [
                change
                for change in await alert_replay.alert_changes_after(self.account_id, self.seen)
                if change.sequence not in self.sent
            ]
            self.seen = max([self.seen, *(c.sequence for c in missed), *self.sent])
            self.sent = {c.sequence for c in missed}  # one of them may still arrive, late
            return [AlertEvent.of(change) for change in missed]
        if event.sequence in self.sent:
            return []  # read back by a resync already
        self.sent.add(event.sequence)
        return [AlertEvent.of(event)]

    async def fill(self, ctx: Context) -> list[AlertEvent]:
        return []


async def alert_raised(
    info: Info[Context, None],
    account_id: strawberry.ID | None = None,
    external_user_id: str | None = None,
    external_organization_id: str | None = None,
) -> AsyncGenerator[AlertEvent, None]:
    """Each balance alert of the account raised or resolved, after its change commits. Who may watch: as for
    ``balanceChanged``."""
    watched = await _account_to_watch(info, account_id, external_user_id, external_organization_id)
    async for event in _follow(info.context, AlertFeed(watched.account_id, watched.access)):
        yield event
