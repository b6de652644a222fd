"""subscribe, cancelSubscription, resumeSubscription and changePlan: their inputs, successes, errors, results."""

from __future__ import annotations

from typing import Annotated

import strawberry

from schema import references
from schema.errors import Error, Forbidden, IdempotencyConflict, NotFound, ValidationError
from schema.payments import PaymentDeclined, PaymentUnavailable, Subscription, Transaction


@strawberry.input(
    description="Subscribe to a plan: with a saved card (default: the account's default card) on a card-on-file"
    " gateway, or on the checkout page returned (checkoutUrl) on a hosted gateway."
)
class SubscribeInput:
    account_id: strawberry.ID | None = references.account_id()
    external_user_id: str | None = references.account_of_external_user()
    external_organization_id: str | None = references.pool_of_external_organization()
    plan_id: str
    payment_method_id: strawberry.ID | None = None
    idempotency_key: str


@strawberry.type
class SubscribeSuccess:
    subscription: Subscription
    transaction: Transaction = strawberry.field(description="The payment of the first period")
    checkout_url: str | None = strawberry.field(default=None, description="Where to pay, on a hosted gateway")


@strawberry.type(description="The account already has a live subscription: change its plan instead.")
class AlreadySubscribed(Error):
    subscription: Subscription


@strawberry.type(description="The subscription's status does not allow this change.")
class SubscriptionNotChangeable(Error):
    subscription: Subscription


SubscribeResult = Annotated[
    SubscribeSuccess
    | AlreadySubscribed
    | PaymentDeclined
    | PaymentUnavailable
    | IdempotencyConflict
    | ValidationError
    | Forbidden
    | NotFound,
    strawberry.union("SubscribeResult"),
]


@strawberry.input(description="Cancel at the end of the paid period (default), or now.")
class CancelSubscriptionInput:
    account_id: strawberry.ID | None = references.account_id()
    external_user_id: str | None = references.account_of_external_user()
    external_organization_id: str | None = references.pool_of_external_organization()
    at_period_end: bool = True


@strawberry.input(description="Undo a cancellation at period end while the period lasts.")
class ResumeSubscriptionInput:
    account_id: strawberry.ID | None = references.account_id()
    external_user_id: str | None = references.account_of_external_user()
    external_organization_id: str | None = references.pool_of_external_organization()


@strawberry.input(description="Switch plans from the next renewal on; choosing the current plan undoes a change.")
class ChangePlanInput:
    account_id: strawberry.ID | None = references.account_id()
    external_user_id: str | None = references.account_of_external_user()
    external_organization_id: str | None = references.pool_of_external_organization()
    plan_id: str


@strawberry.input(description="Charge renewals to another saved card of the account.")
class SetSubscriptionPaymentMethodInput:
    account_id: strawberry.ID | None = references.account_id()
    external_user_id: str | None = references.account_of_external_user()
    external_organization_id: str | None = references.pool_of_external_organization()
    payment_method_id: strawberry.ID


@strawberry.type
class SubscriptionSuccess:
    subscription: Subscription


SubscriptionChangeResult = Annotated[
    SubscriptionSuccess | SubscriptionNotChangeable | PaymentUnavailable | ValidationError | Forbidden | NotFound,
    strawberry.union("SubscriptionChangeResult"),
]
