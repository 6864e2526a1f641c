"""The attention each merged visual token receives in one vision-tower block, recomputed from that block's input.

VisionZip ranks tokens by the attention they receive in the last full-attention block. Attention
kernels (sdpa, flash-attn) return no weights, and switching the tower to eager would change how
every sample runs, so a forward pre-hook records the block's attention input (hidden states, the
rotary cos/sin and the full-attention segments, i.e. one chunk or image each) and the scores are
recomputed afterwards with the block's own qkv projection and rotary function:
softmax(q·kᵀ/√d) per segment, averaged over heads and over the segment's queries, then over the
2x2 patches of each merged token. Qwen2.5-VL's tower works on patches in window-permuted order;
results are mapped back to the merged tokens' sequence order with transformers' window index.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from typing import Any

import torch
from transformers.vision_utils import get_vision_window_index

QUERY_BLOCK = 1024  # queries per softmax block: bounds memory at heads x 1024 x segment length


def scoring_block(vision_config: Any) -> int:
    """The last full-attention block (Qwen2.5-VL); the last block where every block is full (Qwen3-VL)."""
    full = getattr(vision_config, "fullatt_block_indexes", None)
    return int(full[-1]) if full else int(vision_config.depth) - 1


@dataclass(frozen=True)
class BlockInput:
    """One block's attention input as the tower ran it (patches in the tower's order)."""

    hidden: torch.Tensor
    cu_seqlens: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor


class BlockRecorder:
    """While active, records the attention input of one vision block (works under any attention kernel)."""

    def __init__(self, visual: torch.nn.Module, block: int):
        self.block = block
        self.attn = visual.blocks[block].attn
        self.captured: BlockInput | None = None
        self._handle = None
        self._thread = threading.get_ident()

    def _hook(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        if threading.get_ident() != self._thread:  # a planner using the tower in the prefetch thread
            return
        hidden = args[0] if args else kwargs["hidden_states"]
        cos, sin = kwargs["position_embeddings"]
        self.captured = BlockInput(hidden.detach(), kwargs["cu_seqlens"], cos, sin)

    def __enter__(self) -> "BlockRecorder":
        self._handle = self.attn.register_forward_pre_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._handle.remove()


def patch_attention(attn: torch.nn.Module, block_input: BlockInput) -> tuple[torch.Tensor, torch.Tensor]:
    """Per patch, in the tower's order: mean attention received within its segment, and its key before rotary.

    Mirrors the block's own attention (`qkv`, the modeling module's `apply_rotary_pos_emb_vision`,
    `scaling`, fp32 softmax as in transformers' eager attention).
    """
    x = block_input.hidden
    n = x.shape[0]
    q, k, _ = attn.qkv(x).reshape(n, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    keys = k.reshape(n, -1)
    rotary = sys.modules[type(attn).__module__].apply_rotary_pos_emb_vision
    q, k = rotary(q, k, block_input.cos, block_input.sin)
    q, k = q.transpose(0, 1), k.transpose(0, 1)  # (heads, n, head_dim)
    received = torch.zeros(n, dtype=torch.float32, device=x.device)
    bounds = block_input.cu_seqlens.tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        ks = k[:, start:end]
        total = torch.zeros(end - start, dtype=torch.float32, device=x.device)
        for qs in torch.split(q[:, start:end], QUERY_BLOCK, dim=1):
            weights = torch.softmax(torch.matmul(qs, ks.transpose(1, 2)) * attn.scaling, dim=-1, dtype=torch.float32)
            total += weights.sum(dim=(0, 1))
        received[start:end] = total / (attn.num_heads * (end - start))
    return received, keys


def merged_order(visual: torch.nn.Module, grids: torch.Tensor, per_unit: torch.Tensor) -> torch.Tensor:
    """Rows given per merged token in the tower's order, put into the merged tokens' sequence order."""
    window = getattr(visual, "window_size", None)
    if not window:
        return per_unit
    window_index, _ = get_vision_window_index(grids, spatial_merge_size=visual.spatial_merge_size,
                                              window_size=window, patch_size=visual.patch_size)
    return per_unit[torch.argsort(window_index.to(per_unit.device))]


def token_attention(visual: torch.nn.Module, block: int, grids: torch.Tensor,
                    block_input: BlockInput) -> tuple[torch.Tensor, torch.Tensor]:
    """Per merged visual token, in sequence order: received attention and key, each the mean over its 2x2 patches."""
    received, keys = patch_attention(visual.blocks[block].attn, block_input)
    unit = visual.spatial_merge_size ** 2
    received = received.view(-1, unit).mean(dim=1)
    keys = keys.float().view(-1, unit, keys.shape[-1]).mean(dim=1)
    return merged_order(visual, grids, received), merged_order(visual, grids, keys)
