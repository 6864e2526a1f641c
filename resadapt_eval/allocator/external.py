"""Allocators saved by the original ResAdapt repository (`model_type: smol_allocator`).

Such a folder carries its own modeling code (`auto_map` in config.json), so loading it runs that
code: it is refused unless the user passes --trust-remote-code. The contract used here is the one
the original evaluation uses: `AutoModel.from_pretrained(path, trust_remote_code=True)`, then
`model.scale_multi_modal(messages=[conversation], eval_mode=True)` with the frames as a video
(or one image) and the question as text, returning a dict whose `scales` (B, T) holds one scale
per frame it looked at (`scale_mask` marks the valid ones). Per-frame scales become per-chunk
scales by the mean over each chunk's frames, as the original operator does; they then go through
the same projection onto the budget as this harness's own allocator.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from resadapt_eval.core.strategy import Context
from resadapt_eval.core.types import UserError
from resadapt_eval.allocator.policy import Proposal

MODEL_TYPE = "smol_allocator"
TOKENS_PER_FRAME = 64  # SmolVLM2 at 512 px, 16 px patches, pixel shuffle 2: used for the FLOPs estimate


def is_external(path: str | Path) -> bool:
    config = Path(path) / "config.json"
    if not config.exists():
        return False
    try:
        return json.loads(config.read_text()).get("model_type") == MODEL_TYPE
    except json.JSONDecodeError as e:
        raise UserError(f"{config} is not valid JSON ({e})") from None


def chunk_scales(frame_scales: list[float], n_frames: int, step: int) -> list[float]:
    """Per-frame scales (possibly of a different frame sampling) -> one scale per chunk of `step` frames."""
    if not frame_scales:
        raise UserError("the external allocator returned no scales")
    src = np.asarray(frame_scales, dtype=float)
    # map each of our frames to the allocator's frame at the same relative time
    idx = np.minimum((np.arange(n_frames) * len(src)) // n_frames, len(src) - 1)
    per_frame = src[idx]
    return [float(per_frame[i:i + step].mean()) for i in range(0, n_frames, step)]


class ExternalPolicy:
    def __init__(self, model, path: Path):
        self.model = model.eval()
        self.path = path
        self.params = sum(p.numel() for p in model.parameters())

    def set_action(self, action: str) -> None:
        if action != "mean":
            raise UserError("an external smol_allocator only offers its own deterministic action (action=mean)")

    @torch.inference_mode()
    def propose(self, ctx: Context) -> Proposal:
        from PIL import Image

        start = time.perf_counter()
        frames = [Image.fromarray(np.asarray(f)) for f in ctx.frames.pixels]
        media = {"type": "image", "image": frames[0]} if ctx.frames.kind == "image" else \
            {"type": "video", "video": frames}
        # the original reads the user's question alone (it strips system messages and media)
        question = ctx.sample.question or ctx.sample.prompt
        conversation = [{"role": "user", "content": [media, {"type": "text", "text": question}]}]
        out = self.model.scale_multi_modal(messages=[conversation], eval_mode=True)
        scales = torch.as_tensor(out["scales"])[0]
        mask = out.get("scale_mask")
        if mask is not None:
            scales = scales[torch.as_tensor(mask)[0].bool()]
        step = 1 if ctx.frames.kind == "image" else ctx.geometry.temporal_patch_size
        per_chunk = chunk_scales([float(s) for s in scales], ctx.frames.count, step)
        flops = 2.0 * self.params * TOKENS_PER_FRAME * len(frames)  # an estimate: the code is not ours to count
        return Proposal(tuple(per_chunk), flops, time.perf_counter() - start)


def refuse_untrusted(path: str | Path, trust_remote_code: bool) -> None:
    if is_external(path) and not trust_remote_code:
        raise UserError(f"allocator {str(path)!r} is a ResAdapt smol_allocator whose Python code ships with it; "
                        f"it runs only with --trust-remote-code (read its modeling files first)")


def load_external(path: str | Path, trust_remote_code: bool, overrides: dict | None = None) -> ExternalPolicy:
    """Load an original allocator; `overrides` (max_frames, min_scale, max_scale) are set on its config
    before the weights load, as the original evaluation does (resadapt.md section 1.2)."""
    path = Path(path)
    refuse_untrusted(path, trust_remote_code)
    from transformers import AutoConfig, AutoModel

    try:
        config = AutoConfig.from_pretrained(str(path), trust_remote_code=True)
        for key, value in (overrides or {}).items():
            setattr(config, key, value)
        model = AutoModel.from_pretrained(str(path), config=config, trust_remote_code=True)
    except (OSError, ValueError, ImportError) as e:
        raise UserError(f"could not load the smol_allocator in {path}: {str(e).splitlines()[0]}") from None
    if not hasattr(model, "scale_multi_modal"):
        raise UserError(f"the model in {path} has no scale_multi_modal(); is it a ResAdapt allocator?")
    return ExternalPolicy(model, path)
