"""ResAdapt's allocator head: per-frame token maps and the question -> one Beta per frame.

The shape follows the original scorer (`aznet_v2.FrameWiseScaleAllocator`, research notes
resadapt.md section 1.4), at a size that trains on a CPU:

- each layer: spatial self-attention within a frame, temporal attention across frames at each
  spatial position, cross-attention from visual tokens to the question's tokens, a feed-forward
  block (all pre-norm residual); positions are learned embeddings (the original uses RoPE);
- per-frame pooling: the question attention-pooled by the frame's mean token gives a query; a gate
  MLP over [LN(token), query] weighs the frame's tokens (softmax over them);
- five scalar signals per frame: token variance, gate entropy, gate peak, cosine to the previous
  frame, question-frame relevance; fused with the pooled feature;
- a projector (LN, Linear, GELU, Linear, plus a linear skip) to two logits per frame, which give
  Beta(alpha, beta) as in `BetaHead.beta`; initialised so alpha = beta = 1 (uniform on [min, max]).

Scales are per side, over [0.2, 2.0] by default, so the policy may upscale.

Two optional additions, on in the bundled allocator, because at 64 wide the head above does not
learn a question-dependent choice (probe-which: the tile whose border has the colour the question
names). Trained with the answer given, it picks the right tile in about half the held-out samples, a
guess between the two:
- `standardize`: the frozen features are standardised per dimension with statistics of the
  training prompts' observations, stored with the head (buffers): frame tokens by their own mean and
  spread; the question's mean state by the spread of that mean across questions, so the words that
  differ between questions are not drowned by the ones they share;
- `token_relevance`: a sixth signal per frame, the highest cosine between one of its projected input
  tokens and the projected standardised question, so one small region that matches the question
  counts before the layers average it away.
With both, the head so trained on 450 videos picks the right tile in 94% of held-out samples instead
of 48%, and still finds probe-longvideo's evidence chunk in 100% (on 90 videos: 63%, and 60% on
probe-longvideo; scripts/resadapt_diagnostics.py, docs/findings/2026-12-07-resadapt-diagnostics.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from resadapt_eval.allocator.model import BetaHead, check_action_range

N_SIGNALS = 5


@dataclass
class FrameAllocatorConfig:
    token_dim: int                   # width of the encoder's merged visual tokens
    text_dim: int                    # width of the encoder's language-model hidden states
    tokens_per_frame: int            # merged tokens per frame at the encoder's frame size
    hidden: int = 64
    heads: int = 4
    layers: int = 2
    max_frames: int = 256
    min_scale: float = 0.2
    max_scale: float = 2.0
    eval_action: str = "mean"        # the original evaluates the Beta mean (it calls it a median)
    beta_param_scale: float = 0.5
    init_logit: float = -10.0        # start: alpha = softplus(init_logit) + 1 (the original's -10: alpha = 1)
    init_scale: float | None = None  # start's mean scale per side; None: the middle, alpha = beta (the original)
    encoder: str = "tiny-encoder"    # the frozen small vision-language model that looks at frames and question
    encoder_side: int = 112          # frames are resized to this square before the encoder sees them
    encoder_fingerprint: str = ""    # sha256 of the encoder's weights when trained (checked on load)
    # Two additions for a small head on few prompts (FrameAllocatorHead's docstring says why); False
    # keeps the original's shape, and allocators saved before they existed load with it.
    standardize: bool = False        # frozen per-dimension statistics of the encoder's features (fit_input_stats)
    token_relevance: bool = False    # a sixth signal: the frame's best token-question relevance

    def __post_init__(self) -> None:
        check_action_range(self)


class FrameLayer(nn.Module):
    """Spatial attention, temporal attention, cross-attention to the question, feed-forward."""

    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(4))
        self.spatial = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.temporal = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.cross = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden))

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor, text: torch.Tensor,
                text_mask: torch.Tensor) -> torch.Tensor:
        b, t, l, h = x.shape
        y = self.norms[0](x).reshape(b * t, l, h)
        x = x + self.spatial(y, y, y, need_weights=False)[0].reshape(b, t, l, h)
        y = self.norms[1](x).transpose(1, 2).reshape(b * l, t, h)
        pad = (~frame_mask.bool())[:, None, :].expand(b, l, t).reshape(b * l, t)
        x = x + self.temporal(y, y, y, key_padding_mask=pad, need_weights=False)[0].reshape(b, l, t, h).transpose(1, 2)
        y = self.norms[2](x).reshape(b, t * l, h)
        x = x + self.cross(y, text, text, key_padding_mask=~text_mask.bool(), need_weights=False)[0].reshape(b, t, l, h)
        return x + self.ff(self.norms[3](x))


class FrameAllocatorHead(BetaHead):
    config_class = FrameAllocatorConfig
    model_type = "resadapt_eval_frame_allocator"

    def __init__(self, config: FrameAllocatorConfig):
        super().__init__()
        self.config = c = config
        self.vision_in = nn.Linear(c.token_dim, c.hidden, bias=False)
        self.text_in = nn.Linear(c.text_dim, c.hidden, bias=False)
        self.spatial_pos = nn.Embedding(c.tokens_per_frame, c.hidden)
        self.temporal_pos = nn.Embedding(c.max_frames, c.hidden)
        self.layers = nn.ModuleList(FrameLayer(c.hidden, c.heads) for _ in range(c.layers))
        self.token_norm = nn.LayerNorm(c.hidden)
        self.gate = nn.Sequential(nn.Linear(2 * c.hidden, c.hidden), nn.GELU(), nn.Linear(c.hidden, 1))
        self.relevance_text = nn.Linear(c.hidden, c.hidden, bias=False)
        self.relevance_frame = nn.Linear(c.hidden, c.hidden, bias=False)
        self.pooled_norm = nn.LayerNorm(c.hidden)
        self.n_signals = N_SIGNALS + int(c.token_relevance)
        if c.token_relevance:
            self.token_relevance_text = nn.Linear(c.hidden, c.hidden, bias=False)
            self.token_relevance_frame = nn.Linear(c.hidden, c.hidden, bias=False)
        if c.standardize:  # identity until fit_input_stats
            for name, dim in (("frame", c.token_dim), ("question", c.text_dim)):
                self.register_buffer(f"{name}_shift", torch.zeros(dim))
                self.register_buffer(f"{name}_scale", torch.ones(dim))
        self.fuse = nn.Linear(c.hidden + self.n_signals, c.hidden)
        self.proj = nn.Sequential(nn.LayerNorm(c.hidden), nn.Linear(c.hidden, c.hidden // 2), nn.GELU(),
                                  nn.Linear(c.hidden // 2, 2))
        self.skip = nn.Linear(c.hidden, 2, bias=False)
        # Start where every frame gets the same Beta: zero output weights, bias init_logit / beta_param_scale,
        # so alpha = beta = softplus(init_logit) + 1 (the original's -10 gives the uniform Beta(1, 1)).
        nn.init.zeros_(self.proj[-1].weight)
        nn.init.zeros_(self.skip.weight)
        nn.init.constant_(self.proj[-1].bias, c.init_logit / c.beta_param_scale)
        if c.init_scale is not None:  # beta for that mean: beta = alpha (1 - u) / u, through softplus's inverse
            u = (c.init_scale - c.min_scale) / (c.max_scale - c.min_scale)
            if not 0.0 < u < 1.0:
                raise ValueError(f"init_scale {c.init_scale} must lie strictly inside [{c.min_scale}, {c.max_scale}]")
            alpha = math.log1p(math.exp(float(c.init_logit))) + 1.0
            beta_logit = math.log(math.expm1(max(alpha * (1 - u) / u - 1.0, 1e-6)))
            with torch.no_grad():
                self.proj[-1].bias[1] = beta_logit / c.beta_param_scale

    @torch.no_grad()
    def fit_input_stats(self, frames: list[torch.Tensor], questions: list[torch.Tensor]) -> None:
        """Set the standardisation from observations: frames (T, L, token_dim) and questions (Q, text_dim)."""
        if not self.config.standardize:
            return
        tokens = torch.cat([f.reshape(-1, f.shape[-1]) for f in frames])
        means = torch.stack([q.mean(0) for q in questions])
        self.frame_shift.copy_(tokens.mean(0))
        self.frame_scale.copy_(tokens.std(0).clamp(min=1e-3))
        self.question_shift.copy_(means.mean(0))
        spread = means.std(0) if len(questions) > 1 else torch.ones_like(means[0])
        self.question_scale.copy_(spread.clamp(min=1e-2 * float(spread.max().clamp(min=1e-6))))

    def forward(self, frames: torch.Tensor, frame_mask: torch.Tensor, text: torch.Tensor,
                text_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """frames (B, T, L, token_dim), frame_mask (B, T), text (B, Q, text_dim), text_mask (B, Q)
        -> alpha, beta (B, T) and the learned per-frame features (B, T, hidden)."""
        b, t, l, _ = frames.shape
        c = self.config
        if t > c.max_frames:
            raise ValueError(f"{t} frames exceed the allocator's max_frames={c.max_frames}")
        if l != c.tokens_per_frame:
            raise ValueError(f"frames have {l} tokens each, the allocator was built for {c.tokens_per_frame} "
                             f"(encoder_side {c.encoder_side})")
        if c.standardize:
            frames = (frames - self.frame_shift) / self.frame_scale
            text = (text - self.question_shift) / self.question_scale
        projected = self.vision_in(frames)
        x = projected + self.spatial_pos.weight[None, None] + \
            self.temporal_pos(torch.arange(t, device=frames.device))[None, :, None]
        q_tokens = self.text_in(text)
        for layer in self.layers:
            x = layer(x, frame_mask, q_tokens, text_mask)
        tokens = self.token_norm(x)
        mean = tokens.mean(2)                                                          # (B, T, H)
        att = torch.einsum("bth,bqh->btq", mean, q_tokens) / c.hidden ** 0.5
        att = att.masked_fill(~text_mask.bool()[:, None], float("-inf")).softmax(-1)
        query = torch.einsum("btq,bqh->bth", att, q_tokens)
        gate = self.gate(torch.cat([tokens, query[:, :, None].expand_as(tokens)], -1)).squeeze(-1).softmax(-1)
        pooled = torch.einsum("btl,btlh->bth", gate, tokens)
        variance = tokens.var(2, unbiased=False).mean(-1)
        entropy = -(gate * gate.clamp(min=1e-9).log()).sum(-1) / torch.log(torch.tensor(float(l)))
        peak = gate.amax(-1)
        previous = F.cosine_similarity(pooled[:, 1:], pooled[:, :-1], dim=-1)
        previous = torch.cat([pooled.new_zeros(b, 1), previous], 1)  # the first frame (an image's only one) has none
        text_mean = (q_tokens * text_mask[..., None]).sum(1) / text_mask.sum(1, keepdim=True).clamp(min=1)
        relevance = F.cosine_similarity(self.relevance_frame(pooled), self.relevance_text(text_mean)[:, None], dim=-1)
        parts = [variance, entropy, peak, previous, relevance]
        if c.token_relevance:  # the best-matching token of the frame, not its pooled mean
            token_rel = F.cosine_similarity(self.token_relevance_frame(projected),
                                            self.token_relevance_text(text_mean)[:, None, None], dim=-1)
            parts.append(token_rel.amax(-1))
        signals = torch.stack(parts, -1)
        feature = self.fuse(torch.cat([self.pooled_norm(pooled), signals], -1))
        alpha, beta = self.beta(self.proj(feature) + self.skip(feature))
        return alpha, beta, feature
