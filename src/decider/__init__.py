"""Decider: one personalization decision per request, consent first, and why."""

__version__ = "0.1.0"
