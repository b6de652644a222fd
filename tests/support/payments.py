"""GraphQL documents and inputs for top-ups, saved cards and the billing config, shared by the tests of
payments on every gateway."""

from __future__ import annotations

from typing import Any

TOP_UP = """mutation($input: TopUpInput!) { topUp(input: $input) {
  __typename
  ... on TopUpSuccess { checkoutUrl transaction { id type status credits amount { amount currency } failureReason
      invoice { number status total { amount currency } lines { description quantity amount { amount } } url } } }
  ... on PaymentDeclined { message reason transaction { status failureReason invoice { number } } }
  ... on ValidationError { message field }
  ... on Error { message } } }"""

ADD_CARD = """mutation($token: String!) { addPaymentMethod(input: {token: $token}) {
  __typename ... on AddPaymentMethodSuccess { paymentMethod { id brand last4 expMonth expYear isDefault } }
  ... on Error { message } } }"""

CONFIG = "{ billingConfig { gateway legacyGateway dashboardTabs creditPrice { amount currency } topUpMin topUpMax } }"


def top_up(credits: str, key: str, **payment: Any) -> dict[str, Any]:
    return {"input": {"credits": credits, "idempotencyKey": key, **payment}}


CARDS = "{ me { credit { paymentMethods { id last4 isDefault } } } }"

CHANGE = """mutation($id: ID!) { %s(input: {paymentMethodId: $id}) {
  __typename ... on PaymentMethodsSuccess { paymentMethods { last4 isDefault } } ... on Error { message } } }"""
