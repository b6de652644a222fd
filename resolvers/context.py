"""The per-request context: who is calling, the shared services (``creditline.services``), and fresh
DataLoaders."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from creditline.services import Services
from models.tokens import Principal
from resolvers.feeds import LiveHandover
from resolvers.loaders import Loaders


@dataclass
class Context:
    services: Services
    principal: Principal | None
    loaders: Loaders
    request: Any = None
    token: str | None = None
    """The bearer secret the caller sent (websockets re-check it to end a revoked token's subscriptions)."""
    connection_params: dict[str, Any] | None = None
    live: LiveHandover | None = None
    """The websocket operation this context runs: a subscription hands its events over to it."""

    @classmethod
    def build(
        cls, services: Services, principal: Principal | None, request: Any = None, token: str | None = None
    ) -> Context:
        return cls(services, principal, Loaders(services.clock.now), request, token)

    def for_operation(self, live: LiveHandover | None) -> Context:
        """The same caller with its own DataLoaders, for one operation or one pushed event: a websocket
        context lives as long as the connection, and every event must read current data, not a cache."""
        return replace(self, loaders=Loaders(self.services.clock.now), live=live)

    def now(self) -> datetime:
        return self.services.clock.now()
