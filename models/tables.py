"""Tortoise ORM tables.

Amounts of credit are integer micro-credits (1 credit = 1 000 000) in ``BigIntField`` columns: Tortoise keeps
``DecimalField`` as text on SQLite, and integers are exact everywhere.

Every table sets ``_no_comments``: otherwise Tortoise reads and parses this file's source once per class at import
(for ``#:`` field comments, which nothing here uses), 1.3 s of every process's start: each CLI command, server and
worker.
"""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model


class CreditKind(StrEnum):
    FREE = "FREE"
    PAID = "PAID"


class LotSource(StrEnum):
    SIGNUP_BONUS = "SIGNUP_BONUS"
    PROMOTION = "PROMOTION"
    TOP_UP = "TOP_UP"
    AUTO_TOP_UP = "AUTO_TOP_UP"
    SUBSCRIPTION = "SUBSCRIPTION"
    ADJUSTMENT = "ADJUSTMENT"


class LotStatus(StrEnum):
    ACTIVE = "ACTIVE"
    DEPLETED = "DEPLETED"
    EXPIRED = "EXPIRED"
    VOIDED = "VOIDED"


class LedgerEntryType(StrEnum):
    GRANT = "GRANT"
    SPEND = "SPEND"
    EXPIRE = "EXPIRE"
    VOID = "VOID"
    HOLD = "HOLD"
    CAPTURE = "CAPTURE"
    RELEASE = "RELEASE"
    REFUND = "REFUND"
    ADJUSTMENT = "ADJUSTMENT"


class HoldStatus(StrEnum):
    ACTIVE = "ACTIVE"
    CAPTURED = "CAPTURED"
    RELEASED = "RELEASED"
    EXPIRED = "EXPIRED"


class MemberRole(StrEnum):
    OWNER = "OWNER"
    BILLING = "BILLING"
    MEMBER = "MEMBER"


class TokenKind(StrEnum):
    USER = "USER"
    SERVICE = "SERVICE"
    ADMIN = "ADMIN"
    PORTAL = "PORTAL"
    """A portal session: reads one account and pays for it (top-up, cards, subscription, auto top-up)."""


EXTERNAL_ID_MAX_LENGTH = 255


class User(Model):
    _no_comments = True
    id = fields.BigIntField(primary_key=True)
    email = fields.CharField(max_length=320, unique=True)
    external_id = fields.CharField(max_length=EXTERNAL_ID_MAX_LENGTH, null=True, unique=True)
    """The platform's own id for it; immutable once set."""
    metadata: fields.Field[dict[str, object] | None] = fields.JSONField(null=True)
    """A small JSON object the platform keeps here (null: none)."""
    created_at = fields.DatetimeField()

    class Meta:
        table = "users"


class Organization(Model):
    _no_comments = True
    id = fields.BigIntField(primary_key=True)
    name = fields.CharField(max_length=200)
    external_id = fields.CharField(max_length=EXTERNAL_ID_MAX_LENGTH, null=True, unique=True)
    """The platform's own id for it; immutable once set."""
    metadata: fields.Field[dict[str, object] | None] = fields.JSONField(null=True)
    """A small JSON object the platform keeps here (null: none)."""
    created_at = fields.DatetimeField()

    class Meta:
        table = "organizations"


class Membership(Model):
    _no_comments = True
    id = fields.BigIntField(primary_key=True)
    organization: fields.ForeignKeyRelation[Organization] = fields.ForeignKeyField(
        "models.Organization", related_name="memberships", on_delete=fields.CASCADE
    )
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="memberships", on_delete=fields.CASCADE
    )
    roles = fields.CharField(max_length=64, description="Comma-separated MemberRole values")
    created_at = fields.DatetimeField()

    organization_id: int
    user_id: int

    class Meta:
        table = "memberships"
        unique_together = (("organization", "user"),)

    @property
    def role_set(self) -> frozenset[MemberRole]:
        return frozenset(MemberRole(role) for role in self.roles.split(",") if role)


class InvitationStatus(StrEnum):
    PENDING = "PENDING"
    ACCEPTED = "ACCEPTED"
    DECLINED = "DECLINED"
    REVOKED = "REVOKED"
    EXPIRED = "EXPIRED"
    """Never stored: a PENDING invitation past its ``expires_at`` is shown as EXPIRED."""


