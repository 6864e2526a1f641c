"""An allocator ready to plan: the trained head plus the frozen feature path it was trained on."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from resadapt_eval.core.strategy import Context
from resadapt_eval.core.types import UserError
from resadapt_eval.allocator.features import Observation, feature_dims, observe
from resadapt_eval.allocator.model import CONFIG_NAME, AllocatorConfig, AllocatorHead


@dataclass(frozen=True)
class Proposal:
    scales: tuple[float, ...]   # one per chunk (per image), before projection onto the budget
    flops: float                # thumbnails + head
    seconds: float


class Policy:
    def __init__(self, head: AllocatorHead, backbone):
        want = feature_dims(backbone)
        have = (head.config.feature_dim, head.config.text_dim)
        if want != have:
            raise UserError(f"this allocator was trained on features of size {have}, backbone {backbone.name!r} "
                            f"gives {want}; train one for it with `resadapt-eval train-allocator`")
        self.head = head.eval()
        self.backbone = backbone

    @classmethod
    def create(cls, backbone, **config) -> "Policy":
        chunk_dim, text_dim = feature_dims(backbone)
        return cls(AllocatorHead(AllocatorConfig(feature_dim=chunk_dim, text_dim=text_dim, **config)), backbone)

    @classmethod
    def load(cls, path: str | Path, backbone) -> "Policy":
        return cls(AllocatorHead.load(path), backbone)

    @staticmethod
    def training_config(path: str | Path) -> dict:
        """The settings the allocator in `path` was trained with ({} when it does not say)."""
        return json.loads((Path(path) / CONFIG_NAME).read_text()).get("trained", {})

    def set_action(self, action: str) -> None:
        self.head.config.eval_action = action

    def observe(self, ctx: Context) -> Observation:
        return observe(self.backbone, ctx, self.head.config.thumb_scale)

    def distribution(self, obs: Observation) -> tuple[torch.Tensor, torch.Tensor]:
        """Beta parameters (1, K) for one observation."""
        mask = torch.ones(1, obs.chunks.shape[0], dtype=torch.bool)
        return self.head(obs.chunks[None], obs.text[None], mask)

    @torch.inference_mode()
    def propose(self, ctx: Context) -> Proposal:
        obs = self.observe(ctx)
        alpha, beta = self.distribution(obs)
        scales = self.head.act(alpha, beta)[0]
        flops = obs.flops + self.head.flops(obs.chunks.shape[0])
        return Proposal(tuple(float(s) for s in scales), flops, obs.seconds)
