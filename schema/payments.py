"""Payment types: money, transactions, invoices, saved cards, the billing configuration."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from enum import Enum
from typing import Annotated

import strawberry
from strawberry import relay
from strawberry.types import Info
from tortoise.queryset import QuerySet

from billing.invoices import signed_link
from models import tables
from models.ids import encode_id
from models.money import invoice_number
from models.plans import PlanSpec
from models.tokens import BILLING_READ
from resolvers.context import Context
from resolvers.errors import ClientError
from resolvers.permissions import require_read_scope
from schema import references
from schema.errors import Error, Forbidden, IdempotencyConflict, NotFound, ValidationError
from schema.scalars import Credits

strawberry.enum(tables.TransactionStatus)
strawberry.enum(tables.TransactionType)


@strawberry.type(description="An amount of money: integer minor units (cents for USD) and an ISO 4217 code.")
class Money:
    amount: int
    currency: str


@strawberry.type
class InvoiceLine:
    description: str
    quantity: str
    amount: Money


@strawberry.type(description="The invoice of one successful payment.")
class Invoice(relay.Node):
    id: relay.NodeID[int]
    number: str = strawberry.field(description="Sequential, e.g. INV-000123")
    status: str
    total: Money
    lines: list[InvoiceLine]
    issued_at: datetime
    paid_at: datetime
    url: str = strawberry.field(description="A printable page, for the account's owner (bearer token)")

    @strawberry.field(description="A link to the printable page that works without a token for a few days")
    def signed_url(self, info: Info[Context, None]) -> str:
        require_read_scope(info, BILLING_READ)
        services = info.context.services
        expires = services.clock.now() + timedelta(days=services.settings.invoice_link_days)
        return signed_link(services.link_key, self.id, int(expires.timestamp()))

    @classmethod
    def of(cls, invoice: tables.Invoice) -> Invoice:
        return cls(
            id=invoice.id,
            number=invoice_number(invoice.number),
            status=invoice.status,
            total=Money(amount=invoice.total, currency=invoice.currency),
            lines=[
                InvoiceLine(
                    description=line["description"],
                    quantity=line["quantity"],
                    amount=Money(amount=line["amount"], currency=invoice.currency),
                )
                for line in json.loads(invoice.lines)
            ],
            issued_at=invoice.issued_at,
            paid_at=invoice.paid_at,
            url=f"/invoices/{encode_id('Invoice', invoice.id)}",
        )


strawberry.enum(tables.RefundStatus)


@strawberry.type(description="Money returned for a payment; the credit it bought is voided as far as it is unspent.")
class Refund(relay.Node):
    id: relay.NodeID[int]
    status: tables.RefundStatus
    amount: Money
    credits: Credits = strawberry.field(description="Credit voided by the refund")
    reason: str | None
    failure_reason: str | None
    created_at: datetime
    completed_at: datetime | None

    @classmethod
    def of(cls, refund: tables.Refund, currency: str) -> Refund:
        return cls(
            id=refund.id,
            status=tables.RefundStatus(refund.status),
            amount=Money(amount=refund.amount, currency=currency),
            credits=Credits(refund.credits),
            reason=refund.reason,
            failure_reason=refund.failure_reason,
            created_at=refund.created_at,
            completed_at=refund.completed_at,
        )


@strawberry.type(description="A payment for credit: PENDING until the payment succeeds or fails.")
class Transaction(relay.Node):
    id: relay.NodeID[int]
    type: tables.TransactionType
    status: tables.TransactionStatus
    credits: Credits
    amount: Money
    failure_reason: str | None
    checkout_url: str | None = strawberry.field(description="While PENDING on a hosted gateway: the page to pay at")
    created_at: datetime
    completed_at: datetime | None

    @strawberry.field(description="Refunds of this payment, oldest first")
    async def refunds(self, info: Info[Context, None]) -> list[Refund]:
        rows = await info.context.loaders.refunds_of_transaction.load(self.id)
        return [Refund.of(row, self.amount.currency) for row in rows]

    @strawberry.field
    async def invoice(self, info: Info[Context, None]) -> Invoice | None:
        invoice = await info.context.loaders.invoice_of_transaction.load(self.id)
        return None if invoice is None else Invoice.of(invoice)

    @classmethod
    def of(cls, txn: tables.Transaction) -> Transaction:
        return cls(
            id=txn.id,
            type=tables.TransactionType(txn.type),
            status=tables.TransactionStatus(txn.status),
            credits=Credits(txn.credits),
            amount=Money(amount=txn.amount, currency=txn.currency),
            failure_reason=txn.failure_reason,
            checkout_url=txn.checkout_url if txn.status == tables.TransactionStatus.PENDING else None,
            created_at=txn.created_at,
            completed_at=txn.completed_at,
        )


@strawberry.input(description="Every given field must match; from is inclusive, to exclusive.")
class TransactionFilter:
    type: tables.TransactionType | None = None
    status: tables.TransactionStatus | None = None
    from_: datetime | None = strawberry.field(default=None, name="from")
    to: datetime | None = None

    def apply(self, query: QuerySet[tables.Transaction]) -> QuerySet[tables.Transaction]:
        for value, name in ((self.from_, "from"), (self.to, "to")):
            if value is not None and value.tzinfo is None:
                raise ClientError(f"{name} must include a time zone, e.g. 2026-01-31T00:00:00Z", "BAD_FILTER")
        if self.type is not None:
            query = query.filter(type=self.type)
        if self.status is not None:
            query = query.filter(status=self.status)
        if self.from_ is not None:
            query = query.filter(created_at__gte=self.from_)
        if self.to is not None:
            query = query.filter(created_at__lt=self.to)
        return query


@strawberry.type(description="A saved card. Only the gateway's reference is kept, never the number.")
class PaymentMethod(relay.Node):
    id: relay.NodeID[int]
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    is_default: bool

    @classmethod
    def of(cls, method: tables.PaymentMethod) -> PaymentMethod:
        return cls(
            id=method.id,
            brand=method.brand,
            last4=method.last4,
            exp_month=method.exp_month,
            exp_year=method.exp_year,
            is_default=method.is_default,
        )


@strawberry.enum(description="Tabs of the My Credit page")
class DashboardTab(Enum):
    OVERVIEW = "OVERVIEW"
    TRANSACTION = "TRANSACTION"
    BILLING = "BILLING"
    PAYMENT_METHOD = "PAYMENT_METHOD"


@strawberry.type
class BillingConfig:
    gateway: str
    legacy_gateway: bool = strawberry.field(description="Cards are saved and managed in-app (sandbox, legacy)")
    dashboard_tabs: list[DashboardTab]
    credit_price: Money = strawberry.field(description="The price of 100 credits")
    top_up_min: Credits
    top_up_max: Credits
    stripe_publishable_key: str | None = strawberry.field(
        default=None,
        description="The Stripe publishable key (pk_...) the page loads Stripe.js with to enter cards: on the legacy"
        " gateway when CREDITLINE_STRIPE_PUBLISHABLE_KEY is set, else null",
    )


@strawberry.type(description="A subscription plan: a price per interval that grants credit each period.")
class Plan:
    id: str
    name: str
    price: Money
    interval: str
    credits_per_period: Credits
    credits_expire_at_period_end: bool
    subscribable: bool = strawberry.field(
        description="Whether subscribe and changePlan take this plan on this deployment's gateway: false for a plan"
        " without a Stripe price on the stripe gateway"
    )

    @classmethod
    def of(cls, spec: PlanSpec, currency: str, *, hosted: bool) -> Plan:
        """``hosted``: the gateway bills plans through the processor's own prices (Stripe Billing)."""
        return cls(
            id=spec.id,
            name=spec.name,
            price=Money(amount=spec.price, currency=currency),
            interval=spec.interval,
            credits_per_period=Credits(spec.credits),
            credits_expire_at_period_end=spec.credits_expire_at_period_end,
            subscribable=not hosted or spec.stripe_price is not None,
        )


