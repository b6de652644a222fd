"""The spend benchmark's interleaved rounds (bench/interleave.py, bench/slots.lua): which variant each time slot
belongs to, how slots.lua's counts are read, and the ratios and spreads reported from them."""

from __future__ import annotations

import os

from bench.cpu import SlotCpu, cpu_ms, spent_between
from bench.http_run import parse_slots
from bench.interleave import (
    Spread,
    rate_spread,
    ratio_spread,
    rotated,
    round_ratios,
    slot_cpu,
    slot_rates,
    slot_variant,
    spread,
)


def test_each_segment_takes_each_position_once_over_as_many_rounds() -> None:
    segments = ["a", "b", "c"]
    orders = [rotated(segments, n) for n in range(3)]
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    assert rotated(segments, 4) == ["b", "c", "a"]
    assert rotated([], 2) == []


def test_every_variant_takes_every_position_of_a_cycle_in_turn() -> None:
    slots = [slot_variant(k, 3, 0) for k in range(9)]
    assert slots == [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (1, 0), (2, 2), (2, 0), (2, 1)]
    for cycle in range(3):
        assert sorted(v for c, v in slots if c == cycle) == [0, 1, 2]
    # The next round starts where the cycle after the last one would have.
    assert [slot_variant(k, 3, 1)[1] for k in range(3)] == [1, 2, 0]


def test_slot_counts_are_read_per_cycle_and_variant() -> None:
    out = (
        "Running 12s test @ http://127.0.0.1:1/graphql\n"
        "BENCH requests=900 duration_us=12000000 non2xx=0 not_success=0 connect=0 read=0 write=0 timeout=0"
        " p50_us=1 p90_us=2 p99_us=3\n"
        "BENCH_SLOT cycle=0 variant=1 sent=75\n"
        "BENCH_SLOT cycle=0 variant=2 sent=60\n"
        "BENCH_SLOT cycle=1 variant=1 sent=30\n"
    )
    counted = parse_slots(out)
    assert counted == {(0, 0): 75, (0, 1): 60, (1, 0): 30}
    assert slot_rates(counted, ["plain", "limited"], 2, 0.75) == [
        {"plain": 100.0, "limited": 80.0},
        {"plain": 40.0, "limited": 0.0},  # a slot where nothing was counted shows as such, not as missing
    ]


def test_ratios_are_taken_within_each_round() -> None:
    rates = [
        {"plain": 100.0, "limited": 90.0},
        {"plain": 50.0, "limited": 50.0},  # the machine slowed down: both fell, the ratio did not
        {"plain": 200.0, "limited": 160.0},
    ]
    assert round_ratios(rates, "limited", "plain") == [0.9, 1.0, 0.8]
    assert ratio_spread(rates, "limited", "plain") == Spread(median=0.9, low=0.8, high=1.0, rounds=3)


def test_rounds_missing_a_segment_or_with_a_zero_base_are_left_out() -> None:
    rates = [{"plain": 100.0, "limited": 95.0}, {"plain": 0.0, "limited": 10.0}, {"limited": 10.0}]
    assert round_ratios(rates, "limited", "plain") == [0.95]
    assert ratio_spread([{"plain": 1.0}], "limited", "plain") is None


def test_spread_is_median_min_and_max() -> None:
    assert spread([3.0, 1.0, 2.0, 10.0]) == Spread(median=2.5, low=1.0, high=10.0, rounds=4)
    assert spread([]) is None
    assert rate_spread([{"hot": 120.0}, {"hot": 80.0}, {}], "hot") == Spread(100.0, 80.0, 120.0, 2)


def test_spreads_print_as_median_then_range() -> None:
    assert str(Spread(0.934, 0.871, 1.026, 6)) == "0.93 (0.87-1.03)"
    assert Spread(1234.4, 1100.0, 1300.6, 6).short() == "1,234 (1,100-1,301)"


def test_cpu_per_spend_is_given_to_the_variant_of_each_slot() -> None:
    # Round 1, two variants: slot 0 is cycle 0's variant 1, slot 1 its variant 0, slot 2 cycle 1's variant 0.
    sampled = {0: SlotCpu(30.0, 10.0), 1: SlotCpu(20.0, 5.0), 2: SlotCpu(8.0, 2.0)}
    counted = {(0, 1): 10, (0, 0): 10, (1, 0): 4}
    assert slot_cpu(sampled, counted, ["plain", "limited"], 2, 1) == [
        {"limited": (3.0, 1.0), "plain": (2.0, 0.5)},
        {"plain": (2.0, 0.5)},
    ]
    assert slot_cpu({0: SlotCpu(5.0, 0.0)}, {}, ["plain"], 1, 0) == [{}]  # nothing counted: nothing to divide


def test_cpu_between_samples_counts_processes_that_started_in_between() -> None:
    assert spent_between({1: 100.0, 2: 50.0}, {1: 130.0, 3: 20.0}) == 50.0
    own = cpu_ms(os.getpid())
    assert own is not None
    assert own > 0
    assert cpu_ms(2**22 + 12345) is None
