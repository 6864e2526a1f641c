"""Count a Qwen-VL backbone's FLOPs per stage with torch's `FlopCounterMode`, to check `flops.py`.

The model is built from its config on the meta device (no weights, no memory), so full-size
configurations cost nothing but the Python overhead of one forward. The index tensors that
transformers computes from `grid_thw` with Python loops (window order, segment lengths, position ids)
are computed on the CPU first and handed to the vision tower through its precomputed-kwargs hooks.
Attention runs in transformers' eager implementation, whose score and value products are plain
matmuls that FlopCounterMode sees (the CPU SDPA kernel has no flop formula in torch).

`python -m resadapt_eval.analysis.flop_check` prints the agreement table for the tiny and the
full-size configurations (docs/flops.md quotes it).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from resadapt_eval.backbones.flops import llm_decode_flops, llm_prefill_flops, vision_stage_flops

# Full-size configurations, from the checkpoints' config.json (Qwen/Qwen2.5-VL-7B-Instruct and
# Qwen/Qwen3-VL-8B-Instruct on the Hugging Face hub; the values are quoted in docs/flops.md).
QWEN25_VL_7B = {
    "family": "qwen2_5_vl",
    "text": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                 num_key_value_heads=4, vocab_size=152064,
                 rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}),
    "vision": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                   patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                   fullatt_block_indexes=[7, 15, 23, 31], in_channels=3),
}
QWEN3_VL_8B = {
    "family": "qwen3_vl",
    "text": dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                 num_key_value_heads=8, head_dim=128, vocab_size=151936,
                 rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": [24, 20, 20],
                                  "mrope_interleaved": True}),
    "vision": dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, out_hidden_size=4096,
                   patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=2304,
                   deepstack_visual_indexes=[8, 16, 24], in_channels=3, hidden_act="gelu_pytorch_tanh"),
}


def _register_cpu_sdpa() -> None:
    """torch has no flop formula for the CPU SDPA kernel (what nn.MultiheadAttention calls on the CPU);
    give it the one torch uses for the other SDPA kernels."""
    from torch.utils import flop_counter as fc

    op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    if op in fc.flop_registry:
        return

    @fc.register_flop_formula(op)
    def _cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return fc.sdpa_flop_count(query_shape, key_shape, value_shape)


@dataclass(frozen=True)
class StageCount:
    stage: str
    formula: float
    torch: float

    @property
    def rel_error(self) -> float:
        return self.formula / self.torch - 1.0 if self.torch else float("inf")


def build_config(spec: dict[str, Any]):
    from transformers import Qwen2_5_VLConfig, Qwen3VLConfig

    cls = Qwen2_5_VLConfig if spec["family"] == "qwen2_5_vl" else Qwen3VLConfig
    config = cls(text_config=dict(spec["text"]), vision_config=dict(spec["vision"]))
    config._attn_implementation = "eager"
    for sub in (config.text_config, config.vision_config):
        sub._attn_implementation = "eager"
    return config


def meta_model(config) -> torch.nn.Module:
    """The model for `config` on the meta device, eager attention."""
    from transformers import AutoModelForImageTextToText

    with torch.device("meta"):
        return AutoModelForImageTextToText.from_config(config, attn_implementation="eager").eval()


def _count(fn) -> tuple[Any, dict[str, float]]:
    with FlopCounterMode(display=False) as counter:
        out = fn()
    by_module = {k: float(sum(v.values())) for k, v in counter.get_flop_counts().items()}
    return out, by_module


def _vision_kwargs(visual: torch.nn.Module, grid: torch.Tensor, family: str) -> dict[str, Any]:
    """The index tensors the vision tower would compute from grid_thw, precomputed on the CPU."""
    from transformers import vision_utils as vu

    cfg = visual.config
    kw: dict[str, Any] = {"position_ids": vu.get_vision_position_ids(grid, cfg.spatial_merge_size).to("meta"),
                          "cu_seqlens": vu.get_vision_cu_seqlens(grid)}
    if family == "qwen2_5_vl":
        index, cu_window = vu.get_vision_window_index(grid, cfg.spatial_merge_size, cfg.window_size, cfg.patch_size)
        kw.update(window_index=index.to("meta"), cu_window_seqlens=cu_window)
    else:
        idx, weights = vu.get_vision_interpolation_indices_and_weights(
            grid, num_grid_per_side=visual.num_grid_per_side, mode=visual.interpolation_mode,
            align_corners=visual.interpolation_align_corners, spatial_merge_size=cfg.spatial_merge_size)
        kw.update(interp_indices=idx.to("meta"), interp_weights=weights.to("meta"))
    return kw


def count_vision(model: torch.nn.Module, family: str, grids: list[tuple[int, int, int]]) -> tuple[float, float]:
    """(encode, merger) FLOPs of one vision forward over chunks with these patch grids, by torch."""
    visual = model.model.visual
    cfg = visual.config
    grid = torch.tensor(grids, dtype=torch.long)
    n = int(grid.prod(-1).sum())
    x = torch.empty(n, cfg.in_channels * cfg.temporal_patch_size * cfg.patch_size ** 2, device="meta")
    _, counts = _count(lambda: visual(x, grid_thw=grid, **_vision_kwargs(visual, grid, family)))
    root = max(counts, key=counts.get)  # the outermost module holds the total
    merger = sum(v for k, v in counts.items() if re.search(r"\.(merger|deepstack_merger_list\.\d+)$", k))
    return counts[root] - merger, merger


def count_llm(model: torch.nn.Module, n_tokens: int, steps: int) -> tuple[float, float]:
    """(prefill, decode) FLOPs by torch: the decoder over `n_tokens` embeddings plus the LM head on
    the last position, then `steps` single-token steps over the growing KV cache."""
    from transformers import DynamicCache

    lm, head = model.model.language_model, model.lm_head
    d = lm.config.hidden_size
    cache = DynamicCache(config=lm.config)
    pos = torch.arange(n_tokens).expand(3, 1, n_tokens).to("meta")

    def prefill():
        h = lm(inputs_embeds=torch.empty(1, n_tokens, d, device="meta"), position_ids=pos, past_key_values=cache,
               use_cache=True).last_hidden_state
        return head(h[:, -1:])

    _, counts = _count(prefill)
    pre = max(counts.values())
    dec = 0.0
    for s in range(steps):
        p = torch.full((3, 1, 1), n_tokens + s).to("meta")
        _, counts = _count(lambda: head(lm(inputs_embeds=torch.empty(1, 1, d, device="meta"), position_ids=p,
                                           past_key_values=cache, use_cache=True).last_hidden_state))
        dec += max(counts.values())
    return pre, dec


def reference_config():
    """The bundled reference backbone's config (eager attention)."""
    from pathlib import Path

    from transformers import AutoConfig

    from resadapt_eval.backbones import ASSETS, BUNDLED_NAME

    config = AutoConfig.from_pretrained(ASSETS / BUNDLED_NAME)
    for c in (config, config.text_config, config.vision_config):
        c._attn_implementation = "eager"
    return config


