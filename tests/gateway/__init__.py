"""Tests of the payment processors (gateway/) through the real Stripe SDK, against the local stand-in."""
