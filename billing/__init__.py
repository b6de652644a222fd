"""Domain services: payments, checkout, subscriptions, auto top-up, reconcile, webhook events, invoices."""
