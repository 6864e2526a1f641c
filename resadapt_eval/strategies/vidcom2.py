"""VidCom2 (Liu et al., EMNLP 2025; github.com/xuyang-liu16/VidCom2, `qwen` branch): frame-adaptive compression.

Frames (chunks) that differ more from the whole video get a larger share of the budget, and each
frame keeps the tokens least similar to the video's and its own mean token (`backbones/reduction.py`).
The closest training-free rival to the ResAdapt allocator; text-agnostic, no attention needed.
"""

from __future__ import annotations

from resadapt_eval.core.strategy import Context, check_range, check_share, reduced_plan
from resadapt_eval.core.types import Plan
from resadapt_eval.strategies import register


@register("vidcom2")
class VidCom2:
    """Options: `temperature` of the frame softmax (default 0.01, the authors'), `frame_share` (default 1)."""

    name = "vidcom2"

    def __init__(self, temperature: float = 0.01, frame_share: float = 1.0):
        self.temperature = check_range("temperature", temperature, 1e-6, 1e6)
        self.frame_share = check_share("frame_share", frame_share)

    def plan(self, ctx: Context) -> Plan:
        return reduced_plan(ctx, "vidcom2", frame_share=self.frame_share, params={"temperature": self.temperature})