class Invitation(Model):
    """An invitation to join an organization with some roles, addressed to an email.

    Only the user whose email it is may accept or decline it (matched when they do, so an invitation to an
    email nobody has registered yet waits for them); an OWNER or an admin may revoke it; it cannot be
    answered after ``expires_at``. ``closed_at``/``closed_by`` say when and by whom it stopped being PENDING.
    """

    _no_comments = True

    id = fields.BigIntField(primary_key=True)
    organization: fields.ForeignKeyRelation[Organization] = fields.ForeignKeyField(
        "models.Organization", related_name="invitations", on_delete=fields.CASCADE
    )
    email = fields.CharField(max_length=320, description="Lower-cased, as users' emails are")
    roles = fields.CharField(max_length=64, description="Comma-separated MemberRole values")
    status = fields.CharEnumField(InvitationStatus, max_length=10, default=InvitationStatus.PENDING)
    invited_by: fields.ForeignKeyNullableRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="invitations_sent", null=True, on_delete=fields.SET_NULL
    )
    closed_by: fields.ForeignKeyNullableRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="invitations_closed", null=True, on_delete=fields.SET_NULL
    )
    idempotency_scope = fields.CharField(max_length=100)
    idempotency_key = fields.CharField(max_length=255, null=True)
    request_hash = fields.CharField(max_length=64)
    created_at = fields.DatetimeField()
    expires_at = fields.DatetimeField()
    closed_at = fields.DatetimeField(null=True)

    organization_id: int
    invited_by_id: int | None
    closed_by_id: int | None

    class Meta:
        table = "invitations"
        # A key without a value (NULL) never collides: invitations sent without one are not deduplicated.
        unique_together = (("idempotency_scope", "idempotency_key"),)
        indexes = (("organization_id", "status"), ("email", "status"))

    @property
    def role_set(self) -> frozenset[MemberRole]:
        return frozenset(MemberRole(role) for role in self.roles.split(",") if role)


class CreditAccount(Model):
    """The credit account of a user, or the shared pool of an organization.

    ``balance`` caches the sum of ``remaining`` over the lots of the account (expired lots keep counting here
    until the sweep records their expiry; reads leave them out at their instant). ``held`` is credit set aside
    by active holds. ``version`` goes up by one with every ledger change.
    """

    _no_comments = True

    id = fields.BigIntField(primary_key=True)
    user: fields.ForeignKeyNullableRelation[User] = fields.OneToOneField(
        "models.User", related_name="account", null=True, on_delete=fields.RESTRICT
    )
    organization: fields.ForeignKeyNullableRelation[Organization] = fields.OneToOneField(
        "models.Organization", related_name="pool", null=True, on_delete=fields.RESTRICT
    )
    balance = fields.BigIntField(default=0)
    held = fields.BigIntField(default=0)
    version = fields.BigIntField(default=0)
    overdraft = fields.BigIntField(
        default=0, db_default=0, description="How far below zero available may go, in micro-credits"
    )
    owed = fields.BigIntField(
        default=0, db_default=0, description="Credit spent beyond the lots, to be paid back by grants"
    )
    spend_limits = fields.IntField(default=0, db_default=0, description="How many spend limits the account has")
    """Read with the account lock, so a spend on an account without limits costs no extra statement."""
    alert_levels = fields.CharField(
        max_length=500, null=True, description="Low-balance alert levels, micro-credits, comma-separated"
    )
    """Read with the account lock: a spend learns whether it crosses one without a statement more. NULL: the
    deployment's default level (``CREDITLINE_DEFAULT_LOW_BALANCE_CREDITS``); empty: no alerts."""
    created_at = fields.DatetimeField()

    user_id: int | None
    organization_id: int | None

    class Meta:
        table = "credit_accounts"


class CreditLot(Model):
    _no_comments = True
    id = fields.BigIntField(primary_key=True)
    account: fields.ForeignKeyRelation[CreditAccount] = fields.ForeignKeyField(
        "models.CreditAccount", related_name="lots", on_delete=fields.RESTRICT
    )
    kind = fields.CharEnumField(CreditKind, max_length=8)
    source = fields.CharEnumField(LotSource, max_length=16)
    amount = fields.BigIntField()
    remaining = fields.BigIntField()
    status = fields.CharEnumField(LotStatus, max_length=12, default=LotStatus.ACTIVE)
    granted_at = fields.DatetimeField()
    expires_at = fields.DatetimeField(null=True)
    reason = fields.CharField(max_length=500, null=True)
    expiring_notified_at = fields.DatetimeField(null=True, description="When credit.expiring was emitted for it")

    account_id: int

    class Meta:
        table = "credit_lots"
        indexes = (("account_id", "status"),)


class Hold(Model):
    _no_comments = True
    id = fields.BigIntField(primary_key=True)
    account: fields.ForeignKeyRelation[CreditAccount] = fields.ForeignKeyField(
        "models.CreditAccount", related_name="holds", on_delete=fields.RESTRICT
    )
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="holds", on_delete=fields.RESTRICT
    )
    organization: fields.ForeignKeyNullableRelation[Organization] = fields.ForeignKeyField(
        "models.Organization", related_name="holds", null=True, on_delete=fields.RESTRICT
    )
    agent_id = fields.CharField(max_length=200)
    activity = fields.CharField(max_length=100)
    run_id = fields.CharField(max_length=200, null=True, description="The agent run it belongs to")
    token_id = fields.BigIntField(null=True, description="The API token that placed it")
    quantity = fields.BigIntField(null=True, description="Units priced by the rate card, in millionths")
    amount = fields.BigIntField()
    captured = fields.BigIntField(default=0)
    status = fields.CharEnumField(HoldStatus, max_length=10, default=HoldStatus.ACTIVE)
    created_at = fields.DatetimeField()
    expires_at = fields.DatetimeField()
    settled_at = fields.DatetimeField(null=True)

    account_id: int
    user_id: int
    organization_id: int | None

    class Meta:
        table = "holds"
        # The sweep finds timed-out holds by the first; an account, or a member of a pool, its active holds by
        # the second (the held credit and the member budget read them under the account lock).
        indexes = (("status", "expires_at"), ("account_id", "status"))


