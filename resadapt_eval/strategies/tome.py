"""ToMe (Bolya et al. 2022) before the LLM: per chunk, bipartite soft matching merges the most similar
merged visual tokens (size-weighted means) until the chunk's share of the budget remains.

A merged token takes the M-RoPE position of its destination (B-set) token (`backbones/reduction.py`).
"""

from __future__ import annotations

from resadapt_eval.core.types import Plan
from resadapt_eval.strategies import register
from resadapt_eval.core.strategy import Context, check_share, reduced_plan


@register("tome")
class ToMe:
    """Option: `frame_share` (uniform frames first, default 1)."""

    name = "tome"

    def __init__(self, frame_share: float = 1.0):
        self.frame_share = check_share("frame_share", frame_share)

    def plan(self, ctx: Context) -> Plan:
        return reduced_plan(ctx, "tome", frame_share=self.frame_share)
