"""Map an allocator's relative per-chunk scales onto a plan that meets the token budget exactly.

The allocator proposes *relative* resolutions; the budget decides the absolute level. The largest
common factor on the scales that fits is found by bisection (token counts are step functions of
the scale), then the tokens left over are water-filled: chunks are raised one size step at a time,
the most important first, never past a chunk the allocator ranked higher. So every strategy lands
on the same budgets, and the learned ordering survives the projection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from resadapt_eval.core.budget import Geometry
from resadapt_eval.core.types import MediaKind


@dataclass(frozen=True)
class Projection:
    scales: tuple[float, ...]               # per-side scale of each chunk after projection
    sizes: tuple[tuple[int, int], ...]      # (h, w) of each chunk
    tokens: int
    factor: float                           # the common factor applied to the relative scales
    feasible: bool                          # False when even the smallest chunks exceed the limit


def project_to_budget(geometry: Geometry, kind: MediaKind, vanilla_hw: tuple[int, int], relative: Sequence[float],
                      limit: int, max_scale: float = 1.0, iterations: int = 48) -> Projection:
    rel = [max(float(r), 1e-6) for r in relative]
    top = max(rel)
    rel = [r / top for r in rel]

    def size(s: float) -> tuple[int, int]:
        return geometry.scaled_size(kind, vanilla_hw, min(s, max_scale))

    def cost(sizes) -> int:
        return sum(geometry.tokens_per_chunk(h, w) for h, w in sizes)

    def sizes_at(c: float):
        return [size(c * r) for r in rel]

    hi = max_scale / min(rel)
    if cost(sizes_at(hi)) <= limit:
        c = hi
    else:
        lo, c = 0.0, 0.0
        for _ in range(iterations):
            mid = (lo + hi) / 2
            if cost(sizes_at(mid)) <= limit:
                lo = c = mid
            else:
                hi = mid
    scales = [min(c * r, max_scale) for r in rel]
    sizes = [size(s) for s in scales]
    spare = limit - cost(sizes)
    order = sorted(range(len(rel)), key=lambda k: (-rel[k], k))
    step = 1.0 / max(vanilla_hw)
    changed = spare > 0
    while changed:
        changed = False
        for k in order:
            here = geometry.tokens_per_chunk(*sizes[k])
            s = scales[k]
            while s < max_scale:  # the next scale at which this chunk's size changes
                s = min(max_scale, s + step)
                if size(s) != sizes[k]:
                    break
            new = size(s)
            extra = geometry.tokens_per_chunk(*new) - here
            if new == sizes[k] or extra > spare:
                continue
            ceiling = min((geometry.tokens_per_chunk(*sizes[j]) for j in order if rel[j] > rel[k]), default=None)
            if ceiling is not None and here + extra > ceiling:
                continue
            scales[k], sizes[k], spare, changed = s, new, spare - extra, True
    tokens = cost(sizes)
    return Projection(tuple(scales), tuple(sizes), tokens, c, tokens <= limit)
