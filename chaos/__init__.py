"""Chaos harness for settleflow: `python -m chaos.run` (see chaos/README.md)."""
