"""What the allocator sees: cheap thumbnails of every chunk through the backbone's frozen vision
tower, and the question through the backbone's frozen input embeddings.

Thumbnails are every decoded frame at `thumb_scale` of the vanilla side (at least one merged token),
so the look costs a small, known share of a vanilla encode; its FLOPs and seconds are returned so
the strategy can charge them to the sample.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from resadapt_eval.core.strategy import Context, even_plan


@dataclass
class Observation:
    chunks: torch.Tensor    # (K, 2 * LLM hidden): mean- and max-pooled merged tokens of each chunk
    text: torch.Tensor      # (text hidden,): mean input embedding of the prompt
    flops: float            # what the thumbnails' encode cost
    seconds: float


def feature_dims(backbone) -> tuple[int, int]:
    """(chunk feature size, text feature size) that `observe` produces for this backbone."""
    hidden = int(backbone.config.text_config.hidden_size)  # the merger projects into the LLM's width
    return 2 * hidden, hidden


def observe(backbone, ctx: Context, thumb_scale: float) -> Observation:
    start = time.perf_counter()
    size = ctx.geometry.scaled_size(ctx.frames.kind, ctx.vanilla_hw, thumb_scale)
    plan = even_plan(ctx, list(range(ctx.frames.count)), size)
    feats, flops = backbone.encode_chunks(plan, ctx.frames)
    chunks = torch.stack([torch.cat([f.mean(0), f.amax(0)]) for f in feats])
    text = backbone.embed_text(ctx.sample.prompt).mean(0)
    return Observation(chunks, text, flops, time.perf_counter() - start)
