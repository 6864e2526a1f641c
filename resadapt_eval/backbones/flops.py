"""Analytic prefill FLOPs of a Qwen-VL backbone, read from its config.

Convention (stated so numbers can be compared): 2 FLOPs per multiply-accumulate; grouped-query
attention (K/V projections of size kv_heads·head_dim); SwiGLU MLPs (3 matrices); causal
self-attention in the LLM (half of the n² score matrix); the vision tower's windowed blocks attend
within their window, its full blocks within one image or chunk. Decode steps are not included.
"""

from __future__ import annotations

from typing import Any


def _get(cfg: Any, name: str, default: Any = None) -> Any:
    return getattr(cfg, name, default) if cfg is not None else default


def llm_prefill_flops(text_config: Any, n_tokens: float, layer_tokens: list[float] | None = None) -> float:
    """FLOPs of one LLM prefill over `n_tokens` (or a per-layer token count, for in-LLM pruning)."""
    d = _get(text_config, "hidden_size")
    heads = _get(text_config, "num_attention_heads")
    kv = _get(text_config, "num_key_value_heads", heads)
    head_dim = _get(text_config, "head_dim", None) or d // heads
    inter = _get(text_config, "intermediate_size")
    layers = _get(text_config, "num_hidden_layers")
    vocab = _get(text_config, "vocab_size")
    per_layer = layer_tokens or [n_tokens] * layers
    total = 0.0
    for n in per_layer:
        proj = 2 * n * d * (heads * head_dim + 2 * kv * head_dim) + 2 * n * heads * head_dim * d
        attn = 2 * n * n * heads * head_dim  # QK^T and AV, causal: 2 · (n²/2) · h·hd MACs
        mlp = 2 * n * 3 * d * inter
        total += proj + attn + mlp
    return total + 2 * d * vocab  # the LM head on the last position


def vision_flops(vision_config: Any, chunk_patches: list[int], temporal_patch_size: int) -> float:
    """FLOPs of the vision tower over chunks of the given patch counts (grid_t·grid_h·grid_w each)."""
    d = _get(vision_config, "hidden_size")
    inter = _get(vision_config, "intermediate_size")
    depth = _get(vision_config, "depth")
    patch = _get(vision_config, "patch_size")
    merge = _get(vision_config, "spatial_merge_size", 2)
    out = _get(vision_config, "out_hidden_size", d)
    in_ch = _get(vision_config, "in_channels", 3)
    window = _get(vision_config, "window_size", 0) or 0
    full = set(_get(vision_config, "fullatt_block_indexes", []) or [])
    window_tokens = (window // patch) ** 2 if window else None
    total = 0.0
    for p in chunk_patches:
        total += 2 * p * in_ch * temporal_patch_size * patch * patch * d  # patch embedding
        for layer in range(depth):
            span = p if (window_tokens is None or layer in full) else min(p, window_tokens)
            total += 2 * p * 4 * d * d + 2 * 2 * p * span * d + 2 * p * 3 * d * inter
        merged = p / (merge * merge)
        hid = d * merge * merge
        total += 2 * merged * (hid * hid + hid * out)  # patch merger MLP
    return total


def attention_flops(vision_config: Any, chunk_patches: list[int]) -> float:
    """FLOPs of recomputing one full-attention vision block's q/k and softmax(q·kᵀ) per chunk (VisionZip-style scoring)."""
    d = _get(vision_config, "hidden_size")
    return float(sum(2 * p * d * 2 * d + 2 * p * p * d for p in chunk_patches))