strawberry.enum(tables.SubscriptionStatus)


@strawberry.type(description="A plan the account pays for each period; each paid period grants the plan credit.")
class Subscription(relay.Node):
    id: relay.NodeID[int]
    status: tables.SubscriptionStatus
    plan_id: str
    next_plan_id: str | None
    current_period_start: datetime | None
    current_period_end: datetime | None
    cancel_at_period_end: bool
    canceled_at: datetime | None
    status_reason: str | None = strawberry.field(description="Why it is PAST_DUE or CANCELED")
    next_attempt_at: datetime | None = strawberry.field(description="When a PAST_DUE renewal is charged again")
    payment_method_id: strawberry.Private[int | None]

    @strawberry.field(description="The plan paid for now (null if it is no longer offered)")
    def plan(self, info: Info[Context, None]) -> Plan | None:
        return _plan(info, self.plan_id)

    @strawberry.field(description="The plan that takes effect at the next renewal, after changePlan")
    def next_plan(self, info: Info[Context, None]) -> Plan | None:
        return None if self.next_plan_id is None else _plan(info, self.next_plan_id)

    @strawberry.field(description="The card renewals are charged to (card-on-file gateways)")
    async def payment_method(self, info: Info[Context, None]) -> PaymentMethod | None:
        if self.payment_method_id is None:
            return None
        method = await info.context.loaders.payment_method.load(self.payment_method_id)
        return None if method is None else PaymentMethod.of(method)

    @classmethod
    def of(cls, row: tables.Subscription) -> Subscription:
        return cls(
            id=row.id,
            status=tables.SubscriptionStatus(row.status),
            plan_id=row.plan_id,
            next_plan_id=row.next_plan_id,
            current_period_start=row.current_period_start,
            current_period_end=row.current_period_end,
            cancel_at_period_end=row.cancel_at_period_end,
            canceled_at=row.canceled_at,
            status_reason=row.status_reason,
            next_attempt_at=row.next_attempt_at,
            payment_method_id=row.payment_method_id,
        )


