"""GraphQL documents and inputs for subscribing and changing a subscription on the sandbox gateway, shared by
the subscription tests and the replay tests."""

from __future__ import annotations

from typing import Any

SUBSCRIPTION_FIELDS = """id status planId nextPlanId plan { id name } nextPlan { id }
  currentPeriodStart currentPeriodEnd cancelAtPeriodEnd canceledAt statusReason nextAttemptAt
  paymentMethod { last4 }"""

SUBSCRIBE = f"""mutation($input: SubscribeInput!) {{ subscribe(input: $input) {{
  __typename
  ... on SubscribeSuccess {{ subscription {{ {SUBSCRIPTION_FIELDS} }}
      transaction {{ type status credits amount {{ amount currency }} invoice {{ number lines {{ description }} }} }} }}
  ... on AlreadySubscribed {{ message subscription {{ id status }} }}
  ... on PaymentDeclined {{ message reason transaction {{ type status failureReason }} }}
  ... on ValidationError {{ message field }}
  ... on Error {{ message }} }} }}"""

CHANGE_RESULT = f"""__typename ... on SubscriptionSuccess {{ subscription {{ {SUBSCRIPTION_FIELDS} }} }}
  ... on SubscriptionNotChangeable {{ message subscription {{ status }} }}
  ... on ValidationError {{ message field }} ... on Error {{ message }}"""

CANCEL = f"mutation($input: CancelSubscriptionInput!) {{ cancelSubscription(input: $input) {{ {CHANGE_RESULT} }} }}"

RESUME = f"mutation($input: ResumeSubscriptionInput!) {{ resumeSubscription(input: $input) {{ {CHANGE_RESULT} }} }}"

CHANGE_PLAN = f"mutation($input: ChangePlanInput!) {{ changePlan(input: $input) {{ {CHANGE_RESULT} }} }}"

ADD_CARD = """mutation($token: String!) { addPaymentMethod(input: {token: $token}) {
  ... on AddPaymentMethodSuccess { paymentMethod { id } } } }"""


def subscribe_input(plan: str = "pro-monthly", key: str = "s1", **extra: Any) -> dict[str, Any]:
    return {"input": {"planId": plan, "idempotencyKey": key, **extra}}
