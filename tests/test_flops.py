"""The analytic FLOPs (backbones/flops.py) against torch's FlopCounterMode, stage by stage.

Models are built on the meta device from their configs: the tiny test configurations, the bundled
reference backbone, and the full-size Qwen2.5-VL-7B / Qwen3-VL-8B configurations (no weights)."""

from __future__ import annotations

import pytest

from resadapt_eval.analysis import flop_check as fc
from resadapt_eval.backbones.flops import llm_decode_flops, llm_prefill_flops, vision_stage_flops

STAGES = {"vision encode", "merger", "LLM prefill", "decode"}


def _assert_agree(rows):
    assert {r.stage for r in rows} == STAGES
    for r in rows:
        assert r.torch > 0, r
        assert abs(r.rel_error) <= 0.02, f"{r.stage}: formula {r.formula:.4g} vs torch {r.torch:.4g}"


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_tiny_configs_agree_per_stage(family):
    # an edge-clipped window grid, a small chunk, and a two-frame grid (one attention segment per frame)
    grids = [(1, 20, 30), (1, 6, 10), (2, 12, 18)] if family == "qwen2_5_vl" else [(1, 16, 24), (1, 6, 10), (2, 8, 12)]
    _assert_agree(fc.check_backbone(fc.TINY[family], grids, n_text=25, steps=3))


def test_reference_backbone_agrees_on_a_vanilla_probe_clip():
    # probe-videoqa's vanilla input: 8 frames at 112 px, four chunks of 14 x 14 patches
    _assert_agree(fc.check_backbone(fc.reference_config(), [(1, 14, 14)] * 4))


@pytest.mark.slow
@pytest.mark.parametrize("spec", [fc.QWEN25_VL_7B, fc.QWEN3_VL_8B], ids=["qwen2.5-vl-7b", "qwen3-vl-8b"])
def test_full_size_configs_agree_on_meta(spec):
    # a 3-chunk video at about 448 x 868 px per frame
    side = 14 if spec["family"] == "qwen2_5_vl" else 16
    grids = [(1, 448 // side + (448 // side) % 2, 868 // side + (868 // side) % 2)] * 2 + [(1, 20, 36)]
    _assert_agree(fc.check_backbone(spec, grids, n_text=60, steps=1))


def test_planner_head_agrees():
    r = fc.check_planner(n_chunks=12)
    assert r.torch > 0 and abs(r.rel_error) <= 0.02


def test_qwen3_vision_counts_two_mlp_matrices_and_deepstack_mergers():
    cfg = fc.build_config(fc.QWEN3_VL_8B).vision_config
    grid = [(1, 32, 32)]
    v = vision_stage_flops(cfg, grid)
    n, d, hid = 32 * 32, cfg.hidden_size, cfg.hidden_size * 4
    assert v.merger == pytest.approx(4 * 2 * (n / 4) * (hid * hid + hid * cfg.out_hidden_size))  # 1 + 3 deepstack
    mlp = cfg.depth * 2 * n * 2 * d * cfg.intermediate_size
    assert v.encode > mlp and v.encode < mlp * 3 / 2 * 1.2  # two matrices, not three


def test_decode_grows_with_the_cache_and_pruned_layers_cost_less():
    cfg = fc.build_config(fc.QWEN25_VL_7B).text_config
    layers = cfg.num_hidden_layers
    one = llm_decode_flops(cfg, [1000.0] * layers, 1)
    assert llm_decode_flops(cfg, [1000.0] * layers, 2) > 2 * one
    assert llm_decode_flops(cfg, [1000.0] * 2 + [300.0] * (layers - 2), 1) < one
    assert llm_decode_flops(cfg, [1000.0] * layers, 0) == 0
    assert llm_prefill_flops(cfg, 1000.0, [1000.0] * 2 + [300.0] * (layers - 2)) < llm_prefill_flops(cfg, 1000.0)
