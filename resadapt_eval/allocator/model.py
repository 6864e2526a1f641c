"""The allocator's trainable head: chunk features + question features -> a Beta policy over scales.

The frozen encoder (by default the backbone's own vision tower on thumbnails) gives each chunk a
feature vector; the question gives one text vector. A small transformer attends across chunks with
the question as an extra token, and a linear head outputs one Beta(alpha, beta) per chunk. A scale is
min_scale + u * (max_scale - min_scale) with u ~ Beta in training, and an explicit deterministic
action at evaluation (the Beta mean or mode; the original called its mean a "median").
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

CONFIG_NAME, WEIGHTS_NAME = "allocator_config.json", "allocator.safetensors"
EVAL_ACTIONS = ("mean", "mode")


@dataclass
class AllocatorConfig:
    feature_dim: int                 # per-chunk feature size from the frozen encoder (pooled mean and max)
    text_dim: int                    # question feature size
    hidden: int = 64
    heads: int = 4
    layers: int = 2
    max_chunks: int = 256
    min_scale: float = 0.2
    max_scale: float = 1.0
    eval_action: str = "mean"
    beta_param_scale: float = 0.5    # alpha = softplus(scale * logit) + 1, as the original
    encoder: str = "backbone"        # which frozen encoder made the features
    thumb_scale: float = 0.5         # thumbnails the frozen encoder sees, as a per-side share of vanilla

    def __post_init__(self) -> None:
        check_action_range(self)


def check_action_range(config) -> None:
    """A policy config's evaluation action and scale range, checked (both allocator configs share them)."""
    if config.eval_action not in EVAL_ACTIONS:
        raise ValueError(f"eval_action must be one of {EVAL_ACTIONS}, got {config.eval_action!r}")
    if not 0 < config.min_scale < config.max_scale:
        raise ValueError(f"need 0 < min_scale < max_scale, got {config.min_scale}, {config.max_scale}")


