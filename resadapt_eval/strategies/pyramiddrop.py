"""PyramidDrop (Xing et al., CVPR 2025; github.com/Cooperx521/PyramidDrop): staged dropping inside the LLM.

The LLM is split into stages at fractions of its depth; before each stage the visual tokens the
last prompt token attends to least (in that stage's first layer) are dropped, keeping `ratio` of
them. The budget floor(b·N) is the mean number of visual tokens over the layers that prune (as
FastV's is what layers >= K see; `backbones/pyramid.py`); records also carry the tokens entering
the LLM and the mean over all layers, which places it on the frontier's token axis.
"""

from __future__ import annotations

from resadapt_eval.core.strategy import Context, check_range, reduced_plan
from resadapt_eval.core.types import Plan, UserError
from resadapt_eval.strategies import register


@register("pyramiddrop")
class PyramidDrop:
    """Options (authors' defaults): `layers` "0.25,0.5,0.75" (their 8,16,24 of 32 layers, as fractions of depth),
    `ratio` 0.5 (lambda: the share kept at each stage)."""

    name = "pyramiddrop"

    def __init__(self, layers: str = "0.25,0.5,0.75", ratio: float = 0.5):
        try:
            fractions = [float(f) for f in str(layers).split(",")]
        except ValueError:
            fractions = []
        if not fractions or not all(0.0 < f < 1.0 for f in fractions):
            raise UserError(f"strategy option layers must be comma-separated fractions of the depth in (0, 1), "
                            f"got {layers!r}")
        self.layers = ",".join(f"{f:g}" for f in sorted(fractions))
        self.ratio = check_range("ratio", ratio, 1e-3, 1.0)

    def plan(self, ctx: Context) -> Plan:
        return reduced_plan(ctx, "pyramiddrop", params={"layers": self.layers, "ratio": self.ratio})
