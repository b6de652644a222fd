"""The ``Credits`` scalar: exact amounts as decimal strings, integer micro-credits inside."""

from __future__ import annotations

from typing import NewType

import strawberry
from strawberry.types.scalar import ScalarDefinition

from models.credits import format_credits, parse_credits

Credits = NewType("Credits", int)
"""Micro-credits (1 credit = 1 000 000)."""

SCALAR_MAP: dict[object, ScalarDefinition] = {
    Credits: strawberry.scalar(
        name="Credits",
        description=(
            "An exact amount of credit with up to 6 decimal places, serialized as a decimal string without "
            'trailing zeros ("12.5", "0.002", "100"). Input may be such a string or an integer; floats, '
            "exponents and more than 6 decimals are refused."
        ),
        serialize=format_credits,
        parse_value=parse_credits,
    )
}
