"""Writes input.safetensors: the tiny Qwen2.5-VL's merged visual tokens for a fixed clip (the fidelity goldens' input).

Run from the repository root: `PYTHONPATH=.:tests python tests/data/baseline_goldens/make_input.py`.
Features (what the LLM would see), the attention each token receives in the vision tower's last
full-attention block and its keys there (heads concatenated), in sequence order, 8 chunks.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from fixtures import write_video
from resadapt_eval.backbones import load_backbone
from resadapt_eval.backbones.tiny import build_tiny_qwen_vl
from resadapt_eval.backbones.vit_attention import BlockRecorder, scoring_block, token_attention
from resadapt_eval.core.budget import parse_budget
from resadapt_eval.core.strategy import Context, vanilla_plan
from resadapt_eval.core.types import Sample
from resadapt_eval.pipeline.media import load_video


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_qwen_vl(Path(tmp) / "tiny", "qwen2_5_vl", seed=0)
        backbone = load_backbone(str(model))
        frames = load_video(write_video(Path(tmp) / "clip.mp4", n_frames=40, height=150, width=210, seed=3), 16)
        ctx = Context.build(Sample("g", "q", "video", None, "A"), frames, backbone.geometry, parse_budget("1.0"), 0)
        plan = vanilla_plan(ctx)
        inputs = backbone.build_inputs(plan, frames, "q")
        visual = backbone.model.model.visual
        grids = inputs["video_grid_thw"]
        with torch.inference_mode(), BlockRecorder(visual, scoring_block(backbone.config.vision_config)) as rec:
            enc = backbone.model.model.get_video_features(inputs["pixel_values_videos"], grids, return_dict=True)
            attention, keys = token_attention(visual, rec.block, grids, rec.captured)
        feats = torch.cat(list(enc.pooler_output)).float().contiguous()
        sizes = torch.tensor([int(g.prod()) // 4 for g in grids])
        save_file({"features": feats, "attention": attention.float().contiguous(), "keys": keys.float().contiguous(),
                   "chunk_sizes": sizes, "key_heads": torch.tensor([backbone.config.vision_config.num_heads])},
                  str(out))
        print(f"{out}: {tuple(feats.shape)} tokens x dim, chunks {sizes.tolist()}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("input.safetensors"))