class BetaHead(nn.Module):
    """A policy that outputs one Beta(alpha, beta) per unit (chunk or frame) over [min_scale, max_scale]:
    sampling for training, the explicit deterministic action for evaluation, and its files.
    Subclasses set `config_class` and `model_type` and implement `forward`."""

    config_class: type = None  # type: ignore[assignment]
    model_type: str = ""

    def beta(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(..., 2) head outputs -> alpha, beta = softplus(scale * logit) + 1, clamped to [0.1, 20] (the original's)."""
        alpha, beta = (F.softplus(logits * self.config.beta_param_scale) + 1.0).clamp(0.1, 20.0).unbind(-1)
        return alpha, beta

    def to_scale(self, u: torch.Tensor) -> torch.Tensor:
        c = self.config
        return c.min_scale + u * (c.max_scale - c.min_scale)

    def to_unit(self, scale: torch.Tensor) -> torch.Tensor:
        c = self.config
        return ((scale - c.min_scale) / (c.max_scale - c.min_scale)).clamp(1e-6, 1 - 1e-6)

    def sample(self, alpha: torch.Tensor, beta: torch.Tensor, generator: torch.Generator | None = None):
        """(scales, log-probs) of one sampled allocation per row; the draw is seeded by `generator`."""
        # Beta via two Gammas; torch's Gamma sampler takes no generator, so draw through the global RNG
        # forked under the generator's seed for reproducibility.
        with torch.random.fork_rng(devices=[]):
            if generator is not None:
                torch.manual_seed(int(torch.randint(0, 2 ** 62, (1,), generator=generator)))
            u = torch.distributions.Beta(alpha, beta).sample()
        u = u.clamp(1e-6, 1 - 1e-6)
        return self.to_scale(u), torch.distributions.Beta(alpha, beta).log_prob(u)

    def log_prob(self, alpha: torch.Tensor, beta: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        return torch.distributions.Beta(alpha, beta).log_prob(self.to_unit(scales))

    def act(self, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """The deterministic evaluation scales: the Beta mean, or its mode (mean where the mode is not interior)."""
        mean = alpha / (alpha + beta)
        if self.config.eval_action == "mean":
            return self.to_scale(mean)
        interior = (alpha > 1) & (beta > 1)
        mode = torch.where(interior, (alpha - 1) / (alpha + beta - 2).clamp(min=1e-6), mean)
        return self.to_scale(mode)

    # -- files -------------------------------------------------------------------------------------

    def save(self, directory: str | Path, extra: dict | None = None) -> Path:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(directory / WEIGHTS_NAME))
        (directory / CONFIG_NAME).write_text(json.dumps({"model_type": self.model_type,
                                                         **asdict(self.config), **(extra or {})}, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "BetaHead":
        from safetensors.torch import load_file

        directory = Path(directory)
        raw = json.loads((directory / CONFIG_NAME).read_text())
        fields = cls.config_class.__dataclass_fields__
        head = cls(cls.config_class(**{k: v for k, v in raw.items() if k in fields}))
        head.load_state_dict(load_file(str(directory / WEIGHTS_NAME)))
        return head.eval()


def head_type(directory: str | Path) -> str:
    """The model_type an allocator folder's config names (allocator_config.json, else an original
    ResAdapt folder's config.json; '' when it has neither or they do not parse)."""
    for name in (CONFIG_NAME, "config.json"):
        path = Path(directory) / name
        if path.is_file():
            try:
                return str(json.loads(path.read_text()).get("model_type", ""))
            except json.JSONDecodeError:
                return ""
    return ""


class AllocatorHead(BetaHead):
    """One Beta per chunk from pooled thumbnail features and the prompt's mean embedding
    (`resadapt-budget`'s allocator)."""

    config_class = AllocatorConfig
    model_type = "resadapt_eval_allocator"

    def __init__(self, config: AllocatorConfig):
        super().__init__()
        self.config = c = config
        self.chunk_in = nn.Sequential(nn.LayerNorm(c.feature_dim), nn.Linear(c.feature_dim, c.hidden))
        self.text_in = nn.Sequential(nn.LayerNorm(c.text_dim), nn.Linear(c.text_dim, c.hidden))
        self.position = nn.Embedding(c.max_chunks, c.hidden)
        layer = nn.TransformerEncoderLayer(c.hidden, c.heads, 4 * c.hidden, dropout=0.0, batch_first=True,
                                           norm_first=True, activation="gelu")
        self.mixer = nn.TransformerEncoder(layer, c.layers, enable_nested_tensor=False)
        self.out = nn.Sequential(nn.LayerNorm(c.hidden), nn.Linear(c.hidden, 2))
        nn.init.zeros_(self.out[1].weight)  # start uniform: alpha = beta = softplus(-5) + 1, about 1
        nn.init.constant_(self.out[1].bias, -10.0)

    def forward(self, chunks: torch.Tensor, text: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """chunks (B, K, feature_dim), text (B, text_dim), mask (B, K) -> alpha, beta (B, K)."""
        k = chunks.shape[1]
        if k > self.config.max_chunks:
            raise ValueError(f"{k} chunks exceed the allocator's max_chunks={self.config.max_chunks}")
        pos = self.position(torch.arange(k, device=chunks.device))
        x = torch.cat([self.text_in(text)[:, None], self.chunk_in(chunks) + pos], dim=1)
        pad = torch.cat([torch.zeros_like(mask[:, :1]), ~mask.bool()], dim=1)
        h = self.mixer(x, src_key_padding_mask=pad)[:, 1:]
        return self.beta(self.out(h))

    def flops(self, n_chunks: int) -> float:
        """Multiply-adds x 2 of one forward over n_chunks (+1 text token): for the cost records."""
        c, n = self.config, n_chunks + 1
        per_layer = 2 * n * (4 * c.hidden * c.hidden + 2 * 4 * c.hidden * c.hidden) + 2 * 2 * n * n * c.hidden
        return float(per_layer * c.layers + 2 * n_chunks * c.feature_dim * c.hidden + 2 * c.text_dim * c.hidden
                     + 2 * n_chunks * c.hidden * 2)


def beta_entropy_bits(alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Entropy of each Beta in bits (for the training log: how decided the policy is)."""
    return torch.distributions.Beta(alpha, beta).entropy() / math.log(2)
