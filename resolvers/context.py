"""The per-request context: who is calling, the shared services, and fresh DataLoaders."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from creditline.clock import Clock
from creditline.events import EventBus
from creditline.settings import Settings
from gateway.base import Gateway
from gateway.sandbox import SandboxGateway
from models.plans import PlanCatalog
from models.rate_card import RateCard
from models.tokens import Principal
from resolvers.loaders import Loaders


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

    @classmethod
    def build(
        cls, services: Services, principal: Principal | None, request: Any = None, token: str | None = None
    ) -> Context:
        return cls(services, principal, Loaders(services.clock.now), request, token)

    def fresh_loaders(self) -> None:
        """New DataLoaders: a websocket context lives as long as the connection, so every pushed event
        gets its own instead of reading through a cache filled by earlier events."""
        self.loaders = Loaders(self.services.clock.now)

    def now(self) -> datetime:
        return self.services.clock.now()
