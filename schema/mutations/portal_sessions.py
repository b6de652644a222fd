"""Portal sessions: sign-in links to the My Credit page for one account (models/portal.py). Not the Stripe
customer portal (``createCustomerPortalSession``), where the processor manages cards."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from schema.errors import Forbidden, NotFound, ValidationError


@strawberry.input(
    description="Whose My Credit page the link opens: exactly one of accountId, userId, externalUserId,"
    " organizationId or externalOrganizationId (an organization's credit pool)."
)
class CreatePortalSessionInput:
    account_id: strawberry.ID | None = None
    user_id: strawberry.ID | None = None
    external_user_id: str | None = None
    organization_id: strawberry.ID | None = None
    external_organization_id: str | None = None
    return_url: str | None = strawberry.field(
        default=None, description="Where the page sends people back to (http or https); given back on exchange"
    )


@strawberry.type(description="A sign-in link to the My Credit page: its code works once, until expiresAt.")
class CreatePortalSessionSuccess:
    url: str = strawberry.field(description="The My Credit page with the code: `<public URL>/my-credit/?code=...`")
    code: str = strawberry.field(description="The code alone, for a link of your own; POST /portal/session takes it")
    expires_at: datetime = strawberry.field(description="The code must be exchanged before this")
    account_id: strawberry.ID = strawberry.field(description="The credit account the session will read and pay for")


CreatePortalSessionResult = Annotated[
    CreatePortalSessionSuccess | ValidationError | NotFound | Forbidden,
    strawberry.union("CreatePortalSessionResult"),
]


@strawberry.input(description="End a portal session (what POST /portal/session answered as sessionId).")
class RevokePortalSessionInput:
    session_id: strawberry.ID | None = strawberry.field(
        default=None, description="Default: the portal session calling (signing out)"
    )


@strawberry.type
class RevokePortalSessionSuccess:
    session_id: strawberry.ID
    revoked_at: datetime = strawberry.field(description="When it ended (the first time, if it was ended already)")


RevokePortalSessionResult = Annotated[
    RevokePortalSessionSuccess | ValidationError | NotFound | Forbidden,
    strawberry.union("RevokePortalSessionResult"),
]
