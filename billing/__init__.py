"""Domain services between the API and the ledger: payments, subscriptions, webhook event handling."""
