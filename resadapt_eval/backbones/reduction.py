"""Visual-token reduction: which merged visual tokens reach the LLM, and what each one carries.

Every method returns a `Selection`: the kept tokens (sorted indices into the visual tokens; each
kept token keeps its own M-RoPE position) and, for merging methods, the kept token each dropped
token was folded into. `Selection.gather` then turns any per-token tensor (the features, and
Qwen3-VL's deepstack features alike) into what the kept tokens carry: the mean over the tokens
folded into them, which is ToMe's size-weighted average after any number of rounds.

Pre-LLM methods (`REDUCERS`, by `Reduction.method`): `random`, `visionzip`, `tome`. FastV selects
inside the LLM from an attention row (`top_scores`); the layer-wise driver in `llm.py` calls it.
Methods that spend a budget per chunk split it with `chunk_quotas`, so every chunk of a video (or
the one image) is reduced on its own and the total kept is exactly the budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F


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

    @property
    def count(self) -> int:
        return int(self.features.shape[0])


@dataclass(frozen=True)
class Selection:
    """Kept visual tokens (sorted indices) and, per visual token, the kept slot it was folded into (-1: dropped)."""

    keep: torch.Tensor
    owner: torch.Tensor

    @classmethod
    def from_representatives(cls, rep: torch.Tensor) -> "Selection":
        """From each token's representative (a kept token's index, itself for kept tokens; -1 when dropped)."""
        rep = rep.long()
        keep = torch.unique(rep[rep >= 0])
        owner = torch.full_like(rep, -1)
        folded = rep >= 0
        owner[folded] = torch.searchsorted(keep, rep[folded])
        return cls(keep=keep, owner=owner)

    @classmethod
    def subset(cls, keep: torch.Tensor, n: int) -> "Selection":
        """A plain selection: the kept tokens carry only themselves."""
        rep = torch.full((n,), -1, dtype=torch.long)
        keep = keep.long().cpu()
        rep[keep] = keep
        return cls.from_representatives(rep)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Rows of x (one per visual token) for the kept tokens: the mean over the tokens folded into each."""
        owner = self.owner.to(x.device)
        folded = owner >= 0
        sums = torch.zeros(len(self.keep), *x.shape[1:], dtype=torch.float32, device=x.device)
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


def visionzip_tokens(tokens: VisualTokens, keep: int, seed: int, params: dict[str, Any]) -> Selection:
    """VisionZip per chunk: dominant tokens by received ViT attention, then contextual tokens.

    The chunk's quota splits into k_c = round(share · quota) contextual and the rest dominant (at
    least one). Contextual targets are taken at a uniform stride among the non-dominant tokens;
    every other non-dominant token joins the target whose ViT key is most cosine-similar, and the
    target carries the mean of itself and its joiners (VisionZip's code adds the joiners' mean to
    the target instead; a mean keeps features on the scale the LLM was trained on).
    """
    if tokens.attention is None or tokens.keys is None:
        raise ValueError("visionzip needs the vision tower's attention and keys")
    share = float(params.get("contextual_share", 0.15))
    rep = torch.full((tokens.count,), -1, dtype=torch.long)
    attention, keys = tokens.attention.float().cpu(), tokens.keys.float().cpu()
    for span, quota in zip(_chunk_slices(tokens.chunk_sizes), chunk_quotas(keep, tokens.chunk_sizes)):
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
            rep[others] = targets[sim.argmax(dim=-1)]
    return Selection.from_representatives(rep)


def tome_tokens(tokens: VisualTokens, keep: int, seed: int, params: dict[str, Any]) -> Selection:
    """ToMe per chunk: bipartite soft matching on the merged features until the chunk's quota remains.

    Each round splits the chunk's current tokens alternately into A (even) and B (odd), matches
    every A token to its most cosine-similar B token, and folds the r best-matched A tokens into
    their B partners (r = what is left to remove, at most |A|). Current features are the means of
    the folded groups (size-weighted averages); a group keeps its B token's position.
    """
    rep = torch.full((tokens.count,), -1, dtype=torch.long)
    feats = tokens.features.float().cpu()
    for span, quota in zip(_chunk_slices(tokens.chunk_sizes), chunk_quotas(keep, tokens.chunk_sizes)):
        if quota == 0:
            continue
        x = feats[span]
        n = len(x)
        group = torch.arange(n)  # each token's representative within the chunk
        alive = torch.arange(n)
        while len(alive) > quota:
            sums = torch.zeros_like(x).index_add_(0, group, x)
            current = sums[alive] / torch.bincount(group, minlength=n)[alive, None]
            a, b = torch.arange(0, len(alive), 2), torch.arange(1, len(alive), 2)
            sim = F.normalize(current[a], dim=-1) @ F.normalize(current[b], dim=-1).T
            best, partner = sim.max(dim=-1)
            r = min(len(alive) - quota, len(a))
            merged = _descending(best)[:r]
            src, dst = alive[a[merged]], alive[b[partner[merged]]]
            remap = torch.arange(n)
            remap[src] = dst
            group = remap[group]
            gone = torch.zeros(n, dtype=torch.bool)
            gone[src] = True
            alive = alive[~gone[alive]]
        rep[span] = group + span.start
    return Selection.from_representatives(rep)


REDUCERS: dict[str, Callable[[VisualTokens, int, int, dict[str, Any]], Selection]] = {
    "random": random_tokens,
    "visionzip": visionzip_tokens,
    "tome": tome_tokens,
}

# Methods that score tokens with the vision tower's own attention (the encoder must record it).
NEEDS_VISION_ATTENTION = frozenset({"visionzip"})


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
