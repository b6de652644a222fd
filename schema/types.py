"""Object types of the graph. Field resolvers here only read, through the request's DataLoaders."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import strawberry
from strawberry import relay
from strawberry.types import Info
from tortoise.expressions import Q
from tortoise.queryset import QuerySet

from models import tables
from models.balance import Balance, is_live
from models.ids import encode_id
from models.ledger import UsageRecorded
from models.ledger import alerts as ledger_alerts
from models.tables import LIVE_SUBSCRIPTION, CreditKind, LedgerEntryType, LotSource, MemberRole, TokenKind
from models.tokens import BALANCE_READ, BILLING_READ, USAGE_WRITE, token_limits
from resolvers.context import Context
from resolvers.errors import ForbiddenError
from resolvers.pagination import keyset_page
from resolvers.permissions import (
    BILLING_ROLES,
    PORTAL_MESSAGE,
    portal_account,
    principal,
    require_read_scope,
    roles_in,
    scope_message,
    service_lacks,
)
from resolvers.reports import usage_report
from resolvers.usage import UsageCriteria, filtered
from schema.alerts import Alert, AlertLevels, AlertStatus, with_event_ids
from schema.auto_top_up import AutoTopUp
from schema.errors import Forbidden
from schema.forecast import CreditForecast
from schema.invitations import Invitation
from schema.limits import SpendLimit
from schema.payments import Invoice, PaymentMethod, Subscription, Transaction, TransactionFilter
from schema.reports import UsageReportInput, UsageReportResult
from schema.scalars import Credits, Metadata
from schema.tokens import ApiTokenStatus, status_of
from schema.usage import UsageFilter

# The tables' enums, exposed as GraphQL enums of the same names and values.
strawberry.enum(CreditKind)
strawberry.enum(LotSource)
strawberry.enum(LedgerEntryType)
strawberry.enum(MemberRole)


def criteria(given: UsageFilter | None) -> UsageCriteria:
    if given is None:
        return UsageCriteria()
    return UsageCriteria(
        start=given.from_,
        end=given.to,
        agent_id=given.agent_id,
        agent_run_id=given.agent_run_id,
        activity=given.activity,
        member_id=given.member_id,
        organization_id=given.organization_id,
        external_member_id=given.external_member_id,
        external_organization_id=given.external_organization_id,
    )


@strawberry.type(
    description="Credit of one account. `available` = `total` - `held` - `owed`, never below -`overdraft` (zero"
    " without an overdraft): a spend or hold may take it down to -`overdraft`, not below."
)
class CreditBalance:
    total: Credits
    free: Credits
    paid: Credits
    held: Credits
    available: Credits
    overdraft: Credits = strawberry.field(description="How far below zero `available` may go (0: not at all)")
    owed: Credits = strawberry.field(
        description="What spends on the overdraft borrowed and no grant or top-up has paid back yet; the next"
        " grant or top-up pays it back first"
    )

    @classmethod
    def of(cls, balance: Balance) -> CreditBalance:
        return cls(
            total=Credits(balance.total),
            free=Credits(balance.free),
            paid=Credits(balance.paid),
            held=Credits(balance.held),
            available=Credits(balance.available),
            overdraft=Credits(balance.overdraft),
            owed=Credits(balance.owed),
        )


@strawberry.type(description="One grant of credit. Spends draw FREE lots first, soonest expiry first.")
class CreditLot(relay.Node):
    id: relay.NodeID[int]
    kind: CreditKind
    source: LotSource
    amount: Credits
    remaining: Credits
    granted_at: datetime
    expires_at: datetime | None
    stored_status: strawberry.Private[str]
    reason: str | None

    @strawberry.field(
        description="ACTIVE, DEPLETED, EXPIRED or VOIDED; EXPIRED from `expiresAt` on, also before"
        " the sweep has written the expiry"
    )
    def status(self, info: Info[Context, None]) -> str:
        if self.stored_status == tables.LotStatus.ACTIVE and not is_live(self.expires_at, info.context.now()):
            return str(tables.LotStatus.EXPIRED)
        return self.stored_status

    @classmethod
    def of(cls, lot: tables.CreditLot) -> CreditLot:
        return cls(
            id=lot.id,
            kind=CreditKind(lot.kind),
            source=LotSource(lot.source),
            amount=Credits(lot.amount),
            remaining=Credits(lot.remaining),
            granted_at=lot.granted_at,
            expires_at=lot.expires_at,
            stored_status=str(lot.status),
            reason=lot.reason,
        )


@strawberry.type(description="An append-only record of one change to an account.")
class LedgerEntry(relay.Node):
    id: relay.NodeID[int]
    type: LedgerEntryType
    delta: Credits = strawberry.field(description="Change to the total balance; negative for spends")
    free_delta: Credits
    paid_delta: Credits
    held_delta: Credits
    owed_delta: Credits = strawberry.field(
        description="Change to what the account owes: plus for the part of a spend its overdraft covered,"
        " minus for what a grant paid back"
    )
    balance_after: Credits
    held_after: Credits
    version: int
    reason: str | None
    created_at: datetime

    @classmethod
    def of(cls, entry: tables.LedgerEntry) -> LedgerEntry:
        return cls(
            id=entry.id,
            type=LedgerEntryType(entry.entry_type),
            delta=Credits(entry.amount),
            free_delta=Credits(entry.free_amount),
            paid_delta=Credits(entry.paid_amount),
            held_delta=Credits(entry.held_delta),
            owed_delta=Credits(entry.owed_delta),
            balance_after=Credits(entry.balance_after),
            held_after=Credits(entry.held_after),
            version=entry.version,
            reason=entry.reason,
            created_at=entry.created_at,
        )


@strawberry.type(description="Credit spent by an agent on one activity, with its free/paid split.")
class UsageEvent(relay.Node):
    id: relay.NodeID[int]
    credits: Credits
    free_credits: Credits
    paid_credits: Credits
    activity: str
    agent_id: str
    occurred_at: datetime
    agent_run_id: str | None = strawberry.field(
        default=None, description="The agent run it belongs to (spendCredits' or the captured hold's agentRunId)"
    )

    @strawberry.field(
        description="The part of `credits` an overdraft covered: `credits` - `freeCredits` - `paidCredits`"
    )
    def owed_credits(self) -> Credits:
        return Credits(self.credits - self.free_credits - self.paid_credits)

    @classmethod
    def recorded(cls, event: UsageRecorded) -> UsageEvent:
        """From an event on the bus, without a database read."""
        return cls(
            id=event.usage_event_id,
            credits=Credits(event.credits),
            free_credits=Credits(event.free_credits),
            paid_credits=Credits(event.paid_credits),
            activity=event.activity,
            agent_id=event.agent_id,
            occurred_at=event.occurred_at,
            agent_run_id=event.run_id,
        )

    @classmethod
    def of(cls, event: tables.UsageEvent) -> UsageEvent:
        return cls(
            id=event.id,
            credits=Credits(event.credits),
            free_credits=Credits(event.free_credits),
            paid_credits=Credits(event.paid_credits),
            activity=event.activity,
            agent_id=event.agent_id,
            occurred_at=event.occurred_at,
            agent_run_id=event.run_id,
        )


@strawberry.type(description="Credit set aside for a long-running task: lowers `available`, not `total`.")
class Hold(relay.Node):
    id: relay.NodeID[int]
    stored_status: strawberry.Private[str]
    amount: Credits
    captured: Credits
    agent_id: str
    activity: str
    quantity: Credits | None = strawberry.field(
        description="The units of `activity` the amount was priced from by the rate card; null when any of it"
        " was given in credits"
    )
    created_at: datetime
    expires_at: datetime
    agent_run_id: str | None = strawberry.field(default=None, description="The agent run it belongs to")

    @strawberry.field(
        description="ACTIVE, CAPTURED, RELEASED or EXPIRED; EXPIRED from `expiresAt` on, also"
        " before the sweep has released it"
    )
    def status(self, info: Info[Context, None]) -> str:
        if self.stored_status == tables.HoldStatus.ACTIVE and not is_live(self.expires_at, info.context.now()):
            return str(tables.HoldStatus.EXPIRED)
        return self.stored_status

    @classmethod
    def of(cls, hold: tables.Hold) -> Hold:
        return cls(
            id=hold.id,
            stored_status=str(hold.status),
            amount=Credits(hold.amount),
            captured=Credits(hold.captured),
            agent_id=hold.agent_id,
            activity=hold.activity,
            quantity=None if hold.quantity is None else Credits(hold.quantity),
            created_at=hold.created_at,
            expires_at=hold.expires_at,
            agent_run_id=hold.run_id,
        )


@strawberry.type(description="A user's own credit, or an organization's shared pool.")
class CreditAccount(relay.Node):
    id: relay.NodeID[int]

    @strawberry.field
    async def balance(self, info: Info[Context, None]) -> CreditBalance:
        require_read_scope(info, BALANCE_READ)
        return CreditBalance.of(await info.context.loaders.balance.load(self.id))

    @strawberry.field
    async def lots(
        self, info: Info[Context, None], first: int | None = None, after: str | None = None
    ) -> relay.Connection[CreditLot]:
        require_read_scope(info, BALANCE_READ)
        return await keyset_page(tables.CreditLot.filter(account_id=self.id), first, after, CreditLot.of)

    @strawberry.field
    async def ledger(
        self, info: Info[Context, None], first: int | None = None, after: str | None = None
    ) -> relay.Connection[LedgerEntry]:
        require_read_scope(info, BALANCE_READ)
        return await keyset_page(tables.LedgerEntry.filter(account_id=self.id), first, after, LedgerEntry.of)

    @strawberry.field(description="Usage events paid from this account, newest first")
    async def usage(
        self,
        info: Info[Context, None],
        first: int | None = None,
        after: str | None = None,
        filter: UsageFilter | None = None,
    ) -> relay.Connection[UsageEvent]:
        require_read_scope(info, BALANCE_READ)
        query = filtered(tables.UsageEvent.filter(account_id=self.id), criteria(filter))
        return await keyset_page(query, first, after, UsageEvent.of)

    @strawberry.field
    async def holds(
        self, info: Info[Context, None], first: int | None = None, after: str | None = None
    ) -> relay.Connection[Hold]:
        require_read_scope(info, BALANCE_READ)
        return await keyset_page(tables.Hold.filter(account_id=self.id), first, after, Hold.of)

    @strawberry.field(description="Payments for credit, newest first")
    async def transactions(
        self,
        info: Info[Context, None],
        first: int | None = None,
        after: str | None = None,
        filter: TransactionFilter | None = None,
    ) -> relay.Connection[Transaction]:
        require_read_scope(info, BILLING_READ)
        query = tables.Transaction.filter(account_id=self.id)
        if filter is not None:
            query = filter.apply(query)
        return await keyset_page(query, first, after, Transaction.of)

    @strawberry.field(description="Balance alerts (balance.low, balance.depleted), open and resolved, newest first")
    async def alerts(
        self,
        info: Info[Context, None],
        first: int | None = None,
        after: str | None = None,
        status: AlertStatus | None = None,
    ) -> relay.Connection[Alert]:
        require_read_scope(info, BALANCE_READ)
        query = tables.Alert.filter(account_id=self.id)
        if status is not None:
            query = query.filter(status=status.value)
        return await with_event_ids(await keyset_page(query, first, after, Alert.of))

    @strawberry.field(description="The balance-alert levels in force (setBalanceAlerts), or the deployment's default")
    async def alert_levels(self, info: Info[Context, None]) -> AlertLevels:
        require_read_scope(info, BALANCE_READ)
        text = await tables.CreditAccount.filter(id=self.id).values_list("alert_levels", flat=True)
        stored = text[0] if text else None
        levels = ledger_alerts.default_levels() if stored is None else ledger_alerts.parse_levels(str(stored))
        return AlertLevels(levels=[Credits(level) for level in levels], is_default=stored is None)

    @strawberry.field(description="Invoices of successful payments, newest first")
    async def invoices(
        self, info: Info[Context, None], first: int | None = None, after: str | None = None
    ) -> relay.Connection[Invoice]:
        require_read_scope(info, BILLING_READ)
        return await keyset_page(tables.Invoice.filter(account_id=self.id), first, after, Invoice.of)

    @strawberry.field(description="The live subscription, or the last one that was ever paid for")
    async def subscription(self, info: Info[Context, None]) -> Subscription | None:
        require_read_scope(info, BILLING_READ)
        row = (
            await tables.Subscription.filter(account_id=self.id)
            .filter(Q(status__in=LIVE_SUBSCRIPTION) | Q(current_period_start__isnull=False))
            .order_by("-id")
            .first()
        )
        return None if row is None else Subscription.of(row)

    @strawberry.field(description="Saved cards (card-on-file gateways only)")
    async def payment_methods(self, info: Info[Context, None]) -> list[PaymentMethod]:
        require_read_scope(info, BILLING_READ)
        rows = await tables.PaymentMethod.filter(account_id=self.id, removed_at=None).order_by("id")
        return [PaymentMethod.of(row) for row in rows]

    @strawberry.field(description="Buying credit by itself below a threshold; null until it is set up")
    async def auto_top_up(self, info: Info[Context, None]) -> AutoTopUp | None:
        require_read_scope(info, BILLING_READ)
        return await AutoTopUp.load(info, self.id)

    @strawberry.field(description="Usage of this account by time bucket, optionally per activity, agent or member")
    async def usage_report(self, info: Info[Context, None], input: UsageReportInput) -> UsageReportResult:
        if service_lacks(principal(info), BALANCE_READ):
            return Forbidden(message=scope_message(BALANCE_READ))
        return await usage_report(("account_id", self.id), input)

    @strawberry.field(
        description="The agent tokens bound to this account (createAgentToken), newest first: for its user, its"
        " organization's OWNER and BILLING members, its portal sessions, admins and services with usage:write"
    )
    async def agent_tokens(
        self, info: Info[Context, None], first: int | None = None, after: str | None = None
    ) -> relay.Connection[ApiToken]:
        who = principal(info)
        if who.delegated:
            raise ForbiddenError("An agent token does not see the account's other tokens")
        if who.kind is TokenKind.SERVICE and not who.has_scope(USAGE_WRITE):
            raise ForbiddenError(scope_message(USAGE_WRITE))
        query = tables.ApiToken.filter(account_id=self.id, kind=TokenKind.SERVICE)
        return await token_page(info, query, first, after)

    @strawberry.field(
        description="Its spend limits, in the order they were set, with what counts against each now (setSpendLimit)"
    )
    async def spend_limits(self, info: Info[Context, None]) -> list[SpendLimit]:
        require_read_scope(info, BALANCE_READ)
        return [SpendLimit.of(row.view) for row in await info.context.loaders.limits_of_account.load(self.id)]

    @strawberry.field(
        description="The velocity limits that tripped and pause their subject's spending now (resumeAgent ends a pause)"
    )
    async def limit_tripped(self, info: Info[Context, None]) -> list[SpendLimit]:
        require_read_scope(info, BALANCE_READ)
        now = info.context.now()
        rows = await info.context.loaders.limits_of_account.load(self.id)
        return [
            SpendLimit.of(row.view) for row in rows if row.view.kind is tables.LimitKind.VELOCITY and row.paused_at(now)
        ]

    @strawberry.field(
        description="When the available credit runs out at the rate of the last 7 days' usage (active holds"
        " counted against it); null when the account has no usage in that window"
    )
    async def forecast(self, info: Info[Context, None]) -> CreditForecast | None:
        require_read_scope(info, BALANCE_READ)
        found = await info.context.loaders.forecast.load(self.id)
        return None if found is None else CreditForecast.of(found)


@strawberry.type(description="A group of users. Members see it and its members; BILLING and OWNER its billing.")
class Organization(relay.Node):
    id: relay.NodeID[int]
    name: str

    @strawberry.field(description="The platform's own id for it (immutable once set); null if none")
    async def external_id(self, info: Info[Context, None]) -> str | None:
        org = await info.context.loaders.organization.load(self.id)
        return None if org is None else org.external_id

    @strawberry.field(description="The platform's small JSON object about it; null if none")
    async def metadata(self, info: Info[Context, None]) -> Metadata | None:
        org = await info.context.loaders.organization.load(self.id)
        return None if org is None or org.metadata is None else Metadata(org.metadata)

    @strawberry.field(description="Everyone in the organization, with their roles")
    async def members(self, info: Info[Context, None]) -> list[Membership]:
        if await roles_in(info, self.id) is None:
            raise ForbiddenError("Only members see the members of an organization")
        return [Membership.of(m) for m in await info.context.loaders.memberships_of_organization.load(self.id)]

    @strawberry.field(description="Your roles here (empty if you are not a member)")
    async def my_roles(self, info: Info[Context, None]) -> list[MemberRole]:
        return sorted(await roles_in(info, self.id) or ())

    @strawberry.field(description="Usage events inside the organization, newest first. BILLING and OWNER only")
    async def usage(
        self,
        info: Info[Context, None],
        first: int | None = None,
        after: str | None = None,
        filter: UsageFilter | None = None,
    ) -> relay.Connection[UsageEvent]:
        if not (await roles_in(info, self.id) or frozenset()) & BILLING_ROLES:
            raise ForbiddenError("Organization usage needs the BILLING or OWNER role")
        query = filtered(tables.UsageEvent.filter(organization_id=self.id), criteria(filter))
        return await keyset_page(query, first, after, UsageEvent.of)

    @strawberry.field(description="Usage inside the organization, whoever paid for it. BILLING and OWNER only")
    async def usage_report(self, info: Info[Context, None], input: UsageReportInput) -> UsageReportResult:
        if not (await roles_in(info, self.id) or frozenset()) & BILLING_ROLES:
            return Forbidden(message="Usage reports need the BILLING or OWNER role")
        return await usage_report(("organization_key", self.id), input)

    @strawberry.field(
        description="Your own usage inside the organization, by time bucket: any member (groupBy NONE or MEMBER)."
        " Forbidden to anyone who is not a member"
    )
    async def my_usage_report(self, info: Info[Context, None], input: UsageReportInput) -> UsageReportResult:
        who = principal(info)
        if who.user_id is None or await roles_in(info, self.id) is None:
            return Forbidden(message="Only a member of the organization has usage of their own in it")
        return await usage_report(("organization_key", self.id), input, only_member=who.user_id)

    @strawberry.field(description="Your own membership: your roles, budget and spending here; null if not a member")
    async def my_membership(self, info: Info[Context, None]) -> Membership | None:
        who = principal(info)
        if who.user_id is None:
            return None
        for membership in await info.context.loaders.memberships_of_user.load(who.user_id):
            if membership.organization_id == self.id:
                return Membership.of(membership)
        return None

    @strawberry.field(description="Invitations still waiting for an answer, newest first. OWNER only")
    async def invitations(
        self, info: Info[Context, None], first: int | None = None, after: str | None = None
    ) -> relay.Connection[Invitation]:
        if MemberRole.OWNER not in (await roles_in(info, self.id) or frozenset()):
            raise ForbiddenError("An organization's invitations need the OWNER role")
        now = info.context.now()
        query = tables.Invitation.filter(
            organization_id=self.id, status=tables.InvitationStatus.PENDING, expires_at__gt=now
        )
        # Invitation.of reads the model's role_set.
        return await keyset_page(query, first, after, lambda row: Invitation.of(row, now), plain_rows=False)

    @strawberry.field(description="The shared credit pool, if enabled. BILLING and OWNER members only")
    async def credit_pool(self, info: Info[Context, None]) -> CreditAccount | None:
        if not (await roles_in(info, self.id) or frozenset()) & BILLING_ROLES:
            raise ForbiddenError("The credit pool needs the BILLING or OWNER role")
        pool = await info.context.loaders.pool_of_organization.load(self.id)
        return None if pool is None else CreditAccount(id=pool.id)


@strawberry.type(description="A user's place in an organization, with their roles there.")
class Membership:
    roles: list[MemberRole]
    organization_id: strawberry.Private[int]
    member_id: strawberry.Private[int]

    @classmethod
    def of(cls, membership: tables.Membership) -> Membership:
        return cls(
            roles=sorted(membership.role_set),
            organization_id=membership.organization_id,
            member_id=membership.user_id,
        )

    @strawberry.field
    async def organization(self, info: Info[Context, None]) -> Organization:
        org = await info.context.loaders.organization.load(self.organization_id)
        assert org is not None
        return Organization(id=org.id, name=org.name)

    @strawberry.field(description="The member's user ID")
    def user_id(self) -> strawberry.ID:
        return strawberry.ID(encode_id("User", self.member_id))

    @strawberry.field
    async def email(self, info: Info[Context, None]) -> str:
        user = await info.context.loaders.user.load(self.member_id)
        assert user is not None
        return user.email

    @strawberry.field(
        description="Monthly limit on spending from the pool; null: none. BILLING/OWNER, and the member themselves"
    )
    async def monthly_budget(self, info: Info[Context, None]) -> Credits | None:
        await _require_billing_or_self(info, self.organization_id, self.member_id)
        limit = (await info.context.loaders.budgets_of_organization.load(self.organization_id)).get(self.member_id)
        return None if limit is None else Credits(limit)

    @strawberry.field(
        description="Spent from the pool this calendar month (UTC). BILLING/OWNER, and the member themselves"
    )
    async def spent_this_month(self, info: Info[Context, None]) -> Credits:
        await _require_billing_or_self(info, self.organization_id, self.member_id)
        spent = await info.context.loaders.spent_this_month.load(self.organization_id)
        return Credits(spent.get(self.member_id, 0))

    @strawberry.field(
        description="The member's own spend limits on the pool (scope MEMBER), with their usage; empty without a"
        " pool. BILLING/OWNER only"
    )
    async def spend_limits(self, info: Info[Context, None]) -> list[SpendLimit]:
        await _require_billing(info, self.organization_id)
        pool = await info.context.loaders.pool_of_organization.load(self.organization_id)
        if pool is None:
            return []
        rows = await info.context.loaders.limits_of_account.load(pool.id)
        return [
            SpendLimit.of(row.view)
            for row in rows
            if row.view.scope is tables.LimitScope.MEMBER and row.view.user_id == self.member_id
        ]


async def _require_billing(info: Info[Context, None], organization_id: int) -> None:
    if not (await roles_in(info, organization_id) or frozenset()) & BILLING_ROLES:
        raise ForbiddenError("This needs the BILLING or OWNER role")


async def _require_billing_or_self(info: Info[Context, None], organization_id: int, member_id: int) -> None:
    """BILLING and OWNER read every member's budget and spending; a plain member reads their own only."""
    roles = await roles_in(info, organization_id)
    if roles is not None and principal(info).user_id == member_id:
        return
    if not (roles or frozenset()) & BILLING_ROLES:
        raise ForbiddenError("This needs the BILLING or OWNER role (a member sees only their own)")


