"""Interleaved rounds: how the spend benchmark compares variants on a machine whose load moves under it.

Consecutive long runs (all plain spends, then all limited ones) measure the machine's swings as much as the
variants: on a shared 2-CPU host the same comparison came out anywhere from 0.68 to 11.8. So every variant
runs as a short segment of each round (a few seconds), the order rotating from round to round so that no
variant always runs first or last, and each ratio is taken within one round (variant / plain of the same
round), then summarised by its median and its spread (min, max) over the rounds. A control variant, a
second set of plain accounts spent from exactly like the first, gives the ratio the method reports for two
identical things: how far from 1.00 it lands is the noise a reader should allow every other ratio.

Separate segments rather than one wrk run mixing the variants: in a mixed run the requests of every variant
queue behind each other on the one event loop and the one database, so a variant costing 20% more per
request shows only as a slightly longer service time inside a shared queue, and its throughput ratio comes
out near 1 whatever it costs; a segment measures what a server doing only that variant sustains, which is
what "throughput within 10% of the plain spend's" means.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


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
