"""Tests of the ledger and the other models (models/), called directly."""