def check_backbone(spec: dict[str, Any] | Any, grids: list[tuple[int, int, int]], n_text: int = 40,
                   steps: int = 2) -> list[StageCount]:
    """Formula vs torch, per stage, for one configuration (a spec dict above or a transformers config)
    and one input of `grids` chunks plus `n_text` text tokens, decoding `steps` tokens after the first."""
    config = build_config(spec) if isinstance(spec, dict) else spec
    model = meta_model(config)
    enc, merger = count_vision(model, config.model_type, grids)
    vf = vision_stage_flops(config.vision_config, grids)
    merge = config.vision_config.spatial_merge_size ** 2
    n_tokens = n_text + sum(t * h * w // merge for t, h, w in grids)
    pre, dec = count_llm(model, n_tokens, steps)
    layers = [float(n_tokens)] * config.text_config.num_hidden_layers
    return [StageCount("vision encode", vf.encode, enc), StageCount("merger", vf.merger, merger),
            StageCount("LLM prefill", llm_prefill_flops(config.text_config, n_tokens), pre),
            StageCount("decode", llm_decode_flops(config.text_config, layers, steps), dec)]


def check_planner(n_chunks: int = 8, feature_dim: int = 256, text_dim: int = 128) -> StageCount:
    """The allocator head's own forward (its thumbnails' encode is a vision forward, checked above)."""
    from resadapt_eval.allocator.model import AllocatorConfig, AllocatorHead

    _register_cpu_sdpa()
    head = AllocatorHead(AllocatorConfig(feature_dim=feature_dim, text_dim=text_dim)).eval()
    chunks, text = torch.randn(1, n_chunks, feature_dim), torch.randn(1, text_dim)
    mask = torch.ones(1, n_chunks, dtype=torch.bool)
    # With grad enabled the encoder layers take their Python path (the inference fast path is one fused
    # kernel that FlopCounterMode cannot look into); the arithmetic is the same.
    with torch.enable_grad():
        _, counts = _count(lambda: head(chunks, text, mask))
    return StageCount("planner head", head.flops(n_chunks), max(counts.values()))


def planner_vs_backbone(frames: int, side: int = 112, question_tokens: int = 24, source_hw: tuple[int, int] = (360, 640),
                        prompt_tokens: int = 80) -> dict[str, float]:
    """FLOPs of `resadapt`'s planner (its own encoder, the bundled model, looking at `frames` frames at
    `side` px and a question of `question_tokens` tokens, plus the allocator head) next to one vanilla
    prefill of Qwen2.5-VL-7B on the same frames (the paper's protocol: at most 602,112 pixels per frame),
    every part counted by FlopCounterMode on the meta device."""
    import json

    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    from resadapt_eval.allocator.frame_model import FrameAllocatorConfig, FrameAllocatorHead
    from resadapt_eval.strategies.resadapt import BUNDLED

    _register_cpu_sdpa()
    encoder = meta_model(reference_config())
    g = side // 14
    enc_v, enc_m = count_vision(encoder, "qwen2_5_vl", [(1, g, g)] * frames)
    lm = encoder.model.language_model
    d = lm.config.hidden_size
    pos = torch.arange(question_tokens).expand(3, 1, question_tokens).to("meta")
    _, counts = _count(lambda: lm(inputs_embeds=torch.empty(1, question_tokens, d, device="meta"), position_ids=pos))
    enc_q = max(counts.values())
    raw = json.loads((BUNDLED / "allocator_config.json").read_text()) if (BUNDLED / "allocator_config.json").is_file() \
        else {"token_dim": d, "text_dim": d, "tokens_per_frame": (g // 2) ** 2}
    fields = FrameAllocatorConfig.__dataclass_fields__
    config = FrameAllocatorConfig(**{k: v for k, v in raw.items() if k in fields})
    with torch.device("meta"):
        head = FrameAllocatorHead(config).eval()
    x = torch.empty(1, frames, config.tokens_per_frame, config.token_dim, device="meta")
    q = torch.empty(1, question_tokens, config.text_dim, device="meta")
    with torch.enable_grad():  # the attention layers' Python path, which FlopCounterMode sees
        _, counts = _count(lambda: head(x, torch.ones(1, frames, dtype=torch.bool, device="meta"), q,
                                        torch.ones(1, question_tokens, dtype=torch.bool, device="meta")))
    head_flops = max(counts.values())
    big = meta_model(build_config(QWEN25_VL_7B))
    h, w = smart_resize(*source_hw, factor=28, min_pixels=3136, max_pixels=768 * 28 * 28)
    grids = [(1, h // 14, w // 14)] * (frames // 2)
    vis_e, vis_m = count_vision(big, "qwen2_5_vl", grids)
    n_tokens = prompt_tokens + sum(t * a * b // 4 for t, a, b in grids)
    pre, _ = count_llm(big, n_tokens, 0)
    planner = enc_v + enc_m + enc_q + head_flops
    backbone = vis_e + vis_m + pre
    return {"frames": frames, "encoder_vision": enc_v + enc_m, "encoder_question": enc_q, "head": head_flops,
            "planner": planner, "backbone_vanilla": backbone, "backbone_tokens": n_tokens, "share": planner / backbone}


TINY = {
    "qwen2_5_vl": {"family": "qwen2_5_vl",
                   "text": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=2, vocab_size=1016,
                                rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]}),
                   "vision": dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                                  fullatt_block_indexes=[1])},
    "qwen3_vl": {"family": "qwen3_vl",
                 "text": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=2, head_dim=16, vocab_size=1016,
                              rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": [2, 3, 3],
                                               "mrope_interleaved": True}),
                 "vision": dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                                patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                                num_position_embeddings=256, deepstack_visual_indexes=[0])},
}


