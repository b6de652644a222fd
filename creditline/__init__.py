"""Creditline application shell: ASGI app, settings, CLI, event bus and background jobs."""
