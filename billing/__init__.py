"""Billing: the domain services that take money and turn it into credit.

Payments (a top-up is written PENDING, charged outside any database transaction, then completed under the
account's lock), hosted checkout pages, subscriptions (card on file and processor-billed), the auto top-up
charge, the reconcile and renewal jobs' work, processor events, and signed invoice links.

The API (``resolvers``), the jobs, the auto top-up worker and the webhook endpoint call down into it. It
builds on ``models`` (the tables and the operations that guard them) and ``gateway`` (the processors), and
on the shell's wiring (``creditline.services``, settings, the clock, the event bus); never on ``schema`` or
``resolvers``. Its functions return rows or small outcome objects and refuse with the typed errors of
``billing.errors``, which the resolvers map to GraphQL results.
"""
