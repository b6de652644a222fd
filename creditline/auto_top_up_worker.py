"""The auto top-up worker: the sweep's share of auto top-ups (the charging itself is ``billing.auto_top_up``).

A spend that queued a top-up starts its charge as soon as it has committed (``billing.auto_top_up.kick``);
the sweep runs ``run_due`` for what is left: top-ups whose charge died with its process, and retries whose
back-off has run out.
"""

from __future__ import annotations

from billing import auto_top_up
from creditline.services import Services


async def run_due(services: Services) -> int:
    """Charge what the sweep finds due (``billing.auto_top_up.charge_due``). Returns how many top-ups it
    handled."""
    return await auto_top_up.charge_due(services)
