"""schema.graphql is the contract clients read: it must match the code."""

from pathlib import Path

from creditline.graphql import SCHEMA_FILE, schema_sdl


def test_checked_in_schema_is_current() -> None:
    assert Path(SCHEMA_FILE).read_text() == schema_sdl(), "schema.graphql is stale: run `make schema`"


def test_contract_names_are_present() -> None:
    sdl = schema_sdl()
    for name in (
        "scalar Credits",
        "type CreditBalance {",
        "spendCredits(input: SpendCreditsInput!): SpendCreditsResult!",
        "grantCredits(input: GrantCreditsInput!): GrantCreditsResult!",
        "union SpendCreditsResult = SpendCreditsSuccess | InsufficientCredits | IdempotencyConflict"
        " | ValidationError | Forbidden | NotFound",
        "type CreditAccount implements Node {",
        "lots(first: Int = null, after: String = null): CreditLotConnection!",
    ):
        assert name in sdl, name
