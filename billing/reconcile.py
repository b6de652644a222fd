"""The sweep's payment work: finishing payments left PENDING, and charging card-on-file renewals."""

from __future__ import annotations

import logging
from datetime import timedelta

from tortoise import connections

from billing import webhook_events
from billing.checkout import settle_checkout
from billing.hosted_subscriptions import settle_subscription_checkout
from billing.payments import charge_pending, record_answer, subscription_billing
from creditline.services import Services
from gateway.base import GatewayError, GatewayUnavailable, HostedGateway
from models import subscriptions
from models.sql import job_lock
from models.tables import Transaction, TransactionStatus, TransactionType

log = logging.getLogger("creditline.jobs")

MARGIN = timedelta(hours=1)
"""A charge is not sent again this close to the end of the processor's idempotency window."""


async def reconcile_pending(services: Services, older_than: timedelta = timedelta(minutes=1)) -> int:
    """Finish payments left PENDING (a crash or a network failure between the request and the answer, or a
    missed webhook). Card on file: charge again with the same idempotency key, which returns the first
    charge's answer. Hosted checkout: ask the processor how the Checkout page ended. Events that came
    before our own rows are processed again. One process at a time runs this (``job_lock``); every
    completion acts only on a PENDING row under the account lock, so nothing completes twice. Returns how
    many PENDING payments it looked at (0 while another process reconciles)."""
    gateway = services.gateway
    window = gateway.idempotency_window
    async with job_lock(connections.get("default"), "reconcile") as held:
        if not held:
            return 0  # another process is reconciling
        now = services.clock.now()
        pending = (
            await Transaction.filter(
                status=TransactionStatus.PENDING, gateway=gateway.name, created_at__lte=now - older_than
            )
            .exclude(type=TransactionType.AUTO_TOP_UP)  # claimed and charged by billing.auto_top_up.charge_due
            .order_by("id")
        )
        for txn in pending:
            try:
                if isinstance(gateway, HostedGateway) and txn.subscription_id is not None:
                    await settle_subscription_checkout(services, gateway, txn)
                elif isinstance(gateway, HostedGateway):
                    await settle_checkout(services, gateway, txn)
                elif window is not None and now - txn.created_at >= window - MARGIN:
                    log.error("transaction %s could not be confirmed while the processor kept its key", txn.id)
                    _, changes = await record_answer(
                        services,
                        txn,
                        succeeded=False,
                        reference=None,
                        failure_reason="The payment could not be confirmed in time",
                    )
                    services.bus.publish(changes)
                else:
                    await charge_pending(services, txn)
            except (GatewayError, GatewayUnavailable) as exc:
                log.warning("transaction %s stays pending: %s", txn.id, exc)
            except Exception:  # one payment that cannot be finished must not hold back the others
                log.exception("transaction %s stays pending: reconciling it failed", txn.id)
        _, changes = await webhook_events.retry_unprocessed(webhook_events.context_for(services))
        services.bus.publish(changes)
    return len(pending)


async def renew_subscriptions(services: Services) -> int:
    """Charge the subscription payments of the card-on-file gateway that are due and end those canceled at
    period end. Each payment is written once (its key names the period and attempt), then charged."""
    gateway = services.gateway
    if not gateway.card_on_file:
        return 0  # a hosted gateway's processor renews its subscriptions, and its webhooks tell us
    due = await subscriptions.due_payments(
        services.plans, subscription_billing(services), gateway.name, services.clock.now()
    )
    for transaction_id in due:
        await charge_pending(services, await Transaction.get(id=transaction_id))
    return len(due)
