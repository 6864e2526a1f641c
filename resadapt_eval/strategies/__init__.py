"""Strategies: turn (sample, frames, geometry, budget) into a plan. One module per family."""

from resadapt_eval.core.registry import STRATEGY_GROUP, Registry

STRATEGIES = Registry("strategy", __name__, STRATEGY_GROUP)
register = STRATEGIES.register