def _plan(info: Info[Context, None], plan_id: str) -> Plan | None:
    services = info.context.services
    spec = services.plans.get(plan_id)
    hosted = not services.gateway.card_on_file
    return None if spec is None else Plan.of(spec, services.settings.currency, hosted=hosted)


@strawberry.input(description="Exactly one of paymentMethodId (a saved card) or paymentToken (a one-off card).")
class TopUpInput:
    account_id: strawberry.ID | None = references.account_id()
    external_user_id: str | None = references.account_of_external_user()
    external_organization_id: str | None = references.pool_of_external_organization()
    credits: Credits
    payment_method_id: strawberry.ID | None = None
    payment_token: str | None = None
    idempotency_key: str


@strawberry.type
class TopUpSuccess:
    transaction: Transaction
    checkout_url: str | None = None


@strawberry.type(description="The payment failed: the transaction is FAILED with the reason, and no credit.")
class PaymentDeclined(Error):
    reason: str
    transaction: Transaction


@strawberry.type(description="The gateway cannot take this payment (e.g. not connected in this build).")
class PaymentUnavailable(Error):
    pass


TopUpResult = Annotated[
    TopUpSuccess | PaymentDeclined | PaymentUnavailable | IdempotencyConflict | ValidationError | Forbidden | NotFound,
    strawberry.union("TopUpResult"),
]


@strawberry.input(description="Save a card from a gateway token (sandbox: tok_visa, tok_mastercard, ...).")
class AddPaymentMethodInput:
    account_id: strawberry.ID | None = references.account_id()
    external_user_id: str | None = references.account_of_external_user()
    external_organization_id: str | None = references.pool_of_external_organization()
    token: str


@strawberry.type
class AddPaymentMethodSuccess:
    payment_method: PaymentMethod


AddPaymentMethodResult = Annotated[
    AddPaymentMethodSuccess | PaymentUnavailable | ValidationError | Forbidden | NotFound,
    strawberry.union("AddPaymentMethodResult"),
]


@strawberry.input
class PaymentMethodInput:
    account_id: strawberry.ID | None = references.account_id()
    external_user_id: str | None = references.account_of_external_user()
    external_organization_id: str | None = references.pool_of_external_organization()
    payment_method_id: strawberry.ID


@strawberry.type
class PaymentMethodsSuccess:
    payment_methods: list[PaymentMethod] = strawberry.field(description="The account's saved cards after the change")


@strawberry.type(description="The card pays for something that needs it (auto top-up): change that first.")
class PaymentMethodInUse(Error):
    pass


PaymentMethodResult = Annotated[
    PaymentMethodsSuccess | PaymentMethodInUse | PaymentUnavailable | ValidationError | Forbidden | NotFound,
    strawberry.union("PaymentMethodResult"),
]
