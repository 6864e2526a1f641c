"""Exact token accounting: our counts equal the processors' grid_thw; budgets parse and solve exactly."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as tvF
from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor, Qwen3VLVideoProcessor

from resadapt_eval.core.budget import Budget, Geometry, parse_budget, solve_frame_count, solve_uniform_scale
from resadapt_eval.core.types import UserError

# The real checkpoints' processor settings (Qwen2.5-VL-7B-Instruct; Qwen3-VL-8B-Instruct).
QWEN25 = dict(patch=14, image=(3136, 12845056), video=(128 * 28 * 28, 768 * 28 * 28))
QWEN3 = dict(patch=16, image=(65536, 16777216), video=(4096, 25165824))


def processors(family: str, cap: bool):
    spec = QWEN25 if family == "qwen2_5_vl" else QWEN3
    vp_cls = Qwen2VLVideoProcessor if family == "qwen2_5_vl" else Qwen3VLVideoProcessor
    common = dict(patch_size=spec["patch"], merge_size=2, temporal_patch_size=2)
    ip = Qwen2VLImageProcessor(size={"shortest_edge": spec["image"][0], "longest_edge": spec["image"][1]}, **common)
    vp = vp_cls(size={"shortest_edge": spec["video"][0], "longest_edge": spec["video"][1]},
                cap_pixels_per_frame=cap, **common)

    class P:  # the two attributes Geometry.from_processor reads
        image_processor, video_processor = ip, vp
    return P, Geometry.from_processor(P)


def grid_tokens(grids: torch.Tensor) -> int:
    return int(grids.prod(-1).sum()) // 4


@pytest.mark.parametrize("family,cap", [("qwen2_5_vl", False), ("qwen2_5_vl", True), ("qwen3_vl", False)])
def test_token_counts_match_processor(family, cap):
    """60 random (height, width, scale, frames): vanilla and scaled counts equal the processor's."""
    P, g = processors(family, cap)
    assert g.factor == (28 if family == "qwen2_5_vl" else 32)
    rng = random.Random(1234 + cap)
    for case in range(60):
        h, w = rng.randint(30, 1100), rng.randint(30, 1100)
        n = rng.randint(2 if family == "qwen3_vl" else 1, 12)
        scale = rng.choice([rng.uniform(0.05, 1.0), 1.0, 0.5, 0.25])
        frames = np.random.default_rng(case).integers(0, 255, (n, h, w, 3), dtype=np.uint8)
        # vanilla video: the processor resizes the native frames itself
        out = P.video_processor(videos=[frames], do_sample_frames=False, return_tensors="pt")
        assert grid_tokens(out["video_grid_thw"]) == g.vanilla_tokens("video", h, w, n), (h, w, n)
        # vanilla image
        img = P.image_processor(images=[frames[0]], return_tensors="pt")
        assert grid_tokens(img["image_grid_thw"]) == g.vanilla_tokens("image", h, w), (h, w)
        # a scaled chunk, pre-resized by the operator, passes through the processor unchanged
        vh, vw = g.vanilla_size("video", h, w, n)
        sh, sw = g.scaled_size("video", (vh, vw), scale)
        assert sh % g.factor == 0 and sw % g.factor == 0
        chunk = tvF.resize(torch.from_numpy(frames[:2]).permute(0, 3, 1, 2), [sh, sw],
                           interpolation=tvF.InterpolationMode.BICUBIC, antialias=True)
        window = {"shortest_edge": g.factor ** 2, "longest_edge": sh * sw * 2}
        out = P.video_processor(videos=[chunk], do_sample_frames=False, size=window, return_tensors="pt")
        assert grid_tokens(out["video_grid_thw"]) == g.n_chunks(len(chunk)) * g.tokens_per_chunk(sh, sw)
        assert tuple(out["video_grid_thw"][0, 1:].tolist()) == (sh // g.patch_size, sw // g.patch_size)


def test_parse_budget():
    assert parse_budget("0.25") == Budget(fraction=0.25)
    assert parse_budget("25%") == Budget(fraction=0.25)
    assert parse_budget("tokens=4096") == Budget(tokens=4096)
    assert parse_budget("1") == Budget(fraction=1.0)
    assert parse_budget("0.0625", ref_frames=8) == Budget(fraction=0.0625, ref_frames=8)
    assert parse_budget("0.0625", ref_frames=8).label == "0.0625r8"
    assert parse_budget("tokens=64").label == "t64"
    for bad in ["0", "-0.1", "1.01", "150%", "abc", "tokens=0", ""]:
        with pytest.raises(UserError):
            parse_budget(bad)


def test_budget_limits():
    assert Budget(fraction=0.25).limit(396) == 99
    assert Budget(fraction=0.1).limit(100) == 10  # floor without float drift
    assert Budget(tokens=50).limit(396) == 50
    assert Budget(fraction=1.0, ref_frames=8).limit(1600, reference_tokens=100) == 100


def test_uniform_scale_is_largest_that_fits():
    _, g = processors("qwen2_5_vl", False)
    rng = random.Random(7)
    for _ in range(40):
        vh, vw = g.vanilla_size("video", rng.randint(100, 1000), rng.randint(100, 1000), 8)
        per_chunk = g.tokens_per_chunk(vh, vw)
        b = rng.choice([0.1, 0.25, 0.5, 1.0])
        limit = math.floor(b * 4 * per_chunk)
        sol = solve_uniform_scale(g, "video", (vh, vw), 4, limit)
        if not sol.feasible:
            assert 4 * g.floor_tokens > limit
            continue
        assert sol.tokens <= limit and sol.tokens == 4 * g.tokens_per_chunk(sol.height, sol.width)
        # no larger scale on a fine grid fits
        for s in np.linspace(sol.scale + 1e-4, 1.0, 200):
            h, w = g.scaled_size("video", (vh, vw), float(s))
            assert 4 * g.tokens_per_chunk(h, w) > limit or g.tokens_per_chunk(h, w) == sol.tokens // 4
    # budget 1.0 is exactly vanilla
    assert solve_uniform_scale(g, "video", (364, 644), 4, 4 * 299).tokens == 4 * 299


def test_solve_frame_count():
    assert solve_frame_count(100, 32, 2, 1600) == (32, True)
    assert solve_frame_count(100, 32, 2, 400) == (8, True)
    assert solve_frame_count(100, 32, 2, 399) == (6, True)
    assert solve_frame_count(100, 32, 2, 99) == (2, False)
    assert solve_frame_count(100, 7, 2, 10_000) == (7, True)
