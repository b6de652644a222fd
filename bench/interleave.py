"""Interleaved rounds: how the spend benchmark compares variants on a machine whose load moves under it.

Consecutive long runs (all plain spends, then all limited ones) measure the machine's swings as much as the
variants: on a shared 2-CPU host the same comparison came out anywhere from 0.68 to 11.8, and rounds of
3-second wrk runs, one per variant, still gave a plain-vs-plain control of 0.34 to 5.1. So the wrk variants
run in time slots of one wrk run (bench/slots.lua): every connection spends from the same variant's
accounts during a slot (a second by default), a cycle has one slot per variant, and each cycle's order is
rotated so that no variant always follows the same one; the first quarter of each slot, while the previous
variant's requests in flight finish, is not counted. Each ratio is taken within one cycle (variant / plain
of the same cycle, a few seconds apart), then summarised by its median and its spread (min, max) over the
cycles. A control variant, a second set of plain accounts spent from exactly like the first, gives the
ratio the method reports for two identical things: how far from 1.00 it lands is the noise a reader should
allow every other ratio. The raw-SQL ceilings run in the bench's own process between the wrk runs, in
rotating order, and are compared with the HTTP rates of the same round.

Slots rather than one wrk run mixing the variants request by request: in a mixed run the requests of every variant
queue behind each other on the one event loop and the one database, so a variant costing 20% more per
request shows only as a slightly longer service time inside a shared queue, and its throughput ratio comes
out near 1 whatever it costs; a slot measures what a server doing only that variant sustains, which is
what "throughput within 10% of the plain spend's" means.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


def rotated(segments: Sequence[str], round_no: int) -> list[str]:
    """The order of round ``round_no`` (from 0): ``segments`` rotated left by ``round_no``."""
    if not segments:
        return []
    shift = round_no % len(segments)
    return [*segments[shift:], *segments[:shift]]


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float
    rounds: int

    def __str__(self) -> str:
        return f"{self.median:.2f} ({self.low:.2f}-{self.high:.2f})"

    def short(self, digits: int = 0) -> str:
        """Rates: ``1,234 (1,100-1,300)``."""
        return f"{self.median:,.{digits}f} ({self.low:,.{digits}f}-{self.high:,.{digits}f})"


def spread(values: Sequence[float]) -> Spread | None:
    """Median, min and max of ``values``; ``None`` when there are none."""
    if not values:
        return None
    return Spread(statistics.median(values), min(values), max(values), len(values))


def round_ratios(rates: Sequence[Mapping[str, float]], variant: str, base: str) -> list[float]:
    """``variant / base`` in every round (a mapping of segment name to its rate) that measured both, the
    base non-zero."""
    return [r[variant] / r[base] for r in rates if variant in r and base in r and r[base] > 0]


def ratio_spread(rates: Sequence[Mapping[str, float]], variant: str, base: str) -> Spread | None:
    return spread(round_ratios(rates, variant, base))


def rate_spread(rates: Sequence[Mapping[str, float]], segment: str) -> Spread | None:
    return spread([r[segment] for r in rates if segment in r])


def slot_variant(k: int, variants: int, round_no: int) -> tuple[int, int]:
    """Slot ``k`` (from 0) of a slotted wrk run (bench/slots.lua computes the same): its cycle, and the index of
    its variant, which takes every position of a cycle in turn from one cycle (and round) to the next."""
    cycle = k // variants
    return cycle, (k % variants + cycle + round_no) % variants


def slot_rates(
    counted: Mapping[tuple[int, int], int], variants: Sequence[str], cycles: int, seconds: float
) -> list[dict[str, float]]:
    """Per cycle, each variant's rate: the requests counted in its slot (by (cycle, variant index)) over the
    counted part of a slot, ``seconds``. A slot with none counted has a rate of 0."""
    return [{name: counted.get((c, v), 0) / seconds for v, name in enumerate(variants)} for c in range(cycles)]


def slot_cpu(
    sampled: Mapping[int, Any],
    counted: Mapping[tuple[int, int], int],
    variants: Sequence[str],
    cycles: int,
    round_no: int,
) -> list[dict[str, tuple[float, float]]]:
    """Per cycle, each variant's CPU ms per counted spend, (server, database): ``sampled`` holds the CPU
    spent in the counted part of each slot (``server_ms``, ``database_ms``), by slot number; a slot with no
    spend counted or no sample is left out."""
    found: list[dict[str, tuple[float, float]]] = [{} for _ in range(cycles)]
    for k, cpu in sampled.items():
        cycle, v = slot_variant(k, len(variants), round_no)
        spends = counted.get((cycle, v), 0)
        if cycle < cycles and spends:
            found[cycle][variants[v]] = (cpu.server_ms / spends, cpu.database_ms / spends)
    return found