class UsageEvent(Model):
    _no_comments = True
    id = fields.BigIntField(primary_key=True)
    account: fields.ForeignKeyRelation[CreditAccount] = fields.ForeignKeyField(
        "models.CreditAccount", related_name="usage_events", on_delete=fields.RESTRICT
    )
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="usage_events", on_delete=fields.RESTRICT
    )
    organization: fields.ForeignKeyNullableRelation[Organization] = fields.ForeignKeyField(
        "models.Organization", related_name="usage_events", null=True, on_delete=fields.RESTRICT
    )
    hold: fields.ForeignKeyNullableRelation[Hold] = fields.ForeignKeyField(
        "models.Hold", related_name="usage_events", null=True, on_delete=fields.RESTRICT
    )
    agent_id = fields.CharField(max_length=200)
    activity = fields.CharField(max_length=100)
    run_id = fields.CharField(max_length=200, null=True, description="The agent run it belongs to")
    token_id = fields.BigIntField(null=True, description="The API token that spent it")
    quantity = fields.BigIntField(null=True, description="Units priced by the rate card, in millionths")
    credits = fields.BigIntField()
    free_credits = fields.BigIntField()
    paid_credits = fields.BigIntField()
    owed_credits = fields.BigIntField(
        default=0, db_default=0, description="The part spent on overdraft, owed by the account"
    )
    occurred_at = fields.DatetimeField()

    account_id: int
    user_id: int
    organization_id: int | None
    hold_id: int | None

    class Meta:
        table = "usage_events"
        # A run's events (usage filtered by agentRunId) are found without reading the account's others.
        indexes = (("account_id", "id"), ("account_id", "run_id", "id"))


class UsageAllocation(Model):
    """How much of one usage event came from one lot."""

    _no_comments = True

    id = fields.BigIntField(primary_key=True)
    usage_event: fields.ForeignKeyRelation[UsageEvent] = fields.ForeignKeyField(
        "models.UsageEvent", related_name="allocations", on_delete=fields.RESTRICT
    )
    lot: fields.ForeignKeyRelation[CreditLot] = fields.ForeignKeyField(
        "models.CreditLot", related_name="allocations", on_delete=fields.RESTRICT
    )
    kind = fields.CharEnumField(CreditKind, max_length=8)
    amount = fields.BigIntField()

    usage_event_id: int
    lot_id: int

    class Meta:
        table = "usage_allocations"


class LedgerEntry(Model):
    """One append-only change to an account. Never updated or deleted.

    ``amount`` is the change to the cached balance of the account in micro-credits (negative for spends
    and expiries), ``held_delta`` the change to its held credit, ``balance_after``/``held_after`` the
    cached values after.
    """

    _no_comments = True

    id = fields.BigIntField(primary_key=True)
    account: fields.ForeignKeyRelation[CreditAccount] = fields.ForeignKeyField(
        "models.CreditAccount", related_name="ledger_entries", on_delete=fields.RESTRICT
    )
    entry_type = fields.CharEnumField(LedgerEntryType, max_length=12)
    amount = fields.BigIntField()
    free_amount = fields.BigIntField(default=0)
    paid_amount = fields.BigIntField(default=0)
    held_delta = fields.BigIntField(default=0)
    owed_delta = fields.BigIntField(default=0, db_default=0)
    """The change to what the account owes: plus for an overdraft spend, minus for a repayment."""
    balance_after = fields.BigIntField()
    held_after = fields.BigIntField()
    version = fields.BigIntField()
    lot: fields.ForeignKeyNullableRelation[CreditLot] = fields.ForeignKeyField(
        "models.CreditLot", related_name="ledger_entries", null=True, on_delete=fields.RESTRICT
    )
    usage_event: fields.ForeignKeyNullableRelation[UsageEvent] = fields.ForeignKeyField(
        "models.UsageEvent", related_name="ledger_entries", null=True, on_delete=fields.RESTRICT
    )
    hold: fields.ForeignKeyNullableRelation[Hold] = fields.ForeignKeyField(
        "models.Hold", related_name="ledger_entries", null=True, on_delete=fields.RESTRICT
    )
    reason = fields.CharField(max_length=500, null=True)
    created_at = fields.DatetimeField()

    account_id: int
    lot_id: int | None
    usage_event_id: int | None
    hold_id: int | None

    class Meta:
        table = "ledger_entries"
        indexes = (("account_id", "id"),)


class IdempotencyRecord(Model):
    """The first result of a mutation, stored under the key of the caller so a replay returns it unchanged."""

    _no_comments = True

    id = fields.BigIntField(primary_key=True)
    scope = fields.CharField(max_length=100, description="The caller the key belongs to")
    key = fields.CharField(max_length=255)
    operation = fields.CharField(max_length=40)
    request_hash = fields.CharField(max_length=64)
    response = fields.TextField(null=True)
    created_at = fields.DatetimeField()

    class Meta:
        table = "idempotency_records"
        unique_together = (("scope", "key"),)


