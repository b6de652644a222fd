"""The auto top-up worker: charges queued top-ups outside any database transaction, then records the outcome.

The server starts it as soon as a spend that queued a top-up has committed (``kick``), and the sweep runs
``run_due`` for what is left: top-ups whose worker died, and retries whose back-off has run out. Each top-up
is claimed first (``models.auto_top_up.claim``), so two processes never charge it at the same time.
"""

from __future__ import annotations

import asyncio
import logging

from creditline.services import Services
from models import auto_top_up
from models.payments import Price
from models.tables import Transaction, TransactionStatus

log = logging.getLogger("creditline.auto_top_up")

_running: set[asyncio.Task[None]] = set()


def terms(services: Services) -> auto_top_up.Terms | None:
    """What a queued top-up costs and where it is charged; ``None`` where cards are not kept on file."""
    if not services.gateway.card_on_file:
        return None
    settings = services.settings
    return auto_top_up.Terms(Price(settings.currency, settings.price_per_100_credits), services.gateway.name)


async def charge(services: Services, transaction_id: int) -> bool:
    """Claim a queued top-up, charge it, grant its credit or record the decline. False if another worker
    holds it or it was settled already."""
    if not await auto_top_up.claim(transaction_id, services.clock.now()):
        return False
    await _charge_claimed(services, transaction_id)
    return True


async def _charge_claimed(services: Services, transaction_id: int) -> None:
    from resolvers.mutations.payments import charge_pending

    txn = await Transaction.get(id=transaction_id)
    if txn.status == TransactionStatus.PENDING:  # else a crash came between the charge and the settling
        await charge_pending(services, txn)  # publishes the balance change after its commit
    await auto_top_up.settle(transaction_id, services.clock.now())


async def _charge_logged(services: Services, transaction_id: int) -> None:
    try:
        await charge(services, transaction_id)
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
    """Charge what the sweep finds due (see ``claim_due``). Returns how many top-ups it handled."""
    top_up_terms = terms(services)
    if top_up_terms is None:
        return 0
    handled = 0
    for claimed in await auto_top_up.claim_due(services.clock.now()):
        try:
            if claimed.pending_transaction_id is not None:
                await _charge_claimed(services, int(claimed.pending_transaction_id))
            else:
                queued = await auto_top_up.retry_locked(claimed.account_id, top_up_terms, services.clock.now())
                if queued is None or not await charge(services, queued):
                    continue
            handled += 1
        except Exception:
            log.exception("auto top-up of account %d failed; the sweep tries again", claimed.account_id)
    return handled
