"""CPU time per spend in each slot of a slotted wrk run: the server process's, and the database's.

On a machine whose other work takes most of its CPU, a variant's throughput in a given second says more
about what else ran in that second than about the variant. The CPU time the server (and, on PostgreSQL, the
backends of the bench database) spent per request does not depend on how much CPU was left over: it is what
a spend costs, and on a CPU-bound server throughput is its inverse. So while slots.lua runs, this samples
``/proc/<pid>/stat`` (user + system time, in clock ticks) at the start and the end of each slot's counted
part, and divides by the requests counted in it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


def cpu_ms(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` (every thread) in ms; None once it has gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) ": field 3 (state) is fields[0]
    return (int(fields[11]) + int(fields[12])) * TICK_MS


def tree_cpu_ms(pid: int) -> float | None:
    """``cpu_ms`` of ``pid`` and of its descendants (the worker processes of ``serve --workers``)."""
    own = cpu_ms(pid)
    if own is None:
        return None
    return own + sum(ms for child in _children(pid) if (ms := tree_cpu_ms(child)) is not None)


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def total_cpu_ms(pids: Iterable[int]) -> dict[int, float]:
    return {pid: ms for pid in pids if (ms := cpu_ms(pid)) is not None}


def spent_between(before: Mapping[int, float], after: Mapping[int, float]) -> float:
    """CPU ms spent between two samples by the processes of ``after``: a process new since ``before`` counts
    all it has spent (it started in between)."""
    return sum(ms - before.get(pid, 0.0) for pid, ms in after.items())


@dataclass(frozen=True)
class SlotCpu:
    server_ms: float
    database_ms: float


Pids = Callable[[], Awaitable[Sequence[int]]]
"""The database processes to count now (none for SQLite, which runs in the server's process)."""


async def sample_slots(
    server_pid: int, database_pids: Pids, t0_ms: float, slot_ms: int, guard_ms: int, slots: int
) -> dict[int, SlotCpu]:
    """CPU time spent in the counted part of each of ``slots`` slots from ``t0_ms`` (time.monotonic(), ms):
    by slot number."""
    found: dict[int, SlotCpu] = {}

    async def at(moment_ms: float) -> None:
        delay = moment_ms / 1000 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    for k in range(slots):
        await at(t0_ms + k * slot_ms + guard_ms)
        db_before = total_cpu_ms(await database_pids())
        server_before = tree_cpu_ms(server_pid)
        await at(t0_ms + (k + 1) * slot_ms)
        server_after = tree_cpu_ms(server_pid)
        db_after = total_cpu_ms(await database_pids())
        if server_before is None or server_after is None:
            break
        found[k] = SlotCpu(server_after - server_before, spent_between(db_before, db_after))
    return found