class ApiToken(Model):
    """A bearer token. Only a SHA-256 digest of the secret is stored, and the secret is shown once."""

    _no_comments = True

    id = fields.BigIntField(primary_key=True)
    kind = fields.CharEnumField(TokenKind, max_length=8)
    name = fields.CharField(max_length=200)
    user: fields.ForeignKeyNullableRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="tokens", null=True, on_delete=fields.CASCADE
    )
    account: fields.ForeignKeyNullableRelation[CreditAccount] = fields.ForeignKeyField(
        "models.CreditAccount",
        related_name="tokens",
        null=True,
        on_delete=fields.CASCADE,
    )
    """The one account this token is bound to (portal sessions, delegated agent tokens)."""
    scopes = fields.CharField(max_length=500, default="", description="Space-separated scopes")
    token_hash = fields.CharField(max_length=64, unique=True)
    prefix = fields.CharField(max_length=16, null=True)
    """The first characters of the secret, to recognise it by."""
    created_at = fields.DatetimeField()
    expires_at = fields.DatetimeField(null=True)
    idle_timeout_seconds = fields.IntField(null=True)
    """Sliding expiry: the token also expires this long after its last use."""
    last_used_at = fields.DatetimeField(null=True)
    """Written in batches, not on every request."""
    revoked_at = fields.DatetimeField(null=True)
    agent_id = fields.CharField(max_length=200, null=True)
    """A delegated agent token: the one agent it spends as (with ``account``)."""
    activities = fields.CharField(max_length=2000, null=True, description="Space-separated allowed activities")
    """A delegated agent token: the activities it may spend on (null: any)."""

    user_id: int | None
    account_id: int | None

    class Meta:
        table = "api_tokens"


class PortalCode(Model):
    """A short-lived, single-use code in a portal link: exchanging it opens a portal session (a PORTAL token).

    Only a SHA-256 digest of the code is stored. ``used_at`` is set once, by the exchange that wins.
    """

    _no_comments = True

    id = fields.BigIntField(primary_key=True)
    account: fields.ForeignKeyRelation[CreditAccount] = fields.ForeignKeyField(
        "models.CreditAccount", related_name="portal_codes", on_delete=fields.CASCADE
    )
    code_hash = fields.CharField(max_length=64, unique=True)
    created_by = fields.CharField(max_length=100, description="The idempotency scope of who minted it")
    return_url = fields.CharField(max_length=2000, null=True)
    created_at = fields.DatetimeField()
    expires_at = fields.DatetimeField()
    used_at = fields.DatetimeField(null=True)

    account_id: int

    class Meta:
        table = "portal_codes"


class LimitScope(StrEnum):
    ACCOUNT = "ACCOUNT"
    MEMBER = "MEMBER"
    AGENT = "AGENT"
    TOKEN = "TOKEN"


class LimitKind(StrEnum):
    CAP = "CAP"
    """At most ``amount`` per window."""
    VELOCITY = "VELOCITY"
    """A breaker: more than ``amount`` within ``window_length`` minutes pauses the subject's spending."""


class LimitWindow(StrEnum):
    DAY = "DAY"
    WEEK = "WEEK"
    MONTH = "MONTH"
    ROLLING_HOURS = "ROLLING_HOURS"
    TOTAL = "TOTAL"
    ROLLING_MINUTES = "ROLLING_MINUTES"
    """Velocity breakers only."""


class LimitAction(StrEnum):
    BLOCK = "BLOCK"
    NOTIFY = "NOTIFY"


class SpendLimit(Model):
    """A limit on spending from one account by a subject: the whole account, a member, an agent or a token.

    ``subject`` is the scope and its key in one string (``account``, ``member:<user id>``, ``agent:<agent id>``,
    ``token:<token id>``), so that one subject has one limit per kind and window. Amounts in micro-credits.
    """

    _no_comments = True

    id = fields.BigIntField(primary_key=True)
    account: fields.ForeignKeyRelation[CreditAccount] = fields.ForeignKeyField(
        "models.CreditAccount", related_name="spend_limits_set", on_delete=fields.CASCADE
    )
    scope = fields.CharEnumField(LimitScope, max_length=8)
    subject = fields.CharField(max_length=220)
    user: fields.ForeignKeyNullableRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="spend_limits", null=True, on_delete=fields.CASCADE
    )
    agent_id = fields.CharField(max_length=200, null=True)
    token: fields.ForeignKeyNullableRelation[ApiToken] = fields.ForeignKeyField(
        "models.ApiToken", related_name="spend_limits", null=True, on_delete=fields.CASCADE
    )
    kind = fields.CharEnumField(LimitKind, max_length=8, default=LimitKind.CAP)
    window = fields.CharEnumField(LimitWindow, max_length=16)
    window_length = fields.IntField(default=1, description="Hours of ROLLING_HOURS, minutes of ROLLING_MINUTES")
    time_zone = fields.CharField(max_length=64, default="UTC", description="IANA zone of DAY, WEEK and MONTH")
    amount = fields.BigIntField()
    action = fields.CharEnumField(LimitAction, max_length=8, default=LimitAction.BLOCK)
    warn_percent = fields.IntField(null=True, description="Warn once usage reaches this percent of amount")
    max_credits_per_run = fields.BigIntField(null=True)
    cooldown_seconds = fields.IntField(null=True, description="Velocity: pause length (null: until resumed)")
    tripped_at = fields.DatetimeField(null=True, description="Velocity: when it last tripped")
    paused_until = fields.DatetimeField(null=True, description="Velocity: the pause ends (null: until resumed)")
    paused = fields.BooleanField(default=False, db_default=False, description="Velocity: the subject is paused")
    reached_period = fields.BigIntField(null=True, description="The period whose reached event was emitted")
    """So that a BLOCK limit's refusals emit spend_limit.reached (or budget.reached) once per period."""
    created_at = fields.DatetimeField()
    updated_at = fields.DatetimeField()

    account_id: int
    user_id: int | None
    token_id: int | None

    class Meta:
        table = "spend_limits"
        unique_together = (("account_id", "subject", "kind", "window", "window_length", "action"),)


