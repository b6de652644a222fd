"""Background jobs: the sweep of expired lots and timed-out holds, pending payments and due auto top-ups, in
the server and from the CLI. What each does is the ledger's and billing's (``billing.reconcile``); this is
when it runs."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from billing.reconcile import reconcile_pending, renew_subscriptions
from creditline import auto_top_up_worker
from creditline.services import Services
from models import forecast, ledger, webhook_deliveries

log = logging.getLogger("creditline.jobs")


async def sweep_once(services: Services) -> ledger.SweepReport:
    expiring = timedelta(days=services.settings.credit_expiring_days)
    report = await ledger.sweep(services.clock.now(), expiring)
    services.bus.publish(report.changes)  # after each account's transaction has committed
    # After the expiries and timed-out holds are recorded: the candidates' cached balances are then live.
    raised = await forecast.sweep_runs_out_soon(services.clock.now(), services.settings.runs_out_soon_days)
    if raised:
        log.info("balance.runs_out_soon for %d accounts", len(raised))
    return report


async def run_sweeper(services: Services) -> None:
    interval = services.settings.sweep_interval_seconds
    while True:
        try:
            report = await sweep_once(services)
            reconciled = await reconcile_pending(services)
            renewed = await renew_subscriptions(services)
            if renewed:
                log.info("charged %d subscription payments", renewed)
            if reconciled:
                log.info("reconciled %d pending transactions", reconciled)
            topped_up = await auto_top_up_worker.run_due(services)
            if topped_up:
                log.info("charged %d auto top-ups", topped_up)
            pruned = await prune_events(services)
            if pruned:
                log.info("pruned %d events past their retention", pruned)
            if report.expired_lots or report.released_holds:
                log.info("sweep: %d lots expired, %d holds released", report.expired_lots, report.released_holds)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("sweep failed; retrying next interval")
        finally:
            services.bus.publish(())  # wakes the delivery workers for what the pass wrote (renewals, forecasts)
        await asyncio.sleep(interval)


async def prune_events(services: Services) -> int:
    """Delete events older than ``event_retention_days`` with their deliveries and attempts (each account's
    newest is kept: ``models.outbox.prune``)."""
    before = services.clock.now() - timedelta(days=services.settings.event_retention_days)
    return await webhook_deliveries.prune_before(before)
