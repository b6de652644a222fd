"""Charging queued auto top-ups: outside any database transaction, then recording the outcome.

A spend that leaves the balance below the account's threshold queues a top-up in its own transaction
(``models/ledger/auto_top_up.py``); ``kick`` starts its charge in the background once that has committed.
Each top-up is claimed first (``claim``), so two processes never charge it at the same time. What a
charge misses (a worker that died, a back-off that ran out) the sweep charges: ``charge_due``, run by
``creditline/auto_top_up_worker.py``. See docs/rules.md, "Auto top-up queueing".
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from billing.errors import PaymentMethodNotFoundError, PaymentMethodRequiredError, PaymentUnavailableError
from billing.payments import charge_pending, default_card, price
from creditline.services import Services
from models.ledger import auto_top_up
from models.tables import Transaction, TransactionStatus

log = logging.getLogger("creditline.auto_top_up")

_running: set[asyncio.Task[None]] = set()
"""Charges started by ``kick`` and not finished: kept so that they are not collected, and awaited by ``idle``."""


def terms(services: Services) -> auto_top_up.Terms | None:
    """What a queued top-up costs and where it is charged; ``None`` where cards are not kept on file."""
    if not services.gateway.card_on_file:
        return None
    return auto_top_up.Terms(price(services), services.gateway.name)


async def configure(services: Services, account_id: int, config: auto_top_up.Config, *, card_given: bool) -> None:
    """Save an account's auto top-up configuration, its card the one given (``card_given``: even an id that
    named no card, which is then not found) or else the one kept, else the account's default; if
    the balance is below the threshold already, the top-up this queues is charged before returning. Refuses
    with ``PaymentUnavailableError`` where cards are not kept on file, ``PaymentMethodRequiredError`` without
    a card, ``PaymentMethodNotFoundError`` when the card is not (or no longer) the account's; nothing changes."""
    top_up_terms = terms(services)
    if top_up_terms is None:
        raise PaymentUnavailableError(
            f"Auto top-up needs cards on file, which the {services.gateway.name} gateway does not keep"
        )
    if config.payment_method_id is None and not card_given:
        default = await default_card(account_id)
        if default is None:
            raise PaymentMethodRequiredError("Add a card first (addPaymentMethod), or give paymentMethodId")
        config = replace(config, payment_method_id=default.id)
    try:
        queued = await auto_top_up.configure(account_id, config, terms=top_up_terms, now=services.clock.now())
    except auto_top_up.CardUnavailableError as exc:
        raise PaymentMethodNotFoundError(str(exc)) from None
    if queued is not None:
        await charge(services, queued)  # the balance is below the threshold already


async def charge(services: Services, transaction_id: int) -> bool:
    """Claim a queued top-up, charge it, grant its credit or record the decline. False if another worker
    holds it or it was settled already."""
    if not await auto_top_up.claim(transaction_id, services.clock.now()):
        return False
    await _charge_claimed(services, transaction_id)
    return True


async def _charge_claimed(services: Services, transaction_id: int) -> None:
    txn = await Transaction.get(id=transaction_id)
    if txn.status == TransactionStatus.PENDING:  # else a crash came between the charge and the settling
        await charge_pending(services, txn)  # publishes the balance change after its commit
    await auto_top_up.settle(transaction_id, services.clock.now())
    services.bus.publish(())  # the settling's auto_top_up.* event: wakes the delivery workers


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
    """Wait until every charge started by ``kick`` has finished (tests, shutdown)."""
    while _running:
        await asyncio.gather(*_running, return_exceptions=True)


async def charge_due(services: Services) -> int:
    """Charge what is due (see ``models.ledger.auto_top_up.claim_due``): top-ups whose worker died, and retries
    whose back-off has run out. Returns how many top-ups it handled; one that fails is logged and left to
    the next run."""
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