class SpendLimitUsage(Model):
    """What was spent against one limit in one period, kept in the spend transaction.

    ``period`` is the start of the period in Unix seconds (0 for TOTAL). ``run_id`` is empty, or a run's id for the
    run's own count under ``max_credits_per_run`` (with ``period`` 0).
    """

    _no_comments = True

    id = fields.BigIntField(primary_key=True)
    limit: fields.ForeignKeyRelation[SpendLimit] = fields.ForeignKeyField(
        "models.SpendLimit", related_name="usage", on_delete=fields.CASCADE
    )
    run_id = fields.CharField(max_length=200, default="")
    period = fields.BigIntField()
    spent = fields.BigIntField(default=0)

    limit_id: int

    class Meta:
        table = "spend_limit_usage"
        unique_together = (("limit_id", "run_id", "period"),)


class RollupDimension(StrEnum):
    ACTIVITY = "ACTIVITY"
    AGENT = "AGENT"
    MEMBER = "MEMBER"
    RUN = "RUN"


class UsageRollup(Model):
    """Usage summed per hour (UTC), account, organization and one dimension: activity, agent or member.

    Kept up to date in the spend transaction: each usage event adds to three rows, one per dimension, in one
    statement. A report reads only the rows of the dimension it groups by, so it reads at most hours x keys of
    that dimension, whatever the number of usage events and however the other dimensions combine with it.
    ``organization_key`` is the organization id, or 0 for none (a unique index treats NULLs as distinct, and
    the upsert needs one row per key).
    """

    _no_comments = True

    id = fields.BigIntField(primary_key=True)
    account_id = fields.BigIntField()
    organization_key = fields.BigIntField(default=0)
    dimension = fields.CharEnumField(RollupDimension, max_length=8)
    key = fields.CharField(max_length=200, description="The activity, the agent id or the member user id")
    bucket = fields.DatetimeField(description="Start of the UTC hour")
    events = fields.BigIntField(default=0)
    credits = fields.BigIntField(default=0)
    free_credits = fields.BigIntField(default=0)
    paid_credits = fields.BigIntField(default=0)

    class Meta:
        table = "usage_rollups"
        # Column order serves the reads: an account report scans (account_id, dimension, bucket range) in key
        # order, and an organization report the same on the second index.
        unique_together = (("account_id", "dimension", "bucket", "key", "organization_key"),)
        # The second: the sweep's run-out forecast reads the last 7 days of every account (models/forecast.py)
        # without scanning the whole table.
        indexes = (("organization_key", "dimension", "bucket", "key"), ("dimension", "bucket", "account_id"))


class TransactionType(StrEnum):
    TOP_UP = "TOP_UP"
    AUTO_TOP_UP = "AUTO_TOP_UP"
    SUBSCRIPTION = "SUBSCRIPTION"


