"""Where a plan's visual tokens went in time: the share inside a ground-truth window.

For a temporal-grounding benchmark (Charades-STA) the window the answer names is known per sample,
so the share of the plan's visual tokens on frames inside it is the real-benchmark analogue of the
probes' evidence share: did the budget go where the answer is?
"""

from __future__ import annotations

from resadapt_eval.core.types import Frames, Plan


def window_token_share(plan: Plan, frames: Frames, window: tuple[float, float]) -> float:
    """The share of the plan's visual tokens on frames whose timestamp lies in `window` (seconds,
    inclusive). A chunk's tokens are (h/f)(w/f), so its share is its pixel area's; they are split
    evenly over the chunk's frames (a chunk straddling the window's edge counts in part). A token
    reduction keeps tokens from every chunk alike, so the share is its expectation there."""
    start, end = sorted(float(t) for t in window)
    inside = total = 0.0
    for chunk in plan.chunks:
        area = float(chunk.height * chunk.width)
        times = [frames.timestamps[i] for i in chunk.frames]
        total += area
        inside += area * sum(start <= t <= end for t in times) / max(1, len(times))
    return inside / total if total > 0 else 0.0
