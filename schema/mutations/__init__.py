"""Inputs, success payloads and result unions of the mutations, one module per mutation family."""