class TransactionStatus(StrEnum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class SubscriptionStatus(StrEnum):
    INCOMPLETE = "INCOMPLETE"
    ACTIVE = "ACTIVE"
    PAST_DUE = "PAST_DUE"
    CANCELED = "CANCELED"


LIVE_SUBSCRIPTION = (SubscriptionStatus.INCOMPLETE, SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE)
"""A subscription in one of these states is the account's one subscription: it may still be paid for."""


class PaymentMethod(Model):
    """A saved card on a card-on-file gateway. Only the gateway reference is kept, never a card number."""

    _no_comments = True

    id = fields.BigIntField(primary_key=True)
    account: fields.ForeignKeyRelation[CreditAccount] = fields.ForeignKeyField(
        "models.CreditAccount", related_name="payment_methods", on_delete=fields.RESTRICT
    )
    gateway = fields.CharField(max_length=16)
    reference = fields.CharField(max_length=255, description="The gateway reference of the card")
    brand = fields.CharField(max_length=32)
    last4 = fields.CharField(max_length=4)
    exp_month = fields.IntField()
    exp_year = fields.IntField()
    is_default = fields.BooleanField(default=False)
    created_at = fields.DatetimeField()
    removed_at = fields.DatetimeField(null=True)

    account_id: int

    class Meta:
        table = "payment_methods"


class Subscription(Model):
    """A plan an account pays for each period, and each paid period grants the plan credit as a PAID lot.

    On card-on-file gateways the sweep renews it at period end, and on stripe the processor renews it and its
    webhooks move it. ``next_plan_id`` is a plan change that takes effect at the next renewal.
    """

    _no_comments = True

    id = fields.BigIntField(primary_key=True)
    account: fields.ForeignKeyRelation[CreditAccount] = fields.ForeignKeyField(
        "models.CreditAccount", related_name="subscriptions", on_delete=fields.RESTRICT
    )
    plan_id = fields.CharField(max_length=64)
    next_plan_id = fields.CharField(max_length=64, null=True)
    status = fields.CharEnumField(SubscriptionStatus, max_length=12)
    gateway = fields.CharField(max_length=16)
    payment_method: fields.ForeignKeyNullableRelation[PaymentMethod] = fields.ForeignKeyField(
        "models.PaymentMethod", related_name="subscriptions", null=True, on_delete=fields.RESTRICT
    )
    external_reference = fields.CharField(max_length=255, null=True, description="The processor subscription id")
    current_period_start = fields.DatetimeField(null=True)
    current_period_end = fields.DatetimeField(null=True)
    cancel_at_period_end = fields.BooleanField(default=False)
    canceled_at = fields.DatetimeField(null=True)
    status_reason = fields.CharField(max_length=500, null=True, description="Why it is PAST_DUE or CANCELED")
    failed_attempts = fields.IntField(default=0, description="Failed renewal charges in a row")
    next_attempt_at = fields.DatetimeField(null=True, description="When a PAST_DUE renewal is charged again")
    idempotency_scope = fields.CharField(max_length=100)
    idempotency_key = fields.CharField(max_length=255)
    request_hash = fields.CharField(max_length=64)
    created_at = fields.DatetimeField()

    account_id: int
    payment_method_id: int | None

    class Meta:
        table = "subscriptions"
        unique_together = (("idempotency_scope", "idempotency_key"),)
        indexes = (("account_id", "id"), ("status", "current_period_end"), ("external_reference",))


class Transaction(Model):
    """A payment for credit. PENDING until the gateway confirms it, then SUCCEEDED with a PAID lot, or FAILED.

    ``amount`` is in minor units of ``currency`` (cents for USD).
    """

    _no_comments = True

    id = fields.BigIntField(primary_key=True)
    account: fields.ForeignKeyRelation[CreditAccount] = fields.ForeignKeyField(
        "models.CreditAccount", related_name="transactions", on_delete=fields.RESTRICT
    )
    type = fields.CharEnumField(TransactionType, max_length=16)
    status = fields.CharEnumField(TransactionStatus, max_length=12, default=TransactionStatus.PENDING)
    credits = fields.BigIntField()
    amount = fields.BigIntField()
    currency = fields.CharField(max_length=3)
    gateway = fields.CharField(max_length=16)
    payment_method: fields.ForeignKeyNullableRelation[PaymentMethod] = fields.ForeignKeyField(
        "models.PaymentMethod", related_name="transactions", null=True, on_delete=fields.RESTRICT
    )
    gateway_reference = fields.CharField(max_length=255, null=True)
    card_reference = fields.CharField(max_length=255, null=True, description="The card charged, for reconciling")
    failure_reason = fields.CharField(max_length=500, null=True)
    lot: fields.ForeignKeyNullableRelation[CreditLot] = fields.ForeignKeyField(
        "models.CreditLot", related_name="transactions", null=True, on_delete=fields.RESTRICT
    )
    subscription: fields.ForeignKeyNullableRelation[Subscription] = fields.ForeignKeyField(
        "models.Subscription", related_name="transactions", null=True, on_delete=fields.RESTRICT
    )
    period_start = fields.DatetimeField(null=True, description="Start of the subscription period paid for")
    period_end = fields.DatetimeField(null=True, description="End of the subscription period paid for")
    checkout_url = fields.CharField(max_length=2000, null=True, description="Hosted checkout page to pay at")
    idempotency_scope = fields.CharField(max_length=100)
    idempotency_key = fields.CharField(max_length=255)
    request_hash = fields.CharField(max_length=64)
    created_at = fields.DatetimeField()
    completed_at = fields.DatetimeField(null=True)

    account_id: int
    payment_method_id: int | None
    lot_id: int | None
    subscription_id: int | None

    class Meta:
        table = "transactions"
        unique_together = (("idempotency_scope", "idempotency_key"),)
        indexes = (("account_id", "id"), ("status", "created_at"))


class RefundStatus(StrEnum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class Refund(Model):
    """Money returned for a successful payment, in minor units of the payment currency.

    PENDING until the gateway confirms it. On success the credit the money bought is voided in proportion,
    as far as it is unspent and not held (``credits``, micro-credits actually voided).
    """

    _no_comments = True

    id = fields.BigIntField(primary_key=True)
    transaction: fields.ForeignKeyRelation[Transaction] = fields.ForeignKeyField(
        "models.Transaction", related_name="refunds", on_delete=fields.RESTRICT
    )
    account: fields.ForeignKeyRelation[CreditAccount] = fields.ForeignKeyField(
        "models.CreditAccount", related_name="refunds", on_delete=fields.RESTRICT
    )
    status = fields.CharEnumField(RefundStatus, max_length=12)
    amount = fields.BigIntField()
    credits = fields.BigIntField(default=0)
    reason = fields.CharField(max_length=500, null=True)
    gateway_reference = fields.CharField(max_length=255, null=True)
    failure_reason = fields.CharField(max_length=500, null=True)
    idempotency_scope = fields.CharField(max_length=100)
    idempotency_key = fields.CharField(max_length=255)
    request_hash = fields.CharField(max_length=64)
    created_at = fields.DatetimeField()
    completed_at = fields.DatetimeField(null=True)

    transaction_id: int
    account_id: int

    class Meta:
        table = "refunds"
        unique_together = (("idempotency_scope", "idempotency_key"),)
        indexes = (("transaction_id", "id"),)


class Invoice(Model):
    """The invoice of one successful payment, numbered in sequence (INV-000123)."""

    _no_comments = True

    id = fields.BigIntField(primary_key=True)
    number = fields.BigIntField(unique=True)
    transaction: fields.OneToOneRelation[Transaction] = fields.OneToOneField(
        "models.Transaction", related_name="invoice", on_delete=fields.RESTRICT
    )
    account: fields.ForeignKeyRelation[CreditAccount] = fields.ForeignKeyField(
        "models.CreditAccount", related_name="invoices", on_delete=fields.RESTRICT
    )
    lines = fields.TextField(description="JSON list of lines: description, quantity, unit amount, amount")
    total = fields.BigIntField()
    currency = fields.CharField(max_length=3)
    status = fields.CharField(max_length=8, default="PAID")
    issued_at = fields.DatetimeField()
    paid_at = fields.DatetimeField()

    transaction_id: int
    account_id: int

    class Meta:
        table = "invoices"


class InvoiceSequence(Model):
    """One row holding the last invoice number: taking the next one locks it, so numbers have no gaps."""

    _no_comments = True

    id = fields.IntField(primary_key=True)
    last_number = fields.BigIntField(default=0)

    class Meta:
        table = "invoice_sequence"


class AutoTopUp(Model):
    """Automatic top-up of an account: when a spend takes the available balance below ``threshold``, a
    top-up of ``amount`` (or up to ``target``) is queued in that spend transaction and charged outside it.

    Credit columns are micro-credits. ``monthly_cap`` bounds the credit bought this way per calendar month
    (UTC). ``pending_transaction`` is the top-up in flight, at most one. ``declines`` counts failed charges
    in a row, and after the limit auto top-up is switched off with ``disabled_reason``.
    """

    _no_comments = True

    id = fields.BigIntField(primary_key=True)
    account: fields.OneToOneRelation[CreditAccount] = fields.OneToOneField(
        "models.CreditAccount", related_name="auto_top_up", on_delete=fields.RESTRICT
    )
    enabled = fields.BooleanField(default=True)
    threshold = fields.BigIntField()
    amount = fields.BigIntField(null=True)
    target = fields.BigIntField(null=True)
    monthly_cap = fields.BigIntField()
    payment_method: fields.ForeignKeyNullableRelation[PaymentMethod] = fields.ForeignKeyField(
        "models.PaymentMethod", related_name="auto_top_ups", null=True, on_delete=fields.RESTRICT
    )
    pending_transaction: fields.ForeignKeyNullableRelation[Transaction] = fields.ForeignKeyField(
        "models.Transaction", related_name="auto_top_up_pending", null=True, on_delete=fields.SET_NULL
    )
    declines = fields.IntField(default=0)
    next_attempt_at = fields.DatetimeField(null=True, description="No new top-up before this instant")
    disabled_reason = fields.CharField(max_length=500, null=True)
    updated_at = fields.DatetimeField()

    account_id: int
    payment_method_id: int | None
    pending_transaction_id: int | None

    class Meta:
        table = "auto_top_ups"


class WebhookEvent(Model):
    """A processor event, stored once by its id before it is handled, so a redelivery is recognised."""

    _no_comments = True

    id = fields.CharField(max_length=255, primary_key=True)
    gateway = fields.CharField(max_length=16)
    type = fields.CharField(max_length=100)
    payload = fields.TextField()
    created_at = fields.DatetimeField(description="When the processor created the event")
    received_at = fields.DatetimeField()
    processed_at = fields.DatetimeField(null=True)

    class Meta:
        table = "webhook_events"
        indexes = (("processed_at", "created_at"),)


class GatewayCustomer(Model):
    """The processor customer that stands for an account (Stripe customers), created once per gateway."""

    _no_comments = True

    id = fields.BigIntField(primary_key=True)
    account: fields.ForeignKeyRelation[CreditAccount] = fields.ForeignKeyField(
        "models.CreditAccount", related_name="gateway_customers", on_delete=fields.RESTRICT
    )
    gateway = fields.CharField(max_length=16)
    reference = fields.CharField(max_length=255)
    created_at = fields.DatetimeField()

    account_id: int

    class Meta:
        table = "gateway_customers"
        unique_together = (("account_id", "gateway"), ("gateway", "reference"))


class OutboxEvent(Model):
    """An event for the platform (``models/outbox.py``), written in the transaction of the change it reports.

    ``public_id`` is the ``webhook-id`` of every delivery of it; ``sequence`` counts an account's events from 1
    (written under the account's lock, so it has no gaps); ``dispatched_at`` is set once deliveries to the
    endpoints that want it are made."""

    _no_comments = True

    id = fields.BigIntField(primary_key=True)
    public_id = fields.CharField(max_length=40, unique=True)
    type = fields.CharField(max_length=64)
    account_id = fields.BigIntField(null=True, description="The account it is about (none: the deployment)")
    organization_id = fields.BigIntField(null=True, description="The organization of a pool's event")
    sequence = fields.BigIntField(null=True, description="The account's count of events, from 1")
    data = fields.TextField(description="The payload, JSON")
    created_at = fields.DatetimeField()
    dispatched_at = fields.DatetimeField(null=True)

    class Meta:
        table = "events"
        unique_together = (("account_id", "sequence"),)
        indexes = (("dispatched_at", "id"), ("created_at",), ("account_id", "type", "id"))


class AlertStatus(StrEnum):
    OPEN = "OPEN"
    RESOLVED = "RESOLVED"


class Alert(Model):
    """A condition of an account that a person should know of (low balance, depleted, runs out soon), open
    from the event that raised it until the one that resolved it."""

    _no_comments = True

    id = fields.BigIntField(primary_key=True)
    account: fields.ForeignKeyRelation[CreditAccount] = fields.ForeignKeyField(
        "models.CreditAccount", related_name="alerts", on_delete=fields.CASCADE
    )
    kind = fields.CharField(max_length=64, description="The type of the event that raised it")
    level = fields.BigIntField(null=True, description="The threshold crossed, in micro-credits")
    status = fields.CharEnumField(AlertStatus, max_length=8, default=AlertStatus.OPEN)
    raised_event_id = fields.BigIntField(null=True)
    resolved_event_id = fields.BigIntField(null=True)
    opened_at = fields.DatetimeField()
    resolved_at = fields.DatetimeField(null=True)

    account_id: int

    class Meta:
        table = "alerts"
        indexes = (("account_id", "status", "kind"),)


class WebhookEndpointStatus(StrEnum):
    ENABLED = "ENABLED"
    DISABLED = "DISABLED"


class WebhookEndpoint(Model):
    """A URL of the platform's that is sent the events it asks for, signed as Standard Webhooks."""

    _no_comments = True

    id = fields.BigIntField(primary_key=True)
    url = fields.CharField(max_length=2000)
    description = fields.CharField(max_length=500, null=True)
    event_types = fields.CharField(max_length=2000, default="", description="Space-separated, empty: every type")
    organization_id = fields.BigIntField(null=True, description="Only this organization's events (none: all)")
    secret = fields.CharField(max_length=200, description="whsec_..., signs deliveries")
    previous_secret = fields.CharField(max_length=200, null=True, description="Also signs, until it expires")
    previous_secret_expires_at = fields.DatetimeField(null=True)
    status = fields.CharEnumField(WebhookEndpointStatus, max_length=8, default=WebhookEndpointStatus.ENABLED)
    disabled_reason = fields.CharField(max_length=500, null=True)
    disabled_at = fields.DatetimeField(null=True)
    failing_since = fields.DatetimeField(null=True, description="First failure since the last success")
    created_at = fields.DatetimeField()
    updated_at = fields.DatetimeField()

    class Meta:
        table = "webhook_endpoints"


class WebhookDeliveryStatus(StrEnum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    """Given up: retried for the retry period, or its endpoint was disabled or deleted."""


class WebhookDelivery(Model):
    """One event to one endpoint: due at ``next_attempt_at``, claimed by a worker by moving that forward."""

    _no_comments = True

    id = fields.BigIntField(primary_key=True)
    endpoint: fields.ForeignKeyRelation[WebhookEndpoint] = fields.ForeignKeyField(
        "models.WebhookEndpoint", related_name="deliveries", on_delete=fields.CASCADE
    )
    event: fields.ForeignKeyRelation[OutboxEvent] = fields.ForeignKeyField(
        "models.OutboxEvent", related_name="deliveries", on_delete=fields.CASCADE
    )
    status = fields.CharEnumField(WebhookDeliveryStatus, max_length=10, default=WebhookDeliveryStatus.PENDING)
    attempts = fields.IntField(default=0)
    attempts_total = fields.IntField(default=0, description="Tries in all, every series (the log keeps the last ones)")
    next_attempt_at = fields.DatetimeField(null=True)
    leased_until = fields.DatetimeField(
        null=True, description="While an attempt is under way: when its claim runs out (NULL once recorded)"
    )
    last_attempt_at = fields.DatetimeField(null=True)
    last_status_code = fields.IntField(null=True)
    last_latency_ms = fields.IntField(null=True)
    last_response = fields.CharField(max_length=1024, null=True, description="The start of the response body")
    last_error = fields.CharField(max_length=500, null=True)
    delivered_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField()

    endpoint_id: int
    event_id: int

    class Meta:
        table = "webhook_deliveries"
        unique_together = (("endpoint_id", "event_id"),)
        indexes = (("status", "next_attempt_at"), ("endpoint_id", "id"), ("event_id", "status"))


class WebhookAttempt(Model):
    """One try of a delivery, for the delivery log."""

    _no_comments = True

    id = fields.BigIntField(primary_key=True)
    delivery: fields.ForeignKeyRelation[WebhookDelivery] = fields.ForeignKeyField(
        "models.WebhookDelivery", related_name="attempt_log", on_delete=fields.CASCADE
    )
    attempt = fields.IntField()
    status_code = fields.IntField(null=True)
    latency_ms = fields.IntField(null=True)
    response_body = fields.CharField(max_length=1024, null=True)
    error = fields.CharField(max_length=500, null=True)
    started_at = fields.DatetimeField()

    delivery_id: int

    class Meta:
        table = "webhook_attempts"
        indexes = (("delivery_id", "attempt"),)
