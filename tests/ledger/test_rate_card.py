"""The rate card: priced quantities, the rateCard query, and a deployment's own card from a TOML file."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.rate_card import Rate, RateCard
from tests.support.helpers import SPEND, Api, gid


async def test_rate_card_query_and_a_priced_quantity(api: Api) -> None:
    user_id, user_token = await api.user("ada@example.com", bonus=1)
    service = await api.service()
    assert await api.data("{ rateCard { activity unit price } }", token=user_token) == {
        "rateCard": [
            {"activity": "answer", "unit": "answer", "price": "0.002"},
            {"activity": "transcription", "unit": "minute", "price": "0.006"},
            {"activity": "web_search", "unit": "search", "price": "0.01"},
        ]
    }
    variables = {
        "input": {
            "userId": gid("User", user_id),
            "agentId": "scribe",
            "activity": "transcription",
            "quantity": "2.5",
            "idempotencyKey": "minutes",
        }
    }
    data = await api.data(SPEND, variables, service)
    assert data["spendCredits"]["usageEvent"]["credits"] == "0.015"
    unknown = await api.data(
        SPEND, {"input": {**variables["input"], "activity": "painting", "idempotencyKey": "x"}}, service
    )
    assert unknown["spendCredits"] == {
        "__typename": "ValidationError",
        "message": "Activity 'painting' is not on the rate card: give credits instead",
        "field": "activity",
    }


def test_prices_round_up_to_the_micro_credit() -> None:
    card = RateCard((Rate("answer", "answer", 3),))
    assert card.price("answer", 1) == 1  # 0.000001 of an answer at 3 micro-credits each
    assert card.price("answer", 1_000_000) == 3
    assert card.price("missing", 1) is None


def test_a_deployment_reads_its_own_card(tmp_path: Path) -> None:
    path = tmp_path / "rates.toml"
    path.write_text('[answer]\nunit = "answer"\nprice = "0.5"\n\n[image]\nunit = "image"\nprice = 2\n')
    card = RateCard.from_file(path)
    assert card.rates == {"answer": Rate("answer", "answer", 500_000), "image": Rate("image", "image", 2_000_000)}
    path.write_text('[answer]\nunit = "answer"\nprice = 0.5\n')
    with pytest.raises(ValueError, match="Credits must be a decimal string or an integer, got float"):
        RateCard.from_file(path)
    path.write_text("[answer]\nunit = 'answer'\n")
    with pytest.raises(ValueError, match=r"\[answer\] needs a price"):
        RateCard.from_file(path)
