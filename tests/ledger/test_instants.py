"""The one way instants are written as text outside GraphQL's DateTime (models/instants.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from models.event_data import instant
from models.instants import iso_z


def test_an_instant_is_utc_with_z_and_its_microseconds_only_when_it_has_some() -> None:
    assert iso_z(datetime(2026, 1, 15, 12, 0, tzinfo=UTC)) == "2026-01-15T12:00:00Z"
    assert iso_z(datetime(2026, 1, 16, 22, 17, 8, 571428, tzinfo=UTC)) == "2026-01-16T22:17:08.571428Z"
    paris = timezone(timedelta(hours=1))
    assert iso_z(datetime(2026, 1, 15, 13, 0, tzinfo=paris)) == "2026-01-15T12:00:00Z"


def test_an_instant_read_from_a_row_is_written_the_same_way() -> None:
    assert instant(datetime(2026, 1, 15, 12, 0, tzinfo=UTC)) == "2026-01-15T12:00:00Z"
    assert instant("2026-01-15 12:00:00.250000+00:00") == "2026-01-15T12:00:00.250000Z"  # SQLite's text
    assert instant(None) is None
