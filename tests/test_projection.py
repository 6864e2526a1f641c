"""Budget projection of relative scales: exact budgets, the learned order kept, nothing left on the table."""

from __future__ import annotations

import numpy as np
import pytest

from resadapt_eval.allocator.projection import project_to_budget
from resadapt_eval.core.budget import Geometry, solve_uniform_scale

G = Geometry(family="qwen2_5_vl", patch_size=14, merge_size=2, temporal_patch_size=2, image_min_pixels=3136,
             image_max_pixels=12845056, video_min_pixels=3136, video_max_pixels=602112)
HW = (364, 644)  # a 640x360 frame at vanilla resolution: 13 x 23 = 299 tokens a chunk


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("share", [0.06, 0.1, 0.25, 0.5])
def test_meets_the_budget_keeps_the_order_and_cannot_grow(seed, share):
    rng = np.random.default_rng(seed)
    rel = rng.uniform(0.05, 1.0, 16)
    limit = int(share * 16 * G.tokens_per_chunk(*HW))
    p = project_to_budget(G, "video", HW, rel, limit)
    assert p.feasible and p.tokens <= limit
    tokens = [G.tokens_per_chunk(h, w) for h, w in p.sizes]
    for i in range(16):
        for j in range(16):
            if rel[i] > rel[j]:
                assert tokens[i] >= tokens[j]  # a chunk ranked higher never gets fewer tokens
    # water-filled: no chunk can take its next size step without breaking the budget or the order
    for k in range(16):
        if p.scales[k] >= 1.0:
            continue
        nxt = next((G.scaled_size("video", HW, s) for s in np.arange(p.scales[k], 1.0001, 1 / 644)
                   if G.scaled_size("video", HW, s) != p.sizes[k]), None)
        if nxt is None:  # already at its largest size
            continue
        extra = G.tokens_per_chunk(*nxt) - tokens[k]
        ceiling = min([tokens[j] for j in range(16) if rel[j] > rel[k]], default=10 ** 9)
        assert p.tokens + extra > limit or tokens[k] + extra > ceiling


def test_equal_scales_reach_at_least_the_uniform_scale_solution():
    for share in (0.1, 0.25, 0.5):
        limit = int(share * 16 * G.tokens_per_chunk(*HW))
        p = project_to_budget(G, "video", HW, [1.0] * 16, limit)
        uniform = solve_uniform_scale(G, "video", HW, 16, limit)
        assert uniform.tokens <= p.tokens <= limit


def test_a_budget_below_the_floor_is_infeasible_and_full_budget_is_vanilla():
    assert not project_to_budget(G, "video", HW, [1.0] * 16, 16 * 4 - 1).feasible
    full = project_to_budget(G, "video", HW, np.linspace(0.1, 1, 16), 16 * G.tokens_per_chunk(*HW))
    assert full.sizes == (HW,) * 16
