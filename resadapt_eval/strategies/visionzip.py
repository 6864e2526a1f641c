"""VisionZip (arXiv 2412.04467) on Qwen-VL: dominant tokens by the attention they receive in the vision
tower's last full-attention block, plus contextual tokens that merge the rest.

Before the LLM, text-agnostic. Ranking is per chunk (`ranking=chunk`, default: each chunk gets its
share of the budget) or over the whole sample (`ranking=global`, as the authors' Qwen port).
`contextual_share` of it (default 0.15, VisionZip's 54+10 of 64) goes to contextual tokens, matched
on the keys averaged over heads; `contextual_merge=add` (default, the original) adds the mean of
the joiners to the target, `mean` averages them (see `backbones/reduction.py`).
"""

from __future__ import annotations

from resadapt_eval.core.types import Plan, UserError
from resadapt_eval.strategies import register
from resadapt_eval.core.strategy import Context, check_choice, check_share, reduced_plan


@register("visionzip")
class VisionZip:
    """Options: `contextual_share` in [0, 1) (default 0.15), `contextual_merge` add|mean (default add),
    `ranking` chunk|global (default chunk), `frame_share` (uniform frames first, default 1)."""

    name = "visionzip"

    def __init__(self, contextual_share: float = 0.15, contextual_merge: str = "add", ranking: str = "chunk",
                 frame_share: float = 1.0):
        if not isinstance(contextual_share, (int, float)) or not 0.0 <= contextual_share < 1.0:
            raise UserError(f"strategy option contextual_share must be in [0, 1), got {contextual_share!r}")
        self.contextual_share = float(contextual_share)
        self.contextual_merge = check_choice("contextual_merge", contextual_merge, ("add", "mean"))
        self.ranking = check_choice("ranking", ranking, ("chunk", "global"))
        self.frame_share = check_share("frame_share", frame_share)

    def plan(self, ctx: Context) -> Plan:
        return reduced_plan(ctx, "visionzip", frame_share=self.frame_share,
                            params={"contextual_share": self.contextual_share,
                                    "contextual_merge": self.contextual_merge, "ranking": self.ranking})
