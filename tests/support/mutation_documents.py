"""GraphQL documents shared by the bad-input and the authorization test matrices: any ledger mutation
with its input as ``$input``, and the state a refused mutation must leave unchanged."""

from __future__ import annotations

REFUSAL = """
fragment Refusal on Error {
  message
  ... on ValidationError { field }
  ... on InsufficientCredits { available required }
  ... on HoldNotActive { status }
  ... on IdempotencyConflict { idempotencyKey }
}
"""

SELECTIONS = {
    "spendCredits": "... on SpendCreditsSuccess { usageEvent { credits activity agentId } balance { total held } }",
    "grantCredits": "... on GrantCreditsSuccess { lot { kind amount expiresAt } balance { total held } }",
    "holdCredits": "... on HoldCreditsSuccess { hold { status amount } balance { total held } }",
    "captureHold": "... on CaptureHoldSuccess { hold { status captured } balance { total held } }",
    "releaseHold": "... on ReleaseHoldSuccess { hold { status } balance { total held } }",
    "extendHold": "... on ExtendHoldSuccess { hold { status amount expiresAt } balance { total held } }",
    "increaseHold": "... on IncreaseHoldSuccess { hold { status amount quantity } balance { total held } }",
}
INPUT_TYPES = {
    "spendCredits": "SpendCreditsInput",
    "grantCredits": "GrantCreditsInput",
    "holdCredits": "HoldCreditsInput",
    "captureHold": "CaptureHoldInput",
    "releaseHold": "ReleaseHoldInput",
    "extendHold": "ExtendHoldInput",
    "increaseHold": "IncreaseHoldInput",
}


def document(mutation: str) -> str:
    """The mutation with its input as the variable ``$input``."""
    return (
        f"mutation Run($input: {INPUT_TYPES[mutation]}!) {{\n"
        f"  {mutation}(input: $input) {{ __typename {SELECTIONS[mutation]} ...Refusal }}\n"
        "}\n" + REFUSAL
    )


def batch_document() -> str:
    """``spendCreditsBatch`` with its input as ``$input``, each result selected as ``spendCredits``'s."""
    return (
        "mutation Run($input: SpendCreditsBatchInput!) {\n"
        "  spendCreditsBatch(input: $input) { __typename ... on SpendCreditsBatchSuccess { results {"
        f" __typename {SELECTIONS['spendCredits']} ...Refusal }} }} ...Refusal }}\n"
        "}\n" + REFUSAL
    )


STATE = """
query State {
  me {
    credit {
      balance { total free paid held available }
      ledger(first: 100) { edges { node { type delta } } }
      lots(first: 100) { edges { node { remaining status } } }
      holds(first: 100) { edges { node { status captured amount quantity expiresAt } } }
      usage(first: 100) { edges { node { id } } }
    }
  }
}
"""
