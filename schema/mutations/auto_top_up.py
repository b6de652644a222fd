from __future__ import annotations

from typing import Annotated

import strawberry

from schema import references
from schema.auto_top_up import AutoTopUp
from schema.errors import Forbidden, NotFound, ValidationError
from schema.payments import PaymentUnavailable
from schema.scalars import Credits


@strawberry.input(
    description="Set up or change auto top-up. An omitted field keeps its value; the first call needs "
    "threshold, monthlyCap and one of amount or target. If the available balance is below the threshold "
    "already, the first top-up is charged at once."
)
class ConfigureAutoTopUpInput:
    account_id: strawberry.ID | None = references.account_id()
    external_user_id: str | None = references.account_of_external_user()
    external_organization_id: str | None = references.pool_of_external_organization()
    enabled: bool | None = strawberry.field(
        default=None, description="Default: on. Switching it on again clears the declines and their reason"
    )
    threshold: Credits | None = strawberry.field(
        default=None, description="Top up when the available balance goes below this (whole credits, > 0)"
    )
    amount: Credits | None = strawberry.field(default=None, description="Buy this much each time (whole credits)")
    target: Credits | None = strawberry.field(
        default=None, description="Or buy what lifts the available balance to this (whole credits, > threshold)"
    )
    payment_method_id: strawberry.ID | None = strawberry.field(
        default=None, description="A saved card of the account. Default: the card set before, else the default card"
    )
    monthly_cap: Credits | None = strawberry.field(
        default=None, description="Most credit bought this way per calendar month (UTC), at least one top-up"
    )


@strawberry.type
class ConfigureAutoTopUpSuccess:
    auto_top_up: AutoTopUp


ConfigureAutoTopUpResult = Annotated[
    ConfigureAutoTopUpSuccess | PaymentUnavailable | ValidationError | Forbidden | NotFound,
    strawberry.union("ConfigureAutoTopUpResult"),
]
