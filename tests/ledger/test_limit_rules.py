"""Window edges of spend limits, in several time zones."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from models.limit_rules import Period, period, zone
from models.tables import LimitWindow


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _ts(text: str) -> int:
    return int(_at(text).timestamp())


@pytest.mark.parametrize(
    ("tz", "now", "start", "ends"),
    [
        ("UTC", "2026-12-01T23:59:59+00:00", "2026-12-01T00:00:00+00:00", "2026-12-02T00:00:00+00:00"),
        ("UTC", "2026-12-02T00:00:00+00:00", "2026-12-02T00:00:00+00:00", "2026-12-03T00:00:00+00:00"),
        ("Asia/Kolkata", "2026-12-01T18:29:59+00:00", "2026-11-30T18:30:00+00:00", "2026-12-01T18:30:00+00:00"),
        ("Asia/Kolkata", "2026-12-01T18:30:00+00:00", "2026-12-01T18:30:00+00:00", "2026-12-02T18:30:00+00:00"),
        ("Pacific/Kiritimati", "2026-12-01T09:59:59+00:00", "2026-11-30T10:00:00+00:00", "2026-12-01T10:00:00+00:00"),
        ("America/New_York", "2026-03-08T12:00:00-04:00", "2026-03-08T00:00:00-05:00", "2026-03-09T00:00:00-04:00"),
        ("America/New_York", "2026-11-01T23:30:00-05:00", "2026-11-01T00:00:00-04:00", "2026-11-02T00:00:00-05:00"),
    ],
)
def test_a_day_runs_from_local_midnight_to_the_next_across_offsets_and_daylight_saving(
    tz: str, now: str, start: str, ends: str
) -> None:
    assert period(LimitWindow.DAY, 1, tz, _at(now)) == Period(_ts(start), _ts(start), _at(ends))


def test_a_week_starts_on_monday_and_a_month_on_the_first_in_the_limits_zone() -> None:
    # 2026-12-06 is a Sunday; in Tokyo, 2026-12-06T15:00Z is already Monday the 7th.
    assert period(LimitWindow.WEEK, 1, "UTC", _at("2026-12-06T15:00:00+00:00")).bucket == _ts("2026-11-30T00:00:00Z")
    tokyo = period(LimitWindow.WEEK, 1, "Asia/Tokyo", _at("2026-12-06T15:00:00+00:00"))
    assert tokyo.bucket == _ts("2026-12-07T00:00:00+09:00")
    assert tokyo.resets_at == _at("2026-12-14T00:00:00+09:00")
    month = period(LimitWindow.MONTH, 1, "America/Los_Angeles", _at("2027-01-01T07:59:59+00:00"))
    assert month.bucket == _ts("2026-12-01T00:00:00-08:00")
    assert month.resets_at == _at("2027-01-01T00:00:00-08:00")
    february = period(LimitWindow.MONTH, 1, "UTC", _at("2028-02-29T12:00:00+00:00"))
    assert february.resets_at == _at("2028-03-01T00:00:00+00:00")


def test_rolling_windows_count_sixty_buckets_of_a_sixtieth_of_their_length_and_total_never_resets() -> None:
    now = _at("2026-12-01T10:42:10+00:00")
    # 3 hours: buckets of 3 minutes, aligned to Unix time; the current one (10:42-10:45) and the 59 before it.
    hours = period(LimitWindow.ROLLING_HOURS, 3, "UTC", now)
    assert hours == Period(_ts("2026-12-01T10:42:00Z"), _ts("2026-12-01T07:45:00Z"), _at("2026-12-01T10:45:00Z"))
    one_hour = period(LimitWindow.ROLLING_HOURS, 1, "UTC", now)
    assert one_hour == Period(_ts("2026-12-01T10:42:00Z"), _ts("2026-12-01T09:43:00Z"), _at("2026-12-01T10:43:00Z"))
    # 5 minutes: buckets of 5 seconds.
    minutes = period(LimitWindow.ROLLING_MINUTES, 5, "UTC", now)
    assert minutes == Period(_ts("2026-12-01T10:42:10Z"), _ts("2026-12-01T10:37:15Z"), _at("2026-12-01T10:42:15Z"))
    assert period(LimitWindow.ROLLING_MINUTES, 5, "UTC", _at("2026-12-01T10:42:14.9+00:00")) == minutes
    assert period(LimitWindow.TOTAL, 1, "UTC", now) == Period(0, 0, None)


def test_a_one_minute_window_slides_by_the_second() -> None:
    """12:00:59 still counts at 12:01:00 and at 12:01:58, and stops counting at 12:01:59."""
    spent_at = period(LimitWindow.ROLLING_MINUTES, 1, "UTC", _at("2026-12-01T12:00:59.5+00:00")).bucket
    assert spent_at == _ts("2026-12-01T12:00:59Z")
    for now, counts in [("12:01:00", True), ("12:01:58.999", True), ("12:01:59", False)]:
        p = period(LimitWindow.ROLLING_MINUTES, 1, "UTC", _at(f"2026-12-01T{now}+00:00"))
        assert (p.since <= spent_at <= p.bucket) is counts, now
    edge = period(LimitWindow.ROLLING_MINUTES, 1, "UTC", _at("2026-12-01T12:01:00+00:00"))
    assert edge == Period(_ts("2026-12-01T12:01:00Z"), _ts("2026-12-01T12:00:01Z"), _at("2026-12-01T12:01:01Z"))


@pytest.mark.parametrize(
    "name",
    [
        "Mars/Olympus",
        "",
        "../etc/passwd",
        "/etc/localtime",
        "UTC" * 30,
        # Files of the host's zoneinfo that are no IANA zone: the host's own setting and its copies.
        "localtime",
        "posixrules",
        "Factory",
        "posix/Europe/Paris",
        "right/UTC",
    ],
)
def test_an_unknown_zone_is_none(name: str) -> None:
    assert zone(name) is None


def test_an_iana_zone_is_a_zone() -> None:
    assert zone("Europe/Paris") is not None
    assert zone("Etc/UTC") is not None


def test_a_calendar_limit_whose_stored_zone_is_unknown_counts_in_utc() -> None:
    now = _at("2026-12-01T10:42:10+00:00")
    for window in (LimitWindow.DAY, LimitWindow.WEEK, LimitWindow.MONTH):
        assert period(window, 1, "Mars/Olympus", now) == period(window, 1, "UTC", now)
