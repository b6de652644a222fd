"""Instants written as text for people and platforms: ISO-8601 in UTC with ``Z``, one way everywhere.

Event payloads (``models.event_data``, the forecast's ``balance.runs_out_soon``), error messages that name an
instant (a token's expiry, the accepted range of a date) all write it with ``iso_z``. (GraphQL's ``DateTime``
fields are written by strawberry's scalar, and the webhook envelope's ``timestamp`` by ``isoformat``, as the
README documents: ``+00:00``.)
"""

from __future__ import annotations

from datetime import UTC, datetime


def iso_z(moment: datetime) -> str:
    """``2026-01-15T12:00:00Z``; with its microseconds when it has any (``2026-01-16T22:17:08.571428Z``). An
    aware instant in another zone is converted to UTC first."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
