"""Tables and the ledger operations that guard them."""
