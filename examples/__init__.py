"""Runnable migrations used by the demo and the docs."""
