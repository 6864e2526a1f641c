"""DivPrune (Alvar et al., CVPR 2025; github.com/vbdi/divprune): max-min diversity before the LLM.

Over all the sample's merged visual tokens (the authors prune the whole image sequence at once),
greedily keep the token farthest (1 - cosine of the features the LLM would see) from those already
kept, until exactly floor(b·N) remain (`backbones/reduction.py`). Text-agnostic; needs no attention,
so it runs under any attention kernel.
"""

from __future__ import annotations

from resadapt_eval.core.strategy import Context, check_share, reduced_plan
from resadapt_eval.core.types import Plan
from resadapt_eval.strategies import register


@register("divprune")
class DivPrune:
    """Option: `frame_share` (uniform frames first, default 1). The authors' SUBSET_RATIO is the budget."""

    name = "divprune"

    def __init__(self, frame_share: float = 1.0):
        self.frame_share = check_share("frame_share", frame_share)

    def plan(self, ctx: Context) -> Plan:
        return reduced_plan(ctx, "divprune", frame_share=self.frame_share)
