"""Choosing the gateway named by ``CREDITLINE_GATEWAY``. Nothing here reaches the processor."""

from __future__ import annotations

from creditline.settings import Settings
from gateway.base import Gateway
from gateway.legacy import LegacyGateway
from gateway.sandbox import SandboxGateway
from gateway.stripe import StripeGateway
from gateway.stripe_api import StripeApi


def gateway_for(settings: Settings) -> Gateway:
    if settings.gateway == "sandbox":
        return SandboxGateway()
    api = StripeApi(
        secret_key=settings.stripe_secret_key,
        webhook_secret=settings.stripe_webhook_secret,
        api_base=settings.stripe_api_base,
        webhook_tolerance_seconds=settings.webhook_tolerance_seconds,
    )
    if settings.gateway == "stripe":
        return StripeGateway(api)
    return LegacyGateway(api)
