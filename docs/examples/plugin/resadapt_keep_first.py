"""An example strategy in its own package: the earliest chunks at full resolution, as many as fit.

Installed with this folder's setup.cfg, it appears in `resadapt-eval list strategies` as
`keep-first` (entry point group `resadapt_eval.strategies`); nothing in resadapt-eval changes.
"""

from __future__ import annotations

from dataclasses import replace

from resadapt_eval.core.budget import solve_frame_count
from resadapt_eval.core.strategy import Context, even_plan, vanilla_plan
from resadapt_eval.core.types import Plan


class KeepFirst:
    """The first chunks of the video at vanilla resolution while they fit the budget.

    A strategy is built as `KeepFirst(**options)` from `--strategy-option KEY=VALUE`; this one
    takes `min_chunks`, the chunks it keeps even when they exceed the budget (marked infeasible).
    """

    name = "keep-first"

    def __init__(self, min_chunks: int = 1):
        self.min_chunks = int(min_chunks)

    def plan(self, ctx: Context) -> Plan:
        if ctx.frames.kind == "image":
            return vanilla_plan(ctx)
        g = ctx.geometry
        per_chunk = g.tokens_per_chunk(*ctx.vanilla_hw)
        n, _ = solve_frame_count(per_chunk, ctx.frames.count, g.temporal_patch_size, ctx.limit)
        n = max(n, min(ctx.frames.count, self.min_chunks * g.temporal_patch_size))
        # Not an even sample of the video: chunk times come from the frames' own timestamps.
        plan = even_plan(ctx, list(range(n)), ctx.vanilla_hw, evenly_spaced=False)
        return plan if plan.feasible else replace(plan, note="the kept chunks exceed the budget")
