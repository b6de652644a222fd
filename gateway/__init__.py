"""Payment processors and their webhooks, behind one interface."""
