"""What a delegated agent token may spend (docs/rules.md, "Delegated tokens"): from its one account only, as
its agent only, on its activities only, and naming its user when a user minted it; and only the holds it placed.
spendCredits, holdCredits, captureHold, releaseHold, extendHold and increaseHold call one of these right after
resolving what the input names; any other token is let through unchanged (None), at no cost.

Naming another account is ``Forbidden`` whether that account, user or organization exists or not (as a portal
session paying for another account is refused), so a bound token learns nothing of other tenants. A hold is
named by its id: another account's hold is ``NotFound``, as ``node`` shows nothing of what a caller may not
read."""

from __future__ import annotations

from models.ids import decode_id
from models.tables import Hold
from models.tokens import Principal
from resolvers.mutations._common import Spender
from schema.errors import Forbidden, NotFound, ValidationError

OWN_ACCOUNT_ONLY = "This agent token spends only from the account it is bound to"
HOLD_NOT_FOUND = "Hold not found"
OWN_HOLDS_ONLY = "This agent token captures, releases, extends and increases only the holds it placed"


def _as_agent(who: Principal, user_id: int | None, agent_id: str | None, activity: str) -> Forbidden | None:
    if who.spends_as is not None and user_id != who.spends_as:
        return Forbidden(message="This agent token spends only as the user who minted it: name that user")
    if who.agent_id is not None and agent_id != who.agent_id:
        return Forbidden(message=f"This agent token spends only as agent {who.agent_id!r}")
    if who.activities is not None and activity not in who.activities:
        return Forbidden(message=f"This agent token may not spend on activity {activity!r}")
    return None


def spend_refusal(
    who: Principal, named: Spender | NotFound | ValidationError, agent_id: str, activity: str
) -> Forbidden | None:
    """Whether a delegated token may spend or hold for ``named`` (what ``spender`` resolved) as ``agent_id`` on
    ``activity``. A spender that was not found is refused like another account's, so that nothing tells which
    users and organizations exist; a malformed input is left to the caller's ``ValidationError``."""
    if not who.delegated or isinstance(named, ValidationError):
        return None
    if isinstance(named, NotFound) or named.account != who.account_owner:
        return Forbidden(message=OWN_ACCOUNT_ONLY)
    return _as_agent(who, named.user_id, agent_id, activity)


async def hold_refusal(who: Principal, hold_id: int) -> Forbidden | NotFound | None:
    """Whether a delegated token may capture, release, extend or increase this hold: one of its account's,
    placed for its user, agent and an allowed activity, and placed by this token. A hold another token placed
    counts against that token's limits, so growing or capturing it would spend past this token's own cap.
    Costs one query, for delegated tokens only."""
    if not who.delegated:
        return None
    hold = await Hold.filter(id=hold_id).only("id", "account_id", "user_id", "agent_id", "activity", "token_id").first()
    if hold is None or hold.account_id != who.account_id:
        return NotFound(message=HOLD_NOT_FOUND)
    if refused := _as_agent(who, hold.user_id, hold.agent_id, hold.activity):
        return refused
    if hold.token_id != who.token_id:
        return Forbidden(message=OWN_HOLDS_ONLY)
    return None


async def named_hold(who: Principal, hold_id: str) -> int | Forbidden | NotFound:
    """The hold a captureHold, releaseHold or extendHold input names, if ``who`` may act on it: its key, or the
    typed error (a malformed id is not found)."""
    key = decode_id(hold_id, "Hold")
    if key is None:
        return NotFound(message=HOLD_NOT_FOUND)
    refused = await hold_refusal(who, key)
    return key if refused is None else refused
