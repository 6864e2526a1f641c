"""Input-side baselines: vanilla, one scale for every frame, and fewer frames at full resolution."""

from __future__ import annotations

from resadapt_eval.core.budget import solve_frame_count, solve_uniform_scale
from resadapt_eval.core.types import Plan
from resadapt_eval.strategies import register
from resadapt_eval.core.strategy import Context, even_plan, uniform_subset, vanilla_plan


@register("vanilla")
class Vanilla:
    """The reference input, whatever the budget (its retention is 1 by definition)."""

    name = "vanilla"

    def plan(self, ctx: Context) -> Plan:
        return vanilla_plan(ctx)


@register("uniform-scale")
class UniformScale:
    """Per sample, the largest per-side scale whose exact token count fits (ResAdapt's FixedScale)."""

    name = "uniform-scale"

    def plan(self, ctx: Context) -> Plan:
        n_chunks = 1 if ctx.frames.kind == "image" else ctx.geometry.n_chunks(ctx.frames.count)
        sol = solve_uniform_scale(ctx.geometry, ctx.frames.kind, ctx.vanilla_hw, n_chunks, ctx.limit)
        note = "" if sol.feasible else "smallest chunk size still exceeds the budget"
        return even_plan(ctx, list(range(ctx.frames.count)), (sol.height, sol.width),
                         scales=[sol.scale] * n_chunks, note=note)


@register("uniform-frames")
class UniformFrames:
    """Per sample, the most evenly spaced frames at vanilla resolution that fit the budget."""

    name = "uniform-frames"

    def plan(self, ctx: Context) -> Plan:
        if ctx.frames.kind == "image":
            note = "" if ctx.vanilla_tokens <= ctx.limit else "an image cannot drop frames"
            return vanilla_plan(ctx, note=note)
        per_chunk = ctx.geometry.tokens_per_chunk(*ctx.vanilla_hw)
        n, feasible = solve_frame_count(per_chunk, ctx.frames.count, ctx.geometry.temporal_patch_size, ctx.limit)
        positions = uniform_subset(ctx.frames.count, n)
        note = "" if feasible else "one chunk at vanilla resolution still exceeds the budget"
        return even_plan(ctx, positions, ctx.vanilla_hw, note=note)
