"""FlashVID (Fan et al., ICLR 2026 oral; github.com/Fanziyang-v/FlashVID): the paper's own strongest baseline.

Its vision-side stage before the LLM: segment the video at scene changes, then per frame keep
`alpha` of the frame's quota by attention- and diversity-based selection (ADTS) and fill the rest
with tree-based spatio-temporal merging (TSTM) of the other tokens (`backbones/flashvid.py`).
Exactly floor(b·N) tokens reach the LLM; the authors' in-LLM second stage (FastV-style at layer 20
after a 1.25x expansion) is not run (docs/strategies-baselines.md).
"""

from __future__ import annotations

from resadapt_eval.core.strategy import Context, check_range, check_share, reduced_plan
from resadapt_eval.core.types import Plan, UserError
from resadapt_eval.strategies import register


@register("flashvid")
class FlashVID:
    """Options (authors' defaults): `alpha` 0.7 (ADTS share), `temporal_threshold` 0.8, `segment_threshold` 0.9,
    `min_segments` 8; `frame_share` (uniform frames first, default 1)."""

    name = "flashvid"

    def __init__(self, alpha: float = 0.7, temporal_threshold: float = 0.8, segment_threshold: float = 0.9,
                 min_segments: int = 8, frame_share: float = 1.0):
        if not isinstance(min_segments, int) or isinstance(min_segments, bool) or min_segments < 1:
            raise UserError(f"strategy option min_segments must be an integer >= 1, got {min_segments!r}")
        self.params = {"alpha": check_range("alpha", alpha, 0.0, 1.0),
                       "temporal_threshold": check_range("temporal_threshold", temporal_threshold, -1.0, 1.0),
                       "segment_threshold": check_range("segment_threshold", segment_threshold, -1.0, 1.0),
                       "min_segments": min_segments}
        self.frame_share = check_share("frame_share", frame_share)

    def plan(self, ctx: Context) -> Plan:
        return reduced_plan(ctx, "flashvid", frame_share=self.frame_share, params=self.params, seed=ctx.seed)
