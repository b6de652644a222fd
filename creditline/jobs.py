"""Background jobs: the sweep of expired lots and timed-out holds, pending payments and due auto top-ups, in
the server and from the CLI."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from creditline import auto_top_up_worker
from models import ledger
from resolvers.context import Services

log = logging.getLogger("creditline.jobs")


async def sweep_once(services: Services) -> ledger.SweepReport:
    report = await ledger.sweep(services.clock.now())
    services.bus.publish(report.changes)  # after each account's transaction has committed
    return report


async def reconcile_pending(services: Services, older_than: timedelta = timedelta(minutes=1)) -> int:
    """Finish top-ups left PENDING (a crash between charge and grant): charge again with the same
    idempotency key, which returns the first charge's answer, and complete exactly once."""
    from models.tables import Transaction, TransactionStatus, TransactionType
    from resolvers.mutations.payments import charge_pending

    cutoff = services.clock.now() - older_than
    pending = (
        await Transaction.filter(status=TransactionStatus.PENDING, created_at__lte=cutoff)
        .exclude(type=TransactionType.AUTO_TOP_UP)  # claimed and reconciled by auto_top_up_worker.run_due
        .order_by("id")
    )
    for txn in pending:
        await charge_pending(services, txn)
    return len(pending)


async def renew_subscriptions(services: Services) -> int:
    """Charge the subscription payments that are due (card-on-file gateways) and end those canceled at
    period end. Each payment is written once (its key names the period and attempt), then charged."""
    from models import subscriptions
    from models.tables import Transaction
    from resolvers.mutations.payments import charge_pending, subscription_billing

    due = await subscriptions.due_payments(services.plans, subscription_billing(services), services.clock.now())
    for transaction_id in due:
        await charge_pending(services, await Transaction.get(id=transaction_id))
    return len(due)


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
            if report.expired_lots or report.released_holds:
                log.info("sweep: %d lots expired, %d holds released", report.expired_lots, report.released_holds)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("sweep failed; retrying next interval")
        await asyncio.sleep(interval)