def _refuse_portal(info: Info[Context, None]) -> None:
    """A portal session sees its account, not the user's organizations or invitations."""
    if portal_account(principal(info)) is not None:
        raise ForbiddenError(PORTAL_MESSAGE)


@strawberry.type
class User(relay.Node):
    id: relay.NodeID[int]
    email: str

    @strawberry.field(description="The platform's own id for the user (immutable once set); null if none")
    async def external_id(self, info: Info[Context, None]) -> str | None:
        user = await info.context.loaders.user.load(self.id)
        return None if user is None else user.external_id

    @strawberry.field(description="The platform's small JSON object about the user; null if none")
    async def metadata(self, info: Info[Context, None]) -> Metadata | None:
        user = await info.context.loaders.user.load(self.id)
        return None if user is None or user.metadata is None else Metadata(user.metadata)

    @strawberry.field
    async def credit(self, info: Info[Context, None]) -> CreditAccount:
        account = await info.context.loaders.account_of_user.load(self.id)
        assert account is not None, "every user has a credit account"
        return CreditAccount(id=account.id)

    @strawberry.field
    async def organizations(self, info: Info[Context, None]) -> list[Membership]:
        _refuse_portal(info)
        return [Membership.of(m) for m in await info.context.loaders.memberships_of_user.load(self.id)]

    @strawberry.field(
        description="Invitations to your email still waiting for your answer, newest first (acceptInvitation,"
        " declineInvitation)"
    )
    async def invitations(
        self, info: Info[Context, None], first: int | None = None, after: str | None = None
    ) -> relay.Connection[Invitation]:
        _refuse_portal(info)
        who = principal(info)
        if not who.is_admin and who.user_id != self.id:
            raise ForbiddenError("A user's invitations are theirs to see (and admins')")
        now = info.context.now()
        query = tables.Invitation.filter(
            email=self.email.lower(), status=tables.InvitationStatus.PENDING, expires_at__gt=now
        )
        # Invitation.of reads the model's role_set.
        return await keyset_page(query, first, after, lambda row: Invitation.of(row, now), plain_rows=False)

    @strawberry.field(
        description="This user's USER tokens and the agent tokens they minted, newest first. The user themselves and"
        " admins only"
    )
    async def api_tokens(
        self,
        info: Info[Context, None],
        first: int | None = None,
        after: str | None = None,
        revoked: Annotated[
            bool | None,
            strawberry.argument(description="true: only revoked tokens; false: only tokens not revoked; null: both"),
        ] = None,
    ) -> relay.Connection[ApiToken]:
        who = principal(info)
        if not (who.is_admin or (who.kind is TokenKind.USER and who.user_id == self.id)):
            raise ForbiddenError("Only the user themselves and admins see a user's tokens")
        query = tables.ApiToken.filter(user_id=self.id)
        if revoked is not None:
            query = query.filter(revoked_at__isnull=not revoked)
        return await token_page(info, query, first, after)


