"""Strategies: turn (sample, frames, geometry, budget) into a plan. One module per family."""

from resadapt_eval.core.registry import Registry

STRATEGIES = Registry("strategy", __name__)
register = STRATEGIES.register
