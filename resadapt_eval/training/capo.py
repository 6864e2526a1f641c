"""Cost-Aware Policy Optimization (CAPO): the allocator's advantage, policy loss and regularisers.

Each prompt is a contextual bandit: the allocator samples a group of allocations, the frozen
backbone answers each greedily, and an allocation's advantage is its group-normalised accuracy plus
a cost shaping around a dynamic pivot. Unlike the original (linear mean scale, which under-counts a
quadratic cost), the cost here is the allocation's actual visual-token retention.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class CapoConfig:
    """Defaults are the original `capo_acc` settings (research notes, resadapt.md section 5.2)."""

    pivot_mix: float = 0.5          # alpha: pivot = alpha * group mean cost + (1 - alpha) * pivot_center
    pivot_center: float = 0.4       # c0
    tau: float = 0.15               # temperature of the shaping sigmoids
    correct_threshold: float = 0.35
    acc_pow: float = 0.5
    acc_floor: float = 0.05
    right_scale: float = 0.7        # correct answers: rewarded for costing less than the pivot
    wrong_scale: float = 1.3        # wrong answers: rewarded for spending more than the pivot
    encouragement: float = 0.25     # lambda_enc, weight of the shaping term
    gas: float = 0.05               # lambda_gas, a plain cost penalty
    clamp_correct: bool = True      # a correct answer never gets a negative advantage
    min_std: float = 1e-4


def capo_advantages(acc: torch.Tensor, cost: torch.Tensor, cfg: CapoConfig = CapoConfig()) -> torch.Tensor:
    """Advantages of one group of M allocations of the same prompt.

    acc: (M,) reward from the task's scorer in [0, 1]; cost: (M,) token retention in [0, 1].
    """
    acc, cost = acc.float(), cost.float()
    std = acc.std(unbiased=False)
    base = (acc - acc.mean()) / std if std >= cfg.min_std else torch.zeros_like(acc)
    pivot = cfg.pivot_mix * cost.mean() + (1 - cfg.pivot_mix) * cfg.pivot_center
    cheaper = torch.sigmoid((pivot - cost) / cfg.tau) - 0.5
    dearer = torch.sigmoid((cost - pivot) / cfg.tau) - 0.5
    correct = acc > cfg.correct_threshold
    w_acc = acc.clamp(min=0).pow(cfg.acc_pow).clamp(min=cfg.acc_floor)
    shape = torch.where(correct, cfg.right_scale * w_acc * cheaper, cfg.wrong_scale * (1 - acc) * dearer)
    adv = base + cfg.encouragement * shape - cfg.gas * cost
    if cfg.clamp_correct:
        adv = torch.where(correct, adv.clamp(min=1e-3), adv)
    return adv


def ppo_clip_loss(logp: torch.Tensor, logp_old: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
                  clip_low: float = 0.2, clip_high: float = 0.28) -> torch.Tensor:
    """PPO-clip on per-chunk log-probabilities (M, K), the allocation's advantage broadcast to its
    chunks, averaged over valid chunks (mask)."""
    ratio = torch.exp(logp - logp_old)
    a = adv[:, None].expand_as(logp)
    loss = -torch.minimum(ratio * a, ratio.clamp(1 - clip_low, 1 + clip_high) * a)
    return (loss * mask).sum() / mask.sum().clamp(min=1)


def temporal_similarity_loss(features: torch.Tensor, mean_scale: torch.Tensor, mask: torch.Tensor,
                             threshold: float = 0.55, temperature: float = 0.12, margin: float = 0.05) -> torch.Tensor:
    """Discourage giving a near-duplicate successor chunk more resolution than its predecessor.

    features: (B, K, D) chunk features; mean_scale: (B, K) the policy's mean scale; mask: (B, K).
    w_t = sigmoid((cos(f_{t-1}, f_t) - threshold) / temperature);
    loss = sum w_t * relu(log s_t - (log s_{t-1} - margin * w_t)) / #pairs.
    """
    if features.shape[1] < 2:
        return features.new_zeros(())
    sim = F.cosine_similarity(features[:, 1:], features[:, :-1], dim=-1)
    w = torch.sigmoid((sim - threshold) / temperature)
    log_s = mean_scale.clamp(min=1e-6).log()
    pair = (mask[:, 1:] * mask[:, :-1]).float()
    excess = F.relu(log_s[:, 1:] - (log_s[:, :-1] - margin * w))
    return (w * excess * pair).sum() / pair.sum().clamp(min=1)


# -- ResAdapt as published: free mode, one action per frame ----------------------------------------

COST_UNITS = ("retention", "linear-scale")
PAPER_PIVOT_CENTER = 0.4  # c0 of the original, in its linear-scale unit


def normalized_cost(unit: str, frame_scales: torch.Tensor, retention: torch.Tensor, min_scale: float = 0.2,
                    max_scale: float = 2.0) -> torch.Tensor:
    """CAPO's cost in [0, 1] of each allocation.

    `linear-scale` is the paper's: c = clip((mean frame scale - min) / (max - min), 0, 1), where
    frame_scales is (M, T). `retention` (this harness's default) measures what the allocation really
    cost, the visual tokens it put into the backbone over vanilla's (M,), on the same [0, 1] footing:
    c = clip((r - min^2) / (max^2 - min^2), 0, 1), since a per-side scale s costs about s^2 of the
    tokens. The linear mean under-counts: it charges a spread allocation (one frame at 2.0, one at
    0.2) like two frames at 1.1, although the first costs 2.02 times vanilla's tokens and the second 1.21.
    """
    if unit == "linear-scale":
        return ((frame_scales.float().mean(-1) - min_scale) / (max_scale - min_scale)).clamp(0, 1)
    if unit == "retention":
        return ((retention.float() - min_scale ** 2) / (max_scale ** 2 - min_scale ** 2)).clamp(0, 1)
    raise ValueError(f"cost unit must be one of {COST_UNITS}, got {unit!r}")


def pivot_center(unit: str, min_scale: float = 0.2, max_scale: float = 2.0, c0: float = PAPER_PIVOT_CENTER) -> float:
    """The pivot centre that means in `unit` what c0 = 0.4 means in the paper's linear-scale unit.

    c0 = 0.4 names a mean scale s0 = min + c0 (max - min) = 0.92 per side; uniformly applied that
    costs s0^2 = 0.846 of vanilla's tokens, which on the retention unit's [min^2, max^2] footing is
    (0.846 - 0.04) / (4 - 0.04) = 0.204.
    """
    if unit == "linear-scale":
        return c0
    s0 = min_scale + c0 * (max_scale - min_scale)
    return float(normalized_cost("retention", torch.zeros(1, 1), torch.tensor([s0 * s0]), min_scale, max_scale)[0])


def concentration_loss(alpha: torch.Tensor, beta: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mean(alpha + beta) over valid frames: keeps the Beta from collapsing onto a point (weight 5e-4
    in the original, `ccen`)."""
    m = mask.float()
    return ((alpha + beta) * m).sum() / m.sum().clamp(min=1)
