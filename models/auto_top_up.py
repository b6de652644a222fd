"""Auto top-up lives in the ledger package (``models/ledger/auto_top_up.py``), beside the spend that queues it.

These names stay importable from here, ``from models import auto_top_up``, for the callers written before it
moved (the worker, billing, the API); new code imports ``models.ledger.auto_top_up``.
"""

from models.ledger.auto_top_up import (
    CLAIM_BATCH,
    CLAIM_LEASE,
    MAX_DECLINES,
    RETRY_AFTER,
    CardUnavailableError,
    Claimed,
    Config,
    State,
    Terms,
    claim,
    claim_due,
    configure,
    month_start,
    next_month_start,
    queue_locked,
    retry_locked,
    settle,
    smallest_top_up,
    state,
    top_up_size,
    topped_up_this_month,
)

__all__ = [
    "CLAIM_BATCH",
    "CLAIM_LEASE",
    "MAX_DECLINES",
    "RETRY_AFTER",
    "CardUnavailableError",
    "Claimed",
    "Config",
    "State",
    "Terms",
    "claim",
    "claim_due",
    "configure",
    "month_start",
    "next_month_start",
    "queue_locked",
    "retry_locked",
    "settle",
    "smallest_top_up",
    "state",
    "top_up_size",
    "topped_up_this_month",
]
