"""The offline, deterministic gateway of the embedded default. Cards come from test tokens, never numbers."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from gateway.base import Card, Charge, GatewayEvent, InvalidPaymentToken, InvalidWebhook

# token -> (brand, last4, exp_month, exp_year, reason a charge fails or None)
TEST_CARDS: dict[str, tuple[str, str, int, int, str | None]] = {
    "tok_visa": ("visa", "4242", 12, 2034, None),
    "tok_mastercard": ("mastercard", "4444", 12, 2034, None),
    "tok_chargeDeclined": ("visa", "0002", 12, 2034, "Your card was declined."),
    "tok_chargeDeclinedInsufficientFunds": ("visa", "9995", 12, 2034, "Your card has insufficient funds."),
    "tok_expiredCard": ("visa", "0069", 1, 2020, "Your card has expired."),
}


class SandboxGateway:
    name = "sandbox"
    card_on_file = True
    uses_customers = False
    idempotency_window: timedelta | None = None

    def unavailable_reason(self) -> str | None:
        return None

    async def create_customer(self, *, account_id: int, email: str | None, name: str, idempotency_key: str) -> str:
        return f"cus_sandbox_{account_id}"

    async def save_card(self, token: str, *, customer: str | None = None) -> Card:
        if token not in TEST_CARDS:
            raise InvalidPaymentToken(f"Unknown sandbox token {token!r}: use one of {', '.join(sorted(TEST_CARDS))}")
        brand, last4, month, year, _ = TEST_CARDS[token]
        return Card(reference=f"card_sandbox_{token}", brand=brand, last4=last4, exp_month=month, exp_year=year)

    async def remove_card(self, reference: str) -> None:
        return None

    async def charge(
        self,
        *,
        amount: int,
        currency: str,
        card: str,
        idempotency_key: str,
        description: str,
        customer: str | None = None,
        off_session: bool = False,
    ) -> Charge:
        token = card.removeprefix("card_sandbox_")
        if token not in TEST_CARDS:
            return Charge(False, None, "Unknown card")
        reference = "ch_sandbox_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:16]
        failure = TEST_CARDS[token][4]
        return Charge(failure is None, reference, failure)

    async def refund(self, *, charge: str, amount: int, currency: str, idempotency_key: str) -> Charge:
        if not charge.startswith("ch_sandbox_"):
            return Charge(False, None, "No such charge")
        return Charge(True, "re_sandbox_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:16])

    def verify_event(self, payload: bytes, signature: str | None, now: datetime) -> GatewayEvent:
        raise InvalidWebhook("The sandbox gateway receives no webhooks")

    async def close(self) -> None:
        return None
