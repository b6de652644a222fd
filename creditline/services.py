"""What lives as long as the application, built once by the shell (``creditline.app.build_services``) and
handed to the API, the jobs, the workers and the billing services."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from creditline.clock import Clock
from creditline.events import EventBus
from creditline.settings import Settings
from gateway.base import Gateway
from gateway.sandbox import SandboxGateway
from models.ledger import alerts
from models.plans import PlanCatalog
from models.rate_card import RateCard


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

    def __post_init__(self) -> None:
        # The ledger reads the deployment's alert level for accounts that set none (models/ledger/alerts.py).
        alerts.set_default_level(self.settings.default_low_balance_credits)
