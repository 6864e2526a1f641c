"""Measurement and demonstration commands built on the layers below (bench, decode bench, demo)."""
