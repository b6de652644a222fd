"""The root types, wired to their resolvers."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry
from strawberry import relay
from strawberry.permission import BasePermission

from resolvers import queries, webhooks
from resolvers.api_tokens import api_tokens
from resolvers.live import alert_raised, balance_changed, usage_recorded
from resolvers.mutations import organizations as orgs
from resolvers.mutations import payments
from resolvers.mutations import subscriptions as subs
from resolvers.mutations.agent_tokens import create_agent_token
from resolvers.mutations.api_tokens import create_api_token, revoke_api_token
from resolvers.mutations.auto_top_up import configure_auto_top_up
from resolvers.mutations.cancel_checkout import cancel_checkout
from resolvers.mutations.create_user import create_user
from resolvers.mutations.create_webhook_endpoint import create_webhook_endpoint
from resolvers.mutations.customer_portal import create_customer_portal_session
from resolvers.mutations.delete_webhook_endpoint import delete_webhook_endpoint
from resolvers.mutations.disable_webhook_endpoint import disable_webhook_endpoint
from resolvers.mutations.extend_hold import extend_hold
from resolvers.mutations.grant_credits import grant_credits
from resolvers.mutations.holds import capture_hold, hold_credits, release_hold
from resolvers.mutations.increase_hold import increase_hold
from resolvers.mutations.portal_sessions import create_portal_session, revoke_portal_session
from resolvers.mutations.redeliver_webhook_event import redeliver_webhook_event
from resolvers.mutations.refund_payment import refund_payment
from resolvers.mutations.remove_spend_limit import remove_spend_limit
from resolvers.mutations.resume_agent import resume_agent
from resolvers.mutations.rotate_webhook_secret import rotate_webhook_secret
from resolvers.mutations.set_balance_alerts import set_balance_alerts
from resolvers.mutations.set_overdraft import set_overdraft
from resolvers.mutations.set_spend_limit import set_spend_limit
from resolvers.mutations.spend_credits import spend_credits
from resolvers.mutations.spend_credits_batch import spend_credits_batch
from resolvers.mutations.update_organization import update_organization
from resolvers.mutations.update_user import update_user
from resolvers.mutations.update_webhook_endpoint import update_webhook_endpoint
from resolvers.permissions import IsAuthenticated
from schema import types
from schema.alert_events import AlertEvent
from schema.mutations.agent_tokens import CreateAgentTokenResult
from schema.mutations.api_tokens import CreateApiTokenResult, RevokeApiTokenResult
from schema.mutations.auto_top_up import ConfigureAutoTopUpResult
from schema.mutations.cancel_checkout import CancelCheckoutResult
from schema.mutations.create_user import CreateUserResult
from schema.mutations.create_webhook_endpoint import CreateWebhookEndpointResult
from schema.mutations.customer_portal import CreateCustomerPortalSessionResult
from schema.mutations.delete_webhook_endpoint import DeleteWebhookEndpointResult
from schema.mutations.disable_webhook_endpoint import DisableWebhookEndpointResult
from schema.mutations.extend_hold import ExtendHoldResult
from schema.mutations.grant_credits import GrantCreditsResult
from schema.mutations.holds import CaptureHoldResult, HoldCreditsResult, ReleaseHoldResult
from schema.mutations.increase_hold import IncreaseHoldResult
from schema.mutations.organizations import (
    AcceptInvitationResult,
    AddMemberResult,
    CreateOrganizationResult,
    DeclineInvitationResult,
    EnableCreditPoolResult,
    InviteMemberResult,
    LeaveOrganizationResult,
    RemoveMemberResult,
    RevokeInvitationResult,
    SetMemberBudgetResult,
    SetMemberRolesResult,
)
from schema.mutations.portal_sessions import CreatePortalSessionResult, RevokePortalSessionResult
from schema.mutations.redeliver_webhook_event import RedeliverWebhookEventResult
from schema.mutations.refund_payment import RefundPaymentResult
from schema.mutations.remove_spend_limit import RemoveSpendLimitResult
from schema.mutations.resume_agent import ResumeAgentResult
from schema.mutations.rotate_webhook_secret import RotateWebhookSecretResult
from schema.mutations.set_balance_alerts import SetBalanceAlertsResult
from schema.mutations.set_overdraft import SetOverdraftResult
from schema.mutations.set_spend_limit import SetSpendLimitResult
from schema.mutations.spend_credits import SpendCreditsBatchResult, SpendCreditsResult
from schema.mutations.subscriptions import SubscribeResult, SubscriptionChangeResult
from schema.mutations.update_organization import UpdateOrganizationResult
from schema.mutations.update_user import UpdateUserResult
from schema.mutations.update_webhook_endpoint import UpdateWebhookEndpointResult
from schema.payments import AddPaymentMethodResult, BillingConfig, PaymentMethodResult, Plan, TopUpResult
from schema.webhooks import WebhookEndpoint, WebhookEventConnection

AUTH: list[type[BasePermission]] = [IsAuthenticated]


@strawberry.type
class Query:
    me: types.User = strawberry.field(resolver=queries.me, permission_classes=AUTH)
    node: relay.Node | None = strawberry.field(
        resolver=queries.node,
        permission_classes=AUTH,
        description="Any object by its global ID; null if it does not exist or you may not see it",
    )
    user: types.User | None = strawberry.field(
        resolver=queries.user,
        permission_classes=AUTH,
        description="A user by exactly one of externalId (yours) or id; null if none has it. Admin tokens, and"
        " service tokens with balance:read or billing:read",
    )
    organization: types.Organization | None = strawberry.field(
        resolver=queries.organization,
        permission_classes=AUTH,
        description="An organization by exactly one of externalId (yours) or id; null if none has it. Admin"
        " tokens, and service tokens with balance:read or billing:read",
    )
    billing_config: BillingConfig = strawberry.field(
        resolver=queries.billing_config, description="Which gateway is active and which My Credit tabs to show"
    )
    plans: list[Plan] = strawberry.field(resolver=queries.plans, description="Subscription plans on offer")
    rate_card: list[types.Rate] = strawberry.field(
        resolver=queries.rate_card, permission_classes=AUTH, description="What each activity costs per unit"
    )
    api_tokens: relay.Connection[types.ApiToken] = strawberry.field(
        resolver=api_tokens, permission_classes=AUTH, description="Every token, newest first. Admins only"
    )
    webhook_endpoints: relay.Connection[WebhookEndpoint] = strawberry.field(
        resolver=webhooks.webhook_endpoints,
        permission_classes=AUTH,
        description="Every webhook endpoint, newest first. Admins only",
    )
    webhook_endpoint: WebhookEndpoint | None = strawberry.field(
        resolver=webhooks.webhook_endpoint,
        permission_classes=AUTH,
        description="A webhook endpoint by its ID, with its delivery log; null if none has it. Admins only",
    )
    webhook_events: WebhookEventConnection = strawberry.field(
        resolver=webhooks.webhook_events,
        permission_classes=AUTH,
        description="Events still kept, newest first (by type, by account): what a platform may have missed, to"
        " redeliver with redeliverWebhookEvent. Admins only",
    )


@strawberry.type
class Mutation:
    spend_credits: SpendCreditsResult = strawberry.mutation(resolver=spend_credits, permission_classes=AUTH)
    spend_credits_batch: SpendCreditsBatchResult = strawberry.mutation(
        resolver=spend_credits_batch, permission_classes=AUTH
    )
    grant_credits: GrantCreditsResult = strawberry.mutation(resolver=grant_credits, permission_classes=AUTH)
    set_overdraft: SetOverdraftResult = strawberry.mutation(
        resolver=set_overdraft,
        permission_classes=AUTH,
        description="Admins only: how far below zero an account's available credit may go (0: not at all)",
    )
    set_balance_alerts: SetBalanceAlertsResult = strawberry.mutation(
        resolver=set_balance_alerts,
        permission_classes=AUTH,
        description="An account's balance-alert levels (balance.low/depleted/recovered), or back to the default",
    )
    hold_credits: HoldCreditsResult = strawberry.mutation(resolver=hold_credits, permission_classes=AUTH)
    capture_hold: CaptureHoldResult = strawberry.mutation(resolver=capture_hold, permission_classes=AUTH)
    release_hold: ReleaseHoldResult = strawberry.mutation(resolver=release_hold, permission_classes=AUTH)
    extend_hold: ExtendHoldResult = strawberry.mutation(resolver=extend_hold, permission_classes=AUTH)
    increase_hold: IncreaseHoldResult = strawberry.mutation(resolver=increase_hold, permission_classes=AUTH)
    top_up: TopUpResult = strawberry.mutation(resolver=payments.top_up, permission_classes=AUTH)
    cancel_checkout: CancelCheckoutResult = strawberry.mutation(
        resolver=cancel_checkout,
        permission_classes=AUTH,
        description="Drop a PENDING top-up's unfinished Checkout page (stripe gateway): it is closed at Stripe and the"
        " top-up FAILED. Whoever may top up the account",
    )
    add_payment_method: AddPaymentMethodResult = strawberry.mutation(
        resolver=payments.add_payment_method, permission_classes=AUTH
    )
    set_default_payment_method: PaymentMethodResult = strawberry.mutation(
        resolver=payments.set_default_payment_method, permission_classes=AUTH
    )
    remove_payment_method: PaymentMethodResult = strawberry.mutation(
        resolver=payments.remove_payment_method, permission_classes=AUTH
    )
    refund_payment: RefundPaymentResult = strawberry.mutation(resolver=refund_payment, permission_classes=AUTH)
    subscribe: SubscribeResult = strawberry.mutation(resolver=subs.subscribe, permission_classes=AUTH)
    cancel_subscription: SubscriptionChangeResult = strawberry.mutation(
        resolver=subs.cancel_subscription, permission_classes=AUTH
    )
    resume_subscription: SubscriptionChangeResult = strawberry.mutation(
        resolver=subs.resume_subscription, permission_classes=AUTH
    )
    change_plan: SubscriptionChangeResult = strawberry.mutation(resolver=subs.change_plan, permission_classes=AUTH)
    set_subscription_payment_method: SubscriptionChangeResult = strawberry.mutation(
        resolver=subs.set_subscription_payment_method, permission_classes=AUTH
    )
    configure_auto_top_up: ConfigureAutoTopUpResult = strawberry.mutation(
        resolver=configure_auto_top_up, permission_classes=AUTH
    )
    create_customer_portal_session: CreateCustomerPortalSessionResult = strawberry.mutation(
        resolver=create_customer_portal_session,
        permission_classes=AUTH,
        description="A link to Stripe's customer portal, where cards are managed (stripe gateway). Not"
        " createPortalSession, which opens our own My Credit page",
    )
    create_portal_session: CreatePortalSessionResult = strawberry.mutation(
        resolver=create_portal_session,
        permission_classes=AUTH,
        description="A single-use, short-lived sign-in link to the My Credit page of one account (admin, or"
        " portal:write); POST /portal/session exchanges its code for a session that reads and pays for that"
        " account. Not createCustomerPortalSession (Stripe's portal)",
    )
    revoke_portal_session: RevokePortalSessionResult = strawberry.mutation(
        resolver=revoke_portal_session,
        permission_classes=AUTH,
        description="End a portal session: itself (sign out), or any with an admin token or portal:write",
    )
    create_user: CreateUserResult = strawberry.mutation(
        resolver=create_user, permission_classes=AUTH, description="Admins only: a user with the signup bonus"
    )
    update_user: UpdateUserResult = strawberry.mutation(
        resolver=update_user, permission_classes=AUTH, description="Admins only"
    )
    update_organization: UpdateOrganizationResult = strawberry.mutation(
        resolver=update_organization, permission_classes=AUTH, description="Admins only"
    )
    create_organization: CreateOrganizationResult = strawberry.mutation(
        resolver=orgs.create_organization, permission_classes=AUTH
    )
    add_member: AddMemberResult = strawberry.mutation(
        resolver=orgs.add_member, permission_classes=AUTH, description="Admins only: owners use inviteMember"
    )
    invite_member: InviteMemberResult = strawberry.mutation(resolver=orgs.invite_member, permission_classes=AUTH)
    accept_invitation: AcceptInvitationResult = strawberry.mutation(
        resolver=orgs.accept_invitation, permission_classes=AUTH
    )
    decline_invitation: DeclineInvitationResult = strawberry.mutation(
        resolver=orgs.decline_invitation, permission_classes=AUTH
    )
    revoke_invitation: RevokeInvitationResult = strawberry.mutation(
        resolver=orgs.revoke_invitation, permission_classes=AUTH
    )
    set_member_roles: SetMemberRolesResult = strawberry.mutation(
        resolver=orgs.set_member_roles, permission_classes=AUTH
    )
    remove_member: RemoveMemberResult = strawberry.mutation(resolver=orgs.remove_member, permission_classes=AUTH)
    leave_organization: LeaveOrganizationResult = strawberry.mutation(
        resolver=orgs.leave_organization, permission_classes=AUTH
    )
    enable_credit_pool: EnableCreditPoolResult = strawberry.mutation(
        resolver=orgs.enable_credit_pool, permission_classes=AUTH
    )
    set_member_budget: SetMemberBudgetResult = strawberry.mutation(
        resolver=orgs.set_member_budget, permission_classes=AUTH
    )
    set_spend_limit: SetSpendLimitResult = strawberry.mutation(
        resolver=set_spend_limit,
        permission_classes=AUTH,
        description="Create or replace a spend limit (safe to retry: the same input leaves one limit, created:"
        " false). The account's owner, its organization's BILLING or OWNER members, admins, limits:write services",
    )
    remove_spend_limit: RemoveSpendLimitResult = strawberry.mutation(
        resolver=remove_spend_limit, permission_classes=AUTH, description="Who may set a spend limit may remove it"
    )
    resume_agent: ResumeAgentResult = strawberry.mutation(
        resolver=resume_agent,
        permission_classes=AUTH,
        description="End the pause of tripped velocity limits; who may set them may resume them",
    )
    create_api_token: CreateApiTokenResult = strawberry.mutation(
        resolver=create_api_token, permission_classes=AUTH, description="Admins: any token; users: their own"
    )
    revoke_api_token: RevokeApiTokenResult = strawberry.mutation(
        resolver=revoke_api_token,
        permission_classes=AUTH,
        description="Admins: any token; users: their own, and agent tokens of their account and of pools they are"
        " OWNER or BILLING of; services with usage:write: agent tokens",
    )
    create_agent_token: CreateAgentTokenResult = strawberry.mutation(
        resolver=create_agent_token,
        permission_classes=AUTH,
        description="A service token bound to one account (and optionally one agent, some activities, a cap)",
    )
    create_webhook_endpoint: CreateWebhookEndpointResult = strawberry.mutation(
        resolver=create_webhook_endpoint,
        permission_classes=AUTH,
        description="Admins only: a URL sent signed events; answers its signing secret once",
    )
    update_webhook_endpoint: UpdateWebhookEndpointResult = strawberry.mutation(
        resolver=update_webhook_endpoint, permission_classes=AUTH, description="Admins only"
    )
    rotate_webhook_secret: RotateWebhookSecretResult = strawberry.mutation(
        resolver=rotate_webhook_secret,
        permission_classes=AUTH,
        description="Admins only: a new signing secret, answered once; the old one signs too for a grace period",
    )
    disable_webhook_endpoint: DisableWebhookEndpointResult = strawberry.mutation(
        resolver=disable_webhook_endpoint, permission_classes=AUTH, description="Admins only"
    )
    delete_webhook_endpoint: DeleteWebhookEndpointResult = strawberry.mutation(
        resolver=delete_webhook_endpoint,
        permission_classes=AUTH,
        description="Admins only: with its deliveries (a pending one is never sent)",
    )
    redeliver_webhook_event: RedeliverWebhookEventResult = strawberry.mutation(
        resolver=redeliver_webhook_event,
        permission_classes=AUTH,
        description="Admins only: an event's delivery to an endpoint back to PENDING, same webhook-id",
    )


@strawberry.type(name="RootSubscription")
class RootSubscription:
    balance_changed: AsyncGenerator[types.BalanceEvent, None] = strawberry.subscription(
        resolver=balance_changed,
        permission_classes=AUTH,
        description="The balance now (reason SNAPSHOT), then every committed change. Default: your own account",
    )
    usage_recorded: AsyncGenerator[types.UsageEvent, None] = strawberry.subscription(
        resolver=usage_recorded,
        permission_classes=AUTH,
        description="Each usage event in an organization as it happens; BILLING or OWNER members only",
    )
    alert_raised: AsyncGenerator[AlertEvent, None] = strawberry.subscription(
        resolver=alert_raised,
        permission_classes=AUTH,
        description="Each balance alert raised or resolved, after commit. Default: your own account",
    )
