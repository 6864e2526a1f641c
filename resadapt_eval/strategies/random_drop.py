"""Random Drop: keep a seeded random floor(b·N) of the merged visual tokens before the LLM."""

from __future__ import annotations

import zlib
from dataclasses import replace

from ..types import Plan, Reduction
from . import register
from .base import Context, vanilla_plan


@register("random-drop")
class RandomDrop:
    """Vanilla input, then exactly `limit` visual tokens kept at random, with their original positions."""

    name = "random-drop"

    def plan(self, ctx: Context) -> Plan:
        keep = max(1, min(ctx.vanilla_tokens, ctx.limit))
        seed = zlib.crc32(f"{ctx.seed}:{ctx.sample.id}".encode())
        plan = vanilla_plan(ctx)
        reduction = Reduction(method="random", keep=keep, layer=0, seed=seed)
        return replace(plan, reduction=reduction, tokens=keep, feasible=keep <= ctx.limit)
