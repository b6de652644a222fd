"""Background jobs: the sweep of expired lots and timed-out holds, in the server and from the CLI."""

from __future__ import annotations

import asyncio
import logging

from models import ledger
from resolvers.context import Services

log = logging.getLogger("creditline.jobs")


async def sweep_once(services: Services) -> ledger.SweepReport:
    report = await ledger.sweep(services.clock.now())
    services.bus.publish(report.changes)  # after each account's transaction has committed
    return report


async def run_sweeper(services: Services) -> None:
    interval = services.settings.sweep_interval_seconds
    while True:
        try:
            report = await sweep_once(services)
            if report.expired_lots or report.released_holds:
                log.info("sweep: %d lots expired, %d holds released", report.expired_lots, report.released_holds)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("sweep failed; retrying next interval")
        await asyncio.sleep(interval)