def main(argv: list[str] | None = None) -> int:
    """Print the per-stage agreement for the tiny and full-size configurations (`--planner`: resadapt's
    planner next to a Qwen2.5-VL-7B vanilla prefill instead)."""
    if argv is None:
        argv = sys.argv[1:]
    if "--planner" in argv:
        print("| frames | planner encoder: frames GFLOPs | question GFLOPs | head GFLOPs | planner GFLOPs | "
              "Qwen2.5-VL-7B vanilla prefill GFLOPs (visual + prompt tokens) | planner / backbone |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for n in (32, 128):
            r = planner_vs_backbone(n)
            print(f"| {n} | {r['encoder_vision'] / 1e9:.2f} | {r['encoder_question'] / 1e9:.3f} | {r['head'] / 1e9:.2f} | "
                  f"{r['planner'] / 1e9:.2f} | {r['backbone_vanilla'] / 1e9:,.0f} ({r['backbone_tokens']:,} tokens) | "
                  f"{r['share']:.4%} |")
        return 0
    cases = [("reference backbone (probe-videoqa vanilla)", reference_config(), [(1, 14, 14)] * 4),
             ("tiny Qwen2.5-VL", TINY["qwen2_5_vl"], [(1, 20, 30), (1, 12, 18)]),
             ("tiny Qwen3-VL", TINY["qwen3_vl"], [(1, 16, 24), (1, 10, 14)]),
             ("Qwen2.5-VL-7B", QWEN25_VL_7B, [(1, 34, 62), (1, 34, 62), (1, 20, 36)]),
             ("Qwen3-VL-8B", QWEN3_VL_8B, [(1, 30, 54), (1, 30, 54), (1, 18, 32)])]
    print("| model | stage | formula GFLOPs | FlopCounterMode GFLOPs | formula / torch - 1 |")
    print("|---|---|---:|---:|---:|")
    rows = [(name, c) for name, spec, grids in cases for c in check_backbone(spec, grids)]
    rows.append(("allocator (8 chunks)", check_planner()))
    for name, c in rows:
        print(f"| {name} | {c.stage} | {c.formula / 1e9:.4f} | {c.torch / 1e9:.4f} | {c.rel_error:+.2%} |")
    return 0 if all(abs(c.rel_error) <= 0.02 for _, c in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
