"""Outbound webhooks: the delivery worker (``worker``) and the sending of one signed request (``sending``).

The statements are the tables' own (``models/webhook_deliveries.py``); this package does the network.
"""
