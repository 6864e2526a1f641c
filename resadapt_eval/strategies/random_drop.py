"""Random Drop: keep a seeded random floor(b·N) of the merged visual tokens before the LLM."""

from __future__ import annotations

import zlib

from resadapt_eval.core.types import Plan
from resadapt_eval.strategies import register
from resadapt_eval.core.strategy import Context, reduced_plan


@register("random-drop")
class RandomDrop:
    """Vanilla input, then exactly `limit` visual tokens kept at random, with their original positions."""

    name = "random-drop"

    def plan(self, ctx: Context) -> Plan:
        return reduced_plan(ctx, "random", seed=zlib.crc32(f"{ctx.seed}:{ctx.sample.id}".encode()))
