"""The delivery worker: fans events out to endpoints, claims due deliveries and sends them, in every server.

A pass: fan out every undispatched event, claiming at once the new deliveries there are free slots for
(``models.webhook_deliveries.fan_out_and_claim``), then claim what else is due and has a free slot (``claim_due``:
retries, and what the fan-out had no slot for); both commit before any request. One task per claimed delivery sends
outside any transaction and records the outcome. Passes run every ``webhook_poll_seconds``, and sooner after a
committed balance change (the bus's wake: a spend that crossed a threshold emitted its event in that commit), after
a send finishes (a slot is free) and after an endpoint was disabled (its event is due).

At most ``concurrency`` requests at once in a process, and to one endpoint at most its share: ``per_endpoint``,
or ``concurrency`` divided among the endpoints with deliveries claimed in the process (waiting or under way)
when that is less, and at least one (``DeliveryWorker.share``). Endpoints that never answer (their requests each
take the whole timeout) so leave slots to the others: four of them took all 64 slots at 16 each, and a healthy
endpoint's deliveries waited for their timeouts; with that fifth endpoint active each gets 12, and a freed
slot goes to an endpoint under its share. A pass claims up to
``PREFETCH`` times that, waiting locally for slots. A slot is free once its
response is read; the outcome is recorded with the others that finished meanwhile (one transaction a batch).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from datetime import timedelta

from creditline.events import OUTBOX, BusSubscription
from creditline.services import Services
from creditline.webhooks.sending import Resolver, Sender, resolve
from models import webhook_deliveries
from models.webhook_deliveries import Claimed, Outcome, Recorded

log = logging.getLogger("creditline.webhooks")

CONCURRENCY = 64
PER_ENDPOINT = 16
LEASE_MARGIN = timedelta(seconds=5)
"""A claim outlives the send's timeout by this much, so only a worker that died lets another send again."""
PREFETCH = 4
"""A pass claims up to this many times the free request slots (of the process, of an endpoint): the claimed wait
for a slot locally, so that one endpoint is sent per_endpoint requests at once with the next ones already
claimed, instead of per_endpoint a pass (which capped it at per_endpoint / pass time). One that cannot start
before its claim's end less the timeout is left, unsent, for the next claim."""
CLAIMED_PER_SLOT = 32
"""Deliveries one process holds claimed (waiting for a slot or under way) at most, per request slot."""
MAX_PER_ENDPOINT = 2048
"""Deliveries one endpoint may have claimed in a process at most, however fast it answers."""
RECORDING_FACTOR = 2 * CLAIMED_PER_SLOT
"""Deliveries sent and waiting for their outcome's batch are at most this many times ``concurrency``."""
LATENCY_WEIGHT = 0.2
"""Weight of a request's duration in its endpoint's moving average."""
WAKE_COALESCE_SECONDS = 0.01
"""After a wake, wait this long first: a burst of commits is handled in one pass."""
RECORD_COALESCE_SECONDS = 0.05
"""Outcomes wait this long for others to share their recording's transaction. It delays no receipt (the request
is over), only when the log shows the attempt; the delivery stays leased until then."""


