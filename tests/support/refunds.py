"""refundPayment's document and input, and a customer with one paid top-up to refund, shared by the tests of
refunds on every gateway."""

from __future__ import annotations

from typing import Any

from tests.support.helpers import Api

TOP_UP = """mutation($input: TopUpInput!) { topUp(input: $input) { __typename
  ... on TopUpSuccess { transaction { id } } ... on PaymentDeclined { transaction { id } } } }"""

REFUND = """mutation($input: RefundPaymentInput!) { refundPayment(input: $input) {
  __typename
  ... on RefundPaymentSuccess { refund { id status amount { amount currency } credits reason failureReason }
      transaction { id status refunds { amount { amount } credits } } balance { total paid held available } }
  ... on ValidationError { message field }
  ... on Error { message } } }"""


async def paid_customer(api: Api, credits: str = "250", token: str = "tok_visa") -> tuple[int, str, str]:
    user_id, user = await api.user("ada@example.com", bonus=0)
    data = await api.data(TOP_UP, {"input": {"credits": credits, "paymentToken": token, "idempotencyKey": "t"}}, user)
    return user_id, user, data["topUp"]["transaction"]["id"]


def refund(transaction: str, key: str = "r1", **extra: Any) -> dict[str, Any]:
    return {"input": {"transactionId": transaction, "idempotencyKey": key, **extra}}
