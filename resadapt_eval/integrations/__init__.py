"""Bridges to other harnesses (lmms-eval's model registry)."""
