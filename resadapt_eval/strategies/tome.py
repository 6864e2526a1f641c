"""Pre-LLM ToMe, as ported to video models (Bolya et al. 2022): per chunk, rounds of bipartite soft
matching fold the most similar merged visual tokens together (size-weighted means) until the
chunk's share of the budget remains.

Each round merges at most `round_share` (default 0.2) of the current tokens, well below ToMe's
half, so that similarity rather than position decides which tokens survive. The matching metric
is the vision tower's keys averaged over heads (`metric=keys`, default, as ToMe) or the merged
features (`metric=features`). A merged token takes the M-RoPE position of its destination (B-set)
token; there is no proportional attention (`backbones/reduction.py`).
"""

from __future__ import annotations

from resadapt_eval.core.strategy import Context, check_choice, check_range, check_share, reduced_plan
from resadapt_eval.core.types import Plan
from resadapt_eval.strategies import register


@register("tome")
class ToMe:
    """Options: `metric` keys|features (default keys), `round_share` in (0, 0.5] (default 0.2),
    `frame_share` (uniform frames first, default 1)."""

    name = "tome"

    def __init__(self, metric: str = "keys", round_share: float = 0.2, frame_share: float = 1.0):
        self.metric = check_choice("metric", metric, ("keys", "features"))
        self.round_share = check_range("round_share", round_share, 1e-6, 0.5)
        self.frame_share = check_share("frame_share", frame_share)

    def plan(self, ctx: Context) -> Plan:
        return reduced_plan(ctx, "tome", frame_share=self.frame_share,
                            params={"metric": self.metric, "round_share": self.round_share})
