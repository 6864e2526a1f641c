"""Analytic FLOPs of a Qwen-VL backbone per stage, read from its config.

Convention (the one `torch.utils.flop_counter.FlopCounterMode` uses, and checked against it per
stage in `analysis/flop_check.py` and tests/test_flops.py): a multiply-add counts as 2 FLOPs; only matrix
products are counted (convolutions, linears, attention scores and values), not norms, activations,
rotary embeddings or bias adds. Attention counts the full n x n score and value products of every
attention segment (FlopCounterMode counts causal attention densely too; a kernel that skips the
masked half does about half of the LLM's attention term). Grouped-query attention: K/V projections
of kv_heads x head_dim. Stages:

- vision encode: patch embedding and the ViT blocks; Qwen2.5-VL's windowed blocks attend within each
  real (edge-clipped) window, full blocks within one frame slice (grid_t slice) of a chunk; Qwen2.5-VL's
  vision MLP is SwiGLU (3 matrices), Qwen3-VL's is fc1/fc2 (2 matrices);
- merger: the patch merger MLP, plus on Qwen3-VL one deepstack merger per deepstack layer;
- LLM prefill: the decoder layers over the prompt (per-layer token counts for in-LLM pruning) and the
  LM head on the last position;
- decode: one decoder pass per generated token after the first, over a KV cache that grows by one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence


def _get(cfg: Any, name: str, default: Any = None) -> Any:
    return getattr(cfg, name, default) if cfg is not None else default


@dataclass(frozen=True)
class VisionFlops:
    encode: float   # patch embedding + ViT blocks
    merger: float   # patch merger (+ deepstack mergers on Qwen3-VL)

    @property
    def total(self) -> float:
        return self.encode + self.merger


def _is_qwen3(vision_config: Any) -> bool:
    return str(_get(vision_config, "model_type", "")).startswith("qwen3") or \
        _get(vision_config, "deepstack_visual_indexes") is not None


def _window_sides(n_merged: int, window_merged: int, merge: int) -> list[int]:
    """Patch counts along one side of each window (the last one clipped at the edge), as
    transformers' get_vision_window_index cuts a side of `n_merged` merged tokens."""
    full, rest = divmod(n_merged, window_merged)
    return [window_merged * merge] * full + ([rest * merge] if rest else [])


def vision_stage_flops(vision_config: Any, grids: Iterable[Sequence[int]]) -> VisionFlops:
    """FLOPs of the vision tower over chunks given by their patch grids (t, h, w)."""
    d = _get(vision_config, "hidden_size")
    inter = _get(vision_config, "intermediate_size")
    depth = _get(vision_config, "depth")
    patch = _get(vision_config, "patch_size")
    tp = _get(vision_config, "temporal_patch_size", 2)
    merge = _get(vision_config, "spatial_merge_size", 2)
    out = _get(vision_config, "out_hidden_size", d)
    in_ch = _get(vision_config, "in_channels", 3)
    qwen3 = _is_qwen3(vision_config)
    mlp_mats = 2 if qwen3 else 3
    window = 0 if qwen3 else (_get(vision_config, "window_size", 0) or 0)
    full = set(_get(vision_config, "fullatt_block_indexes", []) or [])
    n_mergers = 1 + (len(_get(vision_config, "deepstack_visual_indexes", []) or []) if qwen3 else 0)
    encode = merger = 0.0
    for t, h, w in grids:
        t, h, w = int(t), int(h), int(w)
        p = t * h * w
        full_sq = t * float(h * w) ** 2  # sum of squared segment lengths: one segment per frame slice
        if window:
            wm = window // merge // patch
            rows = _window_sides(h // merge, wm, merge)
            cols = _window_sides(w // merge, wm, merge)
            window_sq = t * float(sum(a * a for a in rows)) * float(sum(b * b for b in cols))
        encode += 2.0 * p * in_ch * tp * patch * patch * d  # patch embedding (Conv3d)
        for layer in range(depth):
            sq = full_sq if (not window or layer in full) else window_sq
            encode += 2.0 * p * 4 * d * d + 4.0 * sq * d + 2.0 * p * mlp_mats * d * inter
        hid = d * merge * merge
        merger += n_mergers * 2.0 * (p / (merge * merge)) * (hid * hid + hid * out)
    return VisionFlops(encode, merger)


def vision_flops(vision_config: Any, grids: Iterable[Sequence[int]]) -> float:
    """Vision encode + merger FLOPs over chunks given by their patch grids (t, h, w)."""
    return vision_stage_flops(vision_config, grids).total


def _text_dims(text_config: Any) -> tuple[int, int, int, int, int, int, int]:
    d = _get(text_config, "hidden_size")
    heads = _get(text_config, "num_attention_heads")
    kv = _get(text_config, "num_key_value_heads", None) or heads
    head_dim = _get(text_config, "head_dim", None) or d // heads
    return d, heads, kv, head_dim, _get(text_config, "intermediate_size"), \
        _get(text_config, "num_hidden_layers"), _get(text_config, "vocab_size")


def _layer_flops(text_config: Any, queries: float, keys: float) -> float:
    """One decoder layer: `queries` new tokens attending to `keys` tokens (itself included)."""
    d, heads, kv, hd, inter, _, _ = _text_dims(text_config)
    proj = 2.0 * queries * d * (heads * hd + 2 * kv * hd) + 2.0 * queries * heads * hd * d
    attn = 4.0 * queries * keys * heads * hd  # QK^T and AV, dense
    return proj + attn + 2.0 * queries * 3 * d * inter


def llm_prefill_flops(text_config: Any, n_tokens: float, layer_tokens: list[float] | None = None) -> float:
    """FLOPs of one LLM prefill over `n_tokens` (or a per-layer token count, for in-LLM pruning),
    with the LM head on the last position."""
    d, *_, layers, vocab = _text_dims(text_config)
    per_layer = layer_tokens or [n_tokens] * layers
    return sum(_layer_flops(text_config, n, n) for n in per_layer) + 2.0 * d * vocab


def llm_decode_flops(text_config: Any, layer_tokens: list[float], steps: int) -> float:
    """FLOPs of `steps` greedy decode steps after a prefill that left `layer_tokens[i]` tokens in
    layer i's KV cache: each step is one token through every layer plus the LM head."""
    d, *_, vocab = _text_dims(text_config)
    total = 0.0
    for s in range(max(0, int(steps))):
        total += sum(_layer_flops(text_config, 1, n + s + 1) for n in layer_tokens) + 2.0 * d * vocab
    return total


def attention_flops(vision_config: Any, chunk_patches: list[int]) -> float:
    """FLOPs of recomputing one full-attention vision block's q/k and softmax(q·kᵀ) per chunk (VisionZip-style scoring)."""
    d = _get(vision_config, "hidden_size")
    return float(sum(2 * p * d * 2 * d + 2 * p * p * d for p in chunk_patches))
