"""What a live subscription (resolvers/live.py) hands over to the websocket operation that runs it
(creditline/live.py): the ``Feed`` it follows, and the operation as the resolver sees it (``LiveHandover``).
Defined here, on the API's side, so that the shell's websocket code imports the API and not the reverse."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from creditline.events import EventBus
from models.ledger import Event

if TYPE_CHECKING:
    from resolvers.context import Context

T_co = TypeVar("T_co", covariant=True)


class Feed(Protocol[T_co]):
    """What a subscription follows on the bus, and what it sends for each event."""

    @property
    def topic(self) -> str: ...

    @property
    def keys(self) -> frozenset[int]: ...

    @property
    def access(self) -> tuple[int, int] | None:
        """``(organization_id, user_id)``: the viewer may watch only while that member has the BILLING or
        OWNER role (``None``: rights that no change of membership takes away)."""

    @property
    def waiting(self) -> bool:
        """Events are held back until the versions missing before them arrive (or ``fill`` is called)."""

    async def first(self, ctx: Context) -> T_co | None:
        """What is sent as soon as the subscription starts (``None``: nothing)."""

    async def payloads(self, event: Event, ctx: Context) -> Sequence[T_co]:
        """The root values to send for ``event``, in order (none: skip it, or held back); a ``GraphQLError``
        ends the subscription."""

    async def fill(self, ctx: Context) -> Sequence[T_co]:
        """What was held back has waited long enough: read what is still missing from the database."""


class LiveHandover(Protocol):
    """The websocket operation a subscription's context runs in (``Context.live``)."""

    handed_over: bool
    """Set once the resolver has sent what comes first: later events are the operation's to send."""

    def follow(self, feed: Feed[Any], bus: EventBus) -> None:
        """Subscribe on the bus now; events wait in the queue until the operation is parked."""
