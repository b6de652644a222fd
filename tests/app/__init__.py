"""Tests of the application shell (creditline/): command line, start-up, HTTP routes, transport, jobs, events."""
