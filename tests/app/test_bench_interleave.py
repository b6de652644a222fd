"""The spend benchmark's interleaved rounds (bench/interleave.py): the order of each round, and the ratios and
spreads it reports from the rates of the rounds."""

from __future__ import annotations

from bench.interleave import Spread, rate_spread, ratio_spread, rotated, round_ratios, spread
from bench.run import CEILING_SEGMENTS, HTTP_SEGMENTS, round_order


def test_each_segment_takes_each_position_once_over_as_many_rounds() -> None:
    segments = ["a", "b", "c"]
    orders = [rotated(segments, n) for n in range(3)]
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    assert rotated(segments, 4) == ["b", "c", "a"]
    assert rotated([], 2) == []


def test_a_round_runs_every_wrk_segment_then_every_raw_sql_one() -> None:
    for n in range(7):
        order = round_order(n)
        assert sorted(order[: len(HTTP_SEGMENTS)]) == sorted(HTTP_SEGMENTS)
        assert sorted(order[len(HTTP_SEGMENTS) :]) == sorted(CEILING_SEGMENTS)
    assert round_order(1)[0] == HTTP_SEGMENTS[1]


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
