"""The auto top-up worker: when queued top-ups are charged (the charging itself is ``billing.auto_top_up``).

The server starts a charge as soon as a spend that queued a top-up has committed (``kick``), and the sweep
runs ``run_due`` for what is left: top-ups whose worker died, and retries whose back-off has run out.
"""

from __future__ import annotations

import asyncio
import logging

from billing import auto_top_up
from billing.auto_top_up import charge as charge  # charging one at once, for the tests that drive the worker
from creditline.services import Services

log = logging.getLogger("creditline.auto_top_up")

_running: set[asyncio.Task[None]] = set()


async def _charge_logged(services: Services, transaction_id: int) -> None:
    try:
        await auto_top_up.charge(services, transaction_id)
    except Exception:
        log.exception("auto top-up transaction %d failed; the sweep tries again", transaction_id)


def kick(services: Services, transaction_id: int | None) -> None:
    """Charge a just-queued top-up in the background (the spend that queued it has committed)."""
    if transaction_id is None:
        return
    task = asyncio.create_task(_charge_logged(services, transaction_id))
    _running.add(task)
    task.add_done_callback(_running.discard)


async def idle() -> None:
    """Wait until every top-up started by ``kick`` has finished (tests, shutdown)."""
    while _running:
        await asyncio.gather(*_running, return_exceptions=True)


async def run_due(services: Services) -> int:
    """Charge what the sweep finds due (``billing.auto_top_up.charge_due``). Returns how many top-ups it
    handled."""
    return await auto_top_up.charge_due(services)
