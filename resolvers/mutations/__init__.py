"""One module per mutation: authorize, validate, call the ledger, publish after commit, shape the result."""
