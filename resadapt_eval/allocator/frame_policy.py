"""ResAdapt's allocator ready to plan: a frozen small vision-language encoder plus the trained head.

The encoder is its own model, independent of the backbone being evaluated (the original uses
SmolVLM2-256M; here by default the bundled `tiny-encoder`, training/bundled_encoder.py): it sees
every decoded frame, resized to a fixed square, through its vision tower, and the question alone
(no chat template, no options) through its language model's hidden states. So one trained allocator plans for any
backbone, and gives the same per-frame scales for the same frames and question whatever the
backbone is. Its cost (encoder + head FLOPs, seconds) is charged to the plan.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from resadapt_eval.allocator.frame_model import FrameAllocatorConfig, FrameAllocatorHead
from resadapt_eval.core.types import UserError

_ENCODERS: dict[str, object] = {}
_LOCK = threading.Lock()


def load_encoder(source: str):
    """The frozen encoder model for `source` (a backbone name or folder), loaded once per process."""
    from resadapt_eval.backbones import load_backbone

    with _LOCK:
        if source not in _ENCODERS:
            _ENCODERS[source] = load_backbone(source, device="cpu")
        return _ENCODERS[source]


def encoder_dims(encoder, side: int) -> tuple[int, int, int]:
    """(token width, text width, tokens per frame) the encoder gives at `side`."""
    g = encoder.geometry
    per_side = max(1, round(side / g.factor))
    hidden = int(encoder.config.text_config.hidden_size)
    return hidden, hidden, per_side * per_side


@dataclass
class FrameObservation:
    frames: torch.Tensor     # (T, L, token_dim): each frame's merged tokens
    question: torch.Tensor   # (Q, text_dim): the question's hidden states
    flops: float             # what the encoder's look cost
    seconds: float


@dataclass(frozen=True)
class FrameProposal:
    scales: tuple[float, ...]   # one per frame (per image), per side
    flops: float                # encoder + head
    seconds: float


class FramePolicy:
    def __init__(self, head: FrameAllocatorHead, encoder=None):
        c = head.config
        self.encoder = encoder if encoder is not None else load_encoder(c.encoder)
        want = encoder_dims(self.encoder, c.encoder_side)
        have = (c.token_dim, c.text_dim, c.tokens_per_frame)
        if want != have:
            raise UserError(f"this allocator was trained on encoder features of shape {have}; encoder "
                            f"{c.encoder!r} gives {want}; name the encoder it was trained with (strategy option encoder=)")
        sha = self.encoder.fingerprint.get("sha256", "")
        if c.encoder_fingerprint and sha and sha != c.encoder_fingerprint:
            raise UserError(f"this allocator was trained with encoder weights {c.encoder_fingerprint[:12]}, but "
                            f"{c.encoder!r} now has {sha[:12]}; retrain it (`make bundled-allocator`) or name "
                            f"the encoder it was trained with (strategy option encoder=)")
        self.head = head.eval()
        self._head_flops: dict[tuple[int, int], float] = {}

    @classmethod
    def create(cls, encoder: str = "tiny-encoder", encoder_side: int = 112, **config) -> "FramePolicy":
        model = load_encoder(encoder)
        token_dim, text_dim, per_frame = encoder_dims(model, encoder_side)
        head = FrameAllocatorHead(FrameAllocatorConfig(
            token_dim=token_dim, text_dim=text_dim, tokens_per_frame=per_frame, encoder=encoder,
            encoder_side=encoder_side, encoder_fingerprint=model.fingerprint.get("sha256", ""), **config))
        return cls(head, model)

    @classmethod
    def load(cls, path: str | Path, encoder: str | None = None) -> "FramePolicy":
        head = FrameAllocatorHead.load(path)
        if encoder is not None and encoder != head.config.encoder:
            head.config.encoder, head.config.encoder_fingerprint = encoder, ""  # the user's explicit choice
        return cls(head)

    def set_action(self, action: str) -> None:
        self.head.config.eval_action = action

    def observe(self, pixels: np.ndarray, question: str) -> FrameObservation:
        """Look at frames (T, H, W, 3) uint8 and the question once; the encoder is frozen. The features
        are cloned out of inference mode, so training may reuse them under autograd."""
        start = time.perf_counter()
        frames, f_flops = self.encoder.encode_frames(pixels, self.head.config.encoder_side)
        text, t_flops = self.encoder.question_states(question)
        return FrameObservation(frames.clone(), text.clone(), f_flops + t_flops, time.perf_counter() - start)

    def distribution(self, obs: FrameObservation) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """alpha, beta (1, T) and the learned per-frame features (1, T, hidden) of one observation."""
        t, q = obs.frames.shape[0], obs.question.shape[0]
        return self.head(obs.frames[None], torch.ones(1, t, dtype=torch.bool), obs.question[None],
                         torch.ones(1, q, dtype=torch.bool))

    def head_flops(self, obs: FrameObservation) -> float:
        """The head's FLOPs on this shape, counted by torch's FlopCounterMode (once per shape)."""
        key = (obs.frames.shape[0], obs.question.shape[0])
        if key not in self._head_flops:
            with FlopCounterMode(display=False) as counter, torch.inference_mode():
                self.distribution(obs)
            self._head_flops[key] = float(counter.get_total_flops())
        return self._head_flops[key]

    @torch.inference_mode()
    def propose(self, pixels: np.ndarray, question: str) -> FrameProposal:
        obs = self.observe(pixels, question)
        start = time.perf_counter()
        alpha, beta, _ = self.distribution(obs)
        scales = self.head.act(alpha, beta)[0]
        seconds = obs.seconds + time.perf_counter() - start
        return FrameProposal(tuple(float(s) for s in scales), obs.flops + self.head_flops(obs), seconds)