@strawberry.type(description="A bearer token: its name, kind, scopes and lifetime. Its secret is shown once only.")
class ApiToken(relay.Node):
    id: relay.NodeID[int]
    name: str
    kind: TokenKind
    scopes: list[str]
    prefix: str | None = strawberry.field(
        description="The first characters of the secret, to tell tokens apart; null for tokens older than prefixes"
    )
    created_at: datetime
    last_used_at: datetime | None = strawberry.field(
        description="When it last authenticated, written every CREDITLINE_TOKEN_USAGE_FLUSH_SECONDS (not per request)"
    )
    expires_at: datetime | None = strawberry.field(description="Its fixed expiry; null: none")
    idle_timeout_seconds: int | None = strawberry.field(
        description="Sliding expiry: it also expires this long after its last use (its creation if never used)"
    )
    revoked_at: datetime | None
    status: ApiTokenStatus = strawberry.field(
        description="ACTIVE, EXPIRED (past expiresAt, or idle for idleTimeoutSeconds by lastUsedAt) or REVOKED"
    )
    account_id: strawberry.ID | None = strawberry.field(
        description="The one CreditAccount it is bound to (portal sessions and agent tokens); null: none"
    )
    agent_id: str | None = strawberry.field(description="An agent token: the one agentId it spends as; null: any")
    activities: list[str] | None = strawberry.field(
        description="An agent token: the activities it may spend on; null: any"
    )
    user_pk: strawberry.Private[int | None]

    @classmethod
    def of(cls, row: Any, now: datetime) -> ApiToken:
        """From a row of ``api_tokens`` (a model, or an object of its ``values()``)."""
        return cls(
            id=row.id,
            name=row.name,
            kind=TokenKind(row.kind),
            scopes=row.scopes.split(),
            prefix=row.prefix,
            created_at=row.created_at,
            last_used_at=row.last_used_at,
            expires_at=row.expires_at,
            idle_timeout_seconds=row.idle_timeout_seconds,
            revoked_at=row.revoked_at,
            status=status_of(row, now),
            account_id=None if row.account_id is None else strawberry.ID(encode_id("CreditAccount", row.account_id)),
            agent_id=row.agent_id,
            activities=None if row.activities is None else row.activities.split(),
            user_pk=row.user_id,
        )

    @strawberry.field(description="An agent token's own caps (scope TOKEN): the one it was minted with, if any")
    async def spend_limits(self) -> list[SpendLimit]:
        return [SpendLimit.of(view) for view in await token_limits(self.id)]

    @strawberry.field(
        description="The user a USER token belongs to; of an agent token a user minted, that user (its spends name"
        " them); null otherwise"
    )
    async def user(self, info: Info[Context, None]) -> User | None:
        if self.user_pk is None:
            return None
        row = await info.context.loaders.user.load(self.user_pk)
        return None if row is None else User(id=row.id, email=row.email)


async def token_page(
    info: Info[Context, None], query: QuerySet[tables.ApiToken], first: int | None, after: str | None
) -> relay.Connection[ApiToken]:
    now = info.context.now()
    return await keyset_page(query, first, after, lambda row: ApiToken.of(row, now))


@strawberry.type(description="A committed change of an account's balance; the first one is a SNAPSHOT.")
class BalanceEvent:
    account: CreditAccount
    balance: CreditBalance
    delta: Credits = strawberry.field(description="Change to the total balance; 0 for holds and snapshots")
    reason: str = strawberry.field(description="SNAPSHOT, SPEND, GRANT, EXPIRE, HOLD, CAPTURE, RELEASE, ...")
    version: int = strawberry.field(description="Goes up by one per change of this account: a gap means a miss")
    occurred_at: datetime
    changes: int = strawberry.field(
        default=1,
        description="How many changes this event covers: 1, or a spendCreditsBatch's changes of the account (its"
        " version went up by that many; delta and balance are the batch's)",
    )


@strawberry.type(description="The price of one unit of an activity.")
class Rate:
    activity: str
    unit: str
    price: Credits = strawberry.field(description="Credits per unit")