class DeliveryWorker:
    def __init__(
        self,
        services: Services,
        *,
        concurrency: int = CONCURRENCY,
        per_endpoint: int = PER_ENDPOINT,
        rng: random.Random | None = None,
        resolver: Resolver = resolve,
    ) -> None:
        self.services = services
        settings = services.settings
        self.concurrency = concurrency
        self.per_endpoint = per_endpoint
        self.rng = rng or random.Random()
        self.retry_period = timedelta(hours=settings.webhook_retry_hours)
        # Long enough for a claimed delivery to wait for its endpoint slot behind PREFETCH - 1 others, then send.
        self.lease = timedelta(seconds=settings.webhook_timeout_seconds) * PREFETCH + LEASE_MARGIN
        self.sender = Sender(settings.webhook_timeout_seconds, settings.webhook_allow_private, resolver)
        self._in_flight: dict[int, int] = {}
        """Endpoint id: requests to it under way (not the outcomes waiting to be recorded)."""
        self._sending = 0
        """Deliveries claimed whose request has not finished (waiting for a slot, or under way)."""
        self._requesting: dict[int, int] = {}
        """Endpoint id: requests to it holding a slot (sending now)."""
        self._requests = 0
        """Requests holding a slot, of every endpoint (at most ``concurrency``)."""
        self._slot_freed = asyncio.Condition()
        self.timeout = timedelta(seconds=settings.webhook_timeout_seconds)
        self._took: dict[int, float] = {}
        """Endpoint id: moving average of its requests' seconds (of the endpoints this process sent to)."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._woken = asyncio.Event()
        self.started = 0
        """Attempts started so far."""
        self.wakes = 0
        """Commits that wrote events, heard on the bus (``OutboxWritten``): each asks for a pass."""
        self.passes = 0
        """Passes of ``run`` so far (one at start, then one per wake, coalesced, or per poll)."""
        self._subscription: BusSubscription | None = None
        self._outcomes: list[tuple[Claimed, Outcome, asyncio.Future[Recorded]]] = []
        self._recording = False
        self._recorder: asyncio.Task[None] | None = None
        self._closing = False
        """Set by ``close``: no request starts any more; the claims still waiting for a slot are given back."""
        self._unsent: list[Claimed] = []

    @property
    def sending(self) -> int:
        return len(self._tasks)

    async def fan_out(self) -> int:
        """Fan out the undispatched events, starting at once the deliveries there are free slots for (claimed
        as they are made). Returns how many events it dispatched."""
        total = 0
        while True:
            fanned = await webhook_deliveries.fan_out_and_claim(
                self.services.clock.now(),
                self.lease,
                self._free(),
                PREFETCH * self.per_endpoint,
                self._in_flight,
                caps=self.caps(),
            )
            self._start(fanned.claimed)
            total += fanned.dispatched
            if fanned.dispatched < webhook_deliveries.FAN_OUT_BATCH:
                return total

    def _free(self) -> int:
        """Deliveries this worker may claim now: ``CLAIMED_PER_SLOT`` per request slot, and no more than
        ``RECORDING_FACTOR`` per slot sent and waiting for their outcome's batch."""
        return min(
            CLAIMED_PER_SLOT * self.concurrency - self._sending, RECORDING_FACTOR * self.concurrency - len(self._tasks)
        )

    def caps(self) -> dict[int, int]:
        """How many deliveries each endpoint this process has sent to may have claimed here at once: as many
        as its share of the request slots gets through in half of what a claim leaves before the timeout, at
        its requests' average duration (at least ``PREFETCH`` per slot, at most ``MAX_PER_ENDPOINT``). Other
        endpoints get ``PREFETCH`` × ``per_endpoint``. A fixed ``PREFETCH`` × 16 = 64 capped a receiver that
        answers in a millisecond at 64 a pass, which is what kept p99 over a second at 1,000 events/s."""
        budget = (self.lease - self.timeout).total_seconds() / 2
        share = self.share()
        floor = PREFETCH * self.per_endpoint
        return {
            endpoint_id: max(floor, min(MAX_PER_ENDPOINT, int(share * budget / max(took, 0.001))))
            for endpoint_id, took in self._took.items()
        }

    async def start_due(self) -> int:
        """Claim what is due and fits the free slots, and start sending it. Returns how many it started."""
        claimed = await webhook_deliveries.claim_due(
            self.services.clock.now(),
            self.lease,
            self._free(),
            PREFETCH * self.per_endpoint,
            self._in_flight,
            self.caps(),
        )
        self._start(claimed)
        return len(claimed)

    def _start(self, claimed: list[Claimed]) -> None:
        self.started += len(claimed)
        for delivery in claimed:
            self._sending += 1
            self._in_flight[delivery.endpoint_id] = self._in_flight.get(delivery.endpoint_id, 0) + 1
            task = asyncio.create_task(self._deliver(delivery))
            self._tasks.add(task)

    async def _deliver(self, claimed: Claimed) -> None:
        released = False
        try:
            if not await self._take_slot(claimed.endpoint_id):
                self._unsent.append(claimed)  # stopping: given back by close, due again at once elsewhere
                return
            try:
                now = self.services.clock.now()
                if claimed.leased_until is not None and now + self.timeout > claimed.leased_until:
                    log.info("webhook delivery %d waited past its claim: left for the next", claimed.delivery_id)
                    return  # it could not finish within its lease: due again when the lease runs out
                began = time.monotonic()
                outcome = await self.sender.send(claimed, now)
                took = time.monotonic() - began
                average = self._took.get(claimed.endpoint_id)
                self._took[claimed.endpoint_id] = (
                    took if average is None else average + LATENCY_WEIGHT * (took - average)
                )
            finally:
                await self._free_slot(claimed.endpoint_id)
            # The request is over: its slot is free while the outcome waits for the next batch to record (the
            # delivery stays leased until then, so nobody sends it again meanwhile). Holding the slot through
            # the recording capped one endpoint at per_endpoint / (exchange + commit) deliveries a second.
            released = True
            self._release(claimed.endpoint_id)
            recorded = await self._record(claimed, outcome)
            if recorded.disabled_event_id is not None:
                log.warning("webhook endpoint %d disabled: it failed for the whole retry period", claimed.endpoint_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The claim's lease runs out and the delivery is sent again: at least once.
            log.exception("webhook delivery %d failed to record", claimed.delivery_id)
        finally:
            if not released:
                self._release(claimed.endpoint_id)
            task = asyncio.current_task()
            if task is not None:
                self._tasks.discard(task)
            self._woken.set()  # a slot is free (and a disabled endpoint's event is due)

    def share(self) -> int:
        """Request slots one endpoint may hold: ``per_endpoint``, or the process's ``concurrency`` divided among
        the endpoints with deliveries claimed here (waiting for a slot or under way) when that is less; at least
        one."""
        return max(1, min(self.per_endpoint, self.concurrency // max(1, len(self._in_flight))))

    async def _take_slot(self, endpoint_id: int) -> bool:
        """Wait for a request slot and take it; ``False`` (no slot taken) once the worker is closing."""
        async with self._slot_freed:
            await self._slot_freed.wait_for(
                lambda: (
                    self._closing
                    or (self._requests < self.concurrency and self._requesting.get(endpoint_id, 0) < self.share())
                )
            )
            if self._closing:
                return False
            self._requests += 1
            self._requesting[endpoint_id] = self._requesting.get(endpoint_id, 0) + 1
            return True

    async def _free_slot(self, endpoint_id: int) -> None:
        async with self._slot_freed:
            self._requests -= 1
            left = self._requesting[endpoint_id] - 1
            if left:
                self._requesting[endpoint_id] = left
            else:
                del self._requesting[endpoint_id]
            self._slot_freed.notify_all()

    def _release(self, endpoint_id: int) -> None:
        self._sending -= 1
        left = self._in_flight.get(endpoint_id, 1) - 1
        if left:
            self._in_flight[endpoint_id] = left
        else:
            self._in_flight.pop(endpoint_id, None)
        self._woken.set()

    async def _record(self, claimed: Claimed, outcome: Outcome) -> Recorded:
        """Record through the next batch: sends finishing together share one transaction (one commit)."""
        future: asyncio.Future[Recorded] = asyncio.get_running_loop().create_future()
        self._outcomes.append((claimed, outcome, future))
        if not self._recording:
            self._recording = True
            self._recorder = asyncio.create_task(self._record_batches())
        return await future

    async def _record_batches(self) -> None:
        try:
            while self._outcomes:
                # The receivers have these already (the request is over, its slot free): waiting a little lets
                # the outcomes of the sends finishing meanwhile share the batch's statements (a handful per
                # batch, whatever its size), instead of one batch every few sends.
                await asyncio.sleep(RECORD_COALESCE_SECONDS)
                batch, self._outcomes = self._outcomes, []
                try:
                    results = await webhook_deliveries.record_outcomes(
                        [(c, o) for c, o, _ in batch], self.services.clock.now(), self.retry_period, self.rng
                    )
                except Exception as exc:
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, _, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._recording = False

    async def run_once(self) -> int:
        """One pass to the end, for the CLI and tests: fan out, then send what is due until nothing is (retries
        scheduled later are left for later). Returns how many attempts it made."""
        before = self.started
        await self.fan_out()
        while True:
            await self.start_due()
            if self._tasks:
                await asyncio.wait(set(self._tasks), return_when=asyncio.FIRST_COMPLETED)
            elif not await self.fan_out():  # nothing due, and no event (a disabled endpoint's) left to fan out
                return self.started - before

    async def run(self) -> None:
        """Passes until cancelled; then the sends under way finish (each within its timeout) and record."""
        poll = self.services.settings.webhook_poll_seconds
        subscription = self.services.bus.subscribe(None, OUTBOX, wake=self._on_outbox_written)
        self._subscription = subscription
        try:
            while True:
                self._woken.clear()
                self.passes += 1
                try:
                    await self.fan_out()
                    await self.start_due()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    if _cancelling():  # the database layer reports a cancelled query as unavailable
                        raise asyncio.CancelledError() from None
                    log.exception("webhook delivery pass failed; retrying")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._woken.wait(), poll)
                await asyncio.sleep(WAKE_COALESCE_SECONDS)
        finally:
            subscription.close()
            await self.close()

    def _on_outbox_written(self) -> None:
        if self._subscription is not None:
            self._subscription.queue.clear()  # only the wake matters: the events are read from the table
        self.wakes += 1
        self._woken.set()

    async def close(self) -> None:
        """Stop within ``timeout`` + ``LEASE_MARGIN`` (README, Webhooks): no request starts any more, the claims
        waiting for a slot are given back (due again at once, for another process or the next start), the
        requests under way finish within their timeout and are recorded; what is still running past the
        bound is cancelled (its claim runs out: sent again, at least once). Waiting for the whole lease
        (4 timeouts and the margin, 45 s by default) outlasted a 30 s termination grace."""
        self._closing = True
        async with self._slot_freed:
            self._slot_freed.notify_all()
        if self._tasks:
            bound = (self.timeout + LEASE_MARGIN).total_seconds()
            _, late = await asyncio.wait(set(self._tasks), timeout=bound)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=1)
        unsent, self._unsent = self._unsent, []
        try:
            await webhook_deliveries.release_claims(unsent, self.services.clock.now())
        except Exception:
            log.exception("giving back %d unsent webhook deliveries failed: due when their claims run out", len(unsent))
        await self.sender.aclose()


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def deliver_once(services: Services) -> int:
    """``creditline webhooks deliver``: one pass (``DeliveryWorker.run_once``)."""
    worker = DeliveryWorker(services)
    try:
        return await worker.run_once()
    finally:
        await worker.close()
