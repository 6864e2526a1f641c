"""Visual-token reduction: which merged visual tokens reach the LLM, and what each one carries.

Every method returns a `Selection`: the kept tokens (sorted indices into the visual tokens; each
kept token keeps its own M-RoPE position) and, for merging methods, the kept token each dropped
token was folded into. `Selection.gather` then turns any per-token tensor (the features, and
Qwen3-VL's deepstack features alike) into what the kept tokens carry: the mean over the tokens
folded into them, which is ToMe's size-weighted average after any number of rounds.

Pre-LLM methods (`REDUCERS`, by `Reduction.method`): `random`, `visionzip`, `tome`, `divprune`,
`vidcom2`, `flashvid` (its vision-side stage, `flashvid.py`). FastV and PyramidDrop select inside the
LLM from an attention row (`top_scores`); the layer-wise driver in `llm.py` calls it. Every
selection carries an estimate of its own scoring FLOPs (2 per multiply-accumulate), which the
backbone adds to the record's `flops["reduction"]`.
Methods that spend a budget per chunk split it with `chunk_quotas`, so every chunk of a video (or
the one image) is reduced on its own and the total kept is exactly the budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import math

import torch
import torch.nn.functional as F

from resadapt_eval.backbones.flashvid import flashvid_representatives


@dataclass(frozen=True)
class VisualTokens:
    """What a pre-LLM reduction may look at, for the N merged visual tokens in sequence order.

    `attention` is the mean attention each token receives in the vision tower's scoring block and
    `keys` its attention keys there (both only when the method asked the encoder for them).
    """

    features: torch.Tensor
    chunk_sizes: tuple[int, ...]
    attention: torch.Tensor | None = None
    keys: torch.Tensor | None = None
    key_heads: int = 1

    @property
    def count(self) -> int:
        return int(self.features.shape[0])


@dataclass(frozen=True)
class Selection:
    """Kept visual tokens (sorted indices) and, per visual token, the kept slot it was folded into (-1: dropped)."""

    keep: torch.Tensor
    owner: torch.Tensor
    flops: float = 0.0

    @classmethod
    def from_representatives(cls, rep: torch.Tensor, flops: float = 0.0) -> "Selection":
        """From each token's representative (a kept token's index, itself for kept tokens; -1 when dropped)."""
        rep = rep.long()
        keep = torch.unique(rep[rep >= 0])
        owner = torch.full_like(rep, -1)
        folded = rep >= 0
        owner[folded] = torch.searchsorted(keep, rep[folded])
        return cls(keep=keep, owner=owner, flops=float(flops))

    @classmethod
    def subset(cls, keep: torch.Tensor, n: int, flops: float = 0.0) -> "Selection":
        """A plain selection: the kept tokens carry only themselves."""
        rep = torch.full((n,), -1, dtype=torch.long)
        keep = keep.long().cpu()
        rep[keep] = keep
        return cls.from_representatives(rep, flops)

    weight: torch.Tensor | None = None

    def with_weights(self, weight: torch.Tensor) -> "Selection":
        """The same grouping, each kept token carrying the weighted sum of its group (VisionZip's add merge)."""
        return Selection(self.keep, self.owner, self.flops, weight.float())

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Rows of x (one per visual token) for the kept tokens: the mean over the tokens folded into each
        (or, with weights, their weighted sum)."""
        owner = self.owner.to(x.device)
        folded = owner >= 0
        sums = torch.zeros(len(self.keep), *x.shape[1:], dtype=torch.float32, device=x.device)
        if self.weight is not None:
            w = self.weight.to(x.device)[folded].view(-1, *[1] * (x.dim() - 1))
            sums.index_add_(0, owner[folded], x[folded].float() * w)
            return sums.to(x.dtype)
        sums.index_add_(0, owner[folded], x[folded].float())
        counts = torch.bincount(owner[folded], minlength=len(self.keep)).to(sums)
        return (sums / counts.view(-1, *[1] * (x.dim() - 1))).to(x.dtype)


def chunk_quotas(keep: int, sizes: tuple[int, ...] | list[int]) -> list[int]:
    """Split `keep` tokens across chunks in proportion to their sizes; the remainder goes to the largest chunks."""
    total = sum(sizes)
    quotas = [keep * n // total for n in sizes]
    by_size = sorted(range(len(sizes)), key=lambda j: (-sizes[j], j))
    for j in by_size[: keep - sum(quotas)]:
        quotas[j] += 1
    return quotas


def _chunk_slices(sizes: tuple[int, ...]) -> list[slice]:
    starts = [0]
    for n in sizes:
        starts.append(starts[-1] + n)
    return [slice(a, b) for a, b in zip(starts[:-1], starts[1:])]


def _descending(scores: torch.Tensor) -> torch.Tensor:
    """Indices by decreasing score; ties go to the earlier token (deterministic everywhere)."""
    return torch.sort(scores.float().cpu(), descending=True, stable=True).indices


def random_tokens(tokens: VisualTokens, keep: int, seed: int, params: dict[str, Any]) -> Selection:
    """A seeded uniform random subset of the whole sample (random-drop)."""
    g = torch.Generator().manual_seed(int(seed))
    return Selection.subset(torch.randperm(tokens.count, generator=g)[:keep].sort().values, tokens.count)


def _head_mean(keys: torch.Tensor, heads: int) -> torch.Tensor:
    """Per-token keys (n, heads*head_dim) averaged over heads (n, head_dim), as VisionZip and ToMe match on."""
    return keys.float().cpu().view(keys.shape[0], max(1, heads), -1).mean(dim=1)


def visionzip_tokens(tokens: VisualTokens, keep: int, seed: int, params: dict[str, Any]) -> Selection:
    """VisionZip: dominant tokens by received ViT attention, then contextual tokens.

    Per chunk (`ranking=chunk`, default) or over the whole sample (`ranking=global`, as the authors'
    Qwen port), the quota splits into k_c = round(share · quota) contextual and the rest dominant (at
    least one). Contextual targets are taken at a uniform stride among the non-dominant tokens; every
    other non-dominant token joins the target whose key (averaged over heads, as the original) is
    most cosine-similar. `contextual_merge=add` (default, the original) gives the target its own
    feature plus the mean of its joiners; `mean` gives the mean of the target and its joiners.
    """
    if tokens.attention is None or tokens.keys is None:
        raise ValueError("visionzip needs the vision tower's attention and keys")
    share = float(params.get("contextual_share", 0.15))
    merge = str(params.get("contextual_merge", "add"))
    spans = _chunk_slices(tokens.chunk_sizes)
    quotas = chunk_quotas(keep, tokens.chunk_sizes)
    if params.get("ranking", "chunk") == "global":
        spans, quotas = [slice(0, tokens.count)], [keep]
    rep = torch.full((tokens.count,), -1, dtype=torch.long)
    weight = torch.ones(tokens.count)
    attention, keys = tokens.attention.float().cpu(), _head_mean(tokens.keys, tokens.key_heads)
    flops = 0.0
    for span, quota in zip(spans, quotas):
        if quota == 0:
            continue
        idx = torch.arange(span.start, span.stop)
        n_ctx = min(int(round(share * quota)), quota - 1)
        order = _descending(attention[span])
        dominant = idx[order[: quota - n_ctx]]
        rep[dominant] = dominant
        rest = idx[order[quota - n_ctx:]].sort().values
        if n_ctx == 0:
            continue
        stride = len(rest) // n_ctx
        is_target = torch.zeros(len(rest), dtype=torch.bool)
        is_target[torch.arange(n_ctx) * stride] = True
        targets, others = rest[is_target], rest[~is_target]
        rep[targets] = targets
        if len(others):
            sim = F.normalize(keys[others], dim=-1) @ F.normalize(keys[targets], dim=-1).T
            flops += 2.0 * len(others) * len(targets) * keys.shape[1]
            joined = targets[sim.argmax(dim=-1)]
            rep[others] = joined
            if merge == "add":  # target + mean(joiners): weight 1 on the target, 1/count on each joiner
                counts = torch.bincount(joined, minlength=tokens.count).float()
                weight[others] = 1.0 / counts[joined]
    if merge == "add":
        return Selection.from_representatives(rep, flops).with_weights(weight)
    return Selection.from_representatives(rep, flops)


def tome_tokens(tokens: VisualTokens, keep: int, seed: int, params: dict[str, Any]) -> Selection:
    """Pre-LLM ToMe, as ported to video models: per chunk, rounds of bipartite soft matching until the
    chunk's quota remains.

    Each round splits the chunk's current tokens alternately into A (even) and B (odd), matches
    every A token to its most cosine-similar B token and folds the r best-matched A tokens into
    their B partners, r = min(what is left to remove, half, ceil(`round_share` · current tokens));
    the next round's order is ToMe's output order (unmerged A by decreasing score, then B). The cap
    (default 0.2, well below ToMe's |A| = half) lets similarity, not position, pick who merges.
    The metric is the ViT keys averaged over heads (`metric=keys`, default, as ToMe) or the merged
    features (`metric=features`); a group's metric is its members' mean. Carried features are the
    group means (size-weighted averages); a group keeps its B token's position. No proportional
    attention (the LLM sees each group once).
    """
    share = float(params.get("round_share", 0.2))
    if params.get("metric", "keys") == "keys":
        if tokens.keys is None:
            raise ValueError("tome with metric=keys needs the vision tower's keys")
        metric = _head_mean(tokens.keys, tokens.key_heads)
    else:
        metric = tokens.features.float().cpu()
    rep = torch.full((tokens.count,), -1, dtype=torch.long)
    flops = 0.0
    for span, quota in zip(_chunk_slices(tokens.chunk_sizes), chunk_quotas(keep, tokens.chunk_sizes)):
        if quota == 0:
            continue
        x = metric[span]
        n = len(x)
        group = torch.arange(n)  # each token's representative within the chunk
        alive = torch.arange(n)  # current tokens in ToMe's order: unmerged A (by score), then B
        while len(alive) > quota:
            sums = torch.zeros_like(x).index_add_(0, group, x)
            current = sums[alive] / torch.bincount(group, minlength=n)[alive, None]
            a, b = torch.arange(0, len(alive), 2), torch.arange(1, len(alive), 2)
            sim = F.normalize(current[a], dim=-1) @ F.normalize(current[b], dim=-1).T
            flops += 2.0 * len(a) * len(b) * x.shape[1]
            best, partner = sim.max(dim=-1)
            r = min(len(alive) - quota, len(alive) // 2, max(1, math.ceil(share * len(alive))))
            edges = _descending(best)
            merged = edges[:r]
            src, dst = alive[a[merged]], alive[b[partner[merged]]]
            remap = torch.arange(n)
            remap[src] = dst
            group = remap[group]
            alive = torch.cat([alive[a[edges[r:]]], alive[b]])
        rep[span] = group + span.start
    return Selection.from_representatives(rep, flops)


def divprune_tokens(tokens: VisualTokens, keep: int, seed: int, params: dict[str, Any]) -> Selection:
    """DivPrune (CVPR 2025): max-min diversity over all the sample's merged visual tokens.

    Distances are 1 - cosine similarity of the features the LLM would see. The first pick is the
    token whose nearest other token is farthest; each next pick is the token whose distance to the
    picked set (its minimum over picked tokens) is largest (the authors' `DivPrune`, ties to the
    earlier token as torch.argmax).
    """
    x = tokens.features.float().cpu()
    n = len(x)
    keep = min(keep, n)
    if keep >= n:
        return Selection.subset(torch.arange(n), n)
    unit = F.normalize(x, dim=-1)
    dist = 1.0 - unit @ unit.T
    picked = torch.empty(keep, dtype=torch.long)
    picked[0] = torch.argmax(torch.topk(dist, 2, dim=0, largest=False).values[1] if n > 1 else dist[0])
    nearest = dist[picked[0]].clone()
    nearest[picked[0]] = -1.0
    for i in range(1, keep):
        picked[i] = torch.argmax(nearest)
        nearest = torch.minimum(nearest, dist[picked[i]])
        nearest[picked[:i + 1]] = -1.0  # never twice (only matters for exact duplicates)
    return Selection.subset(picked.sort().values, n, flops=2.0 * n * n * x.shape[1] + 2.0 * keep * n)


def vidcom2_tokens(tokens: VisualTokens, keep: int, seed: int, params: dict[str, Any]) -> Selection:
    """VidCom2 (EMNLP 2025): frame-adaptive budgets from frame uniqueness, then the most distinctive tokens.

    As the authors' `vidcom2_compression` on Qwen, a "frame" is one chunk (temporal patch). Features
    keep the lowest-variance half of their channels and are L2-normalised; every token is scored by
    a multi-scale Gaussian similarity (bandwidths 2^-3..2^1) to the video's mean token and to its
    frame's mean token. Frame weights p = softmax(-mean video score / `temperature`) give each frame
    the share b·(1 + p - mean p) (capped at 1): unique frames get more. Each frame keeps its lowest
    (video + frame) scores. The authors round each frame's count; here the counts are fitted to
    exactly `keep` (largest remainders), which is the authors' rounding whenever that sums to `keep`.
    Chunks of different sizes are scored per chunk size group as the authors do per video.
    """
    x = tokens.features.float().cpu()
    sizes = tokens.chunk_sizes
    n = len(x)
    if keep >= n:
        return Selection.subset(torch.arange(n), n)
    temperature = float(params.get("temperature", 0.01))
    ratio = keep / n
    variances = x.var(dim=0, unbiased=False)
    channels = torch.topk(variances, k=max(1, int(x.shape[1] * 0.5)), largest=False).indices
    sel = F.normalize(x[:, channels], dim=-1)
    vid_center = sel.mean(dim=0, keepdim=True)
    vid_score, frame_score, frame_mean = [], [], []
    for span in _chunk_slices(sizes):
        f = sel[span]
        v = _gaussian(f, vid_center)
        vid_score.append(v)
        frame_score.append(_gaussian(f, f.mean(dim=0, keepdim=True)))
        frame_mean.append(v.mean())
    scores = -torch.stack(frame_mean)
    probs = torch.softmax((scores - scores.max()) / temperature, dim=0)
    scales = (ratio * (1 + probs - probs.mean())).clamp(max=1.0)
    quotas = fitted_counts(scales * torch.tensor(sizes, dtype=torch.float32), keep, list(sizes))
    picked = []
    for span, q, v, fs in zip(_chunk_slices(sizes), quotas, vid_score, frame_score):
        if q:
            picked.append(torch.topk(v + fs, k=q, largest=False).indices.sort().values + span.start)
    flops = 12.0 * n * len(channels)
    return Selection.subset(torch.cat(picked), n, flops)


def flashvid_tokens(tokens: VisualTokens, keep: int, seed: int, params: dict[str, Any]) -> Selection:
    """FlashVID's vision-side stage (`flashvid.py`): DySeg, then per frame ADTS picks and TSTM merges."""
    if tokens.attention is None:
        raise ValueError("flashvid needs the vision tower's attention")
    if keep >= tokens.count:
        return Selection.subset(torch.arange(tokens.count), tokens.count)
    rep, flops = flashvid_representatives(tokens.features, tokens.attention, tokens.chunk_sizes,
                                          chunk_quotas(keep, tokens.chunk_sizes), params, seed)
    return Selection.from_representatives(rep, flops)


def _gaussian(x: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """VidCom2's multi-scale Gaussian kernel, bandwidths 2^-3 .. 2^1."""
    dist_sq = ((x - center) ** 2).sum(dim=-1)
    return sum(torch.exp(-dist_sq / (2 * a)) for a in [2.0 ** k for k in range(-3, 2)])


def fitted_counts(wanted: torch.Tensor, total: int, caps: list[int]) -> list[int]:
    """Integer counts near `wanted` (rounded as the authors round, at least 1) that sum to exactly `total`,
    each within [0, cap]: the shortfall or excess goes to the largest rounding remainders."""
    counts = [min(c, max(1, int(torch.round(torch.tensor(w))))) for w, c in zip(wanted.tolist(), caps)]
    residual = [w - c for w, c in zip(wanted.tolist(), counts)]
    while sum(counts) != total:
        if sum(counts) < total:
            j = max((j for j in range(len(counts)) if counts[j] < caps[j]), key=lambda j: (residual[j], -j))
            counts[j] += 1
            residual[j] -= 1
        else:
            j = max((j for j in range(len(counts)) if counts[j] > 0), key=lambda j: (-residual[j], -j))
            counts[j] -= 1
            residual[j] += 1
    return counts


REDUCERS: dict[str, Callable[[VisualTokens, int, int, dict[str, Any]], Selection]] = {
    "random": random_tokens,
    "visionzip": visionzip_tokens,
    "tome": tome_tokens,
    "divprune": divprune_tokens,
    "vidcom2": vidcom2_tokens,
    "flashvid": flashvid_tokens,
}


# Methods that prune inside the LLM (`llm.py`); every other method runs between the vision tower and the LLM.
IN_LLM_METHODS = frozenset({"fastv", "pyramiddrop"})


def needs_vision_attention(method: str, params: dict[str, Any] | None = None) -> bool:
    """Whether a pre-LLM method scores with the vision tower's attention or keys (the encoder must record them)."""
    params = params or {}
    if method == "tome":
        return params.get("metric", "keys") == "keys"
    return method in ("visionzip", "flashvid")


def reduce_visual(method: str, tokens: VisualTokens, keep: int, seed: int = 0,
                  params: dict[str, Any] | None = None) -> Selection:
    """Apply a pre-LLM reduction that keeps exactly min(keep, N) tokens."""
    if method not in REDUCERS:
        raise ValueError(f"unknown pre-LLM token reduction {method!r}; known: {', '.join(sorted(REDUCERS))}")
    return REDUCERS[method](tokens, max(0, min(keep, tokens.count)), seed, params or {})


def top_scores(scores: torch.Tensor, keep: int) -> Selection:
    """The `keep` highest-scoring tokens (FastV's selection from an attention row)."""
    keep = max(0, min(keep, len(scores)))
    return Selection.subset(_descending(scores)[:keep].sort().values, len(scores))
