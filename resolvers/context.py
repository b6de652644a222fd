"""The per-request context: who is calling, the shared services, and fresh DataLoaders."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from creditline.clock import Clock
from creditline.events import EventBus
from creditline.settings import Settings
from gateway.base import Gateway
from gateway.sandbox import SandboxGateway
from models.plans import PlanCatalog
from models.rate_card import RateCard
from models.tokens import Principal
from resolvers.loaders import Loaders

if TYPE_CHECKING:
    from creditline.live import LiveOperation


@dataclass
class Services:
    """What lives as long as the application: settings, the clock and the event bus."""

    settings: Settings
    clock: Clock
    bus: EventBus
    rate_card: RateCard = field(default_factory=RateCard)
    plans: PlanCatalog = field(default_factory=PlanCatalog)
    link_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    """Signs invoice links (CREDITLINE_SECRET_KEY, else random per process)."""
    gateway: Gateway = field(default_factory=SandboxGateway)


@dataclass
class Context:
    services: Services
    principal: Principal | None
    loaders: Loaders
    request: Any = None
    token: str | None = None
    """The bearer secret the caller sent (websockets re-check it to end a revoked token's subscriptions)."""
    connection_params: dict[str, Any] | None = None
    live: LiveOperation | None = None
    """The websocket operation this context runs: a subscription hands its events over to it."""

    @classmethod
    def build(
        cls, services: Services, principal: Principal | None, request: Any = None, token: str | None = None
    ) -> Context:
        return cls(services, principal, Loaders(services.clock.now), request, token)

    def for_operation(self, live: LiveOperation | None) -> Context:
        """The same caller with its own DataLoaders, for one operation or one pushed event: a websocket
        context lives as long as the connection, and every event must read current data, not a cache."""
        return replace(self, loaders=Loaders(self.services.clock.now), live=live)

    def now(self) -> datetime:
        return self.services.clock.now()
