"""FlashVID's vision-side compression (Fan et al., ICLR 2026; github.com/Fanziyang-v/FlashVID, `flashvid/utils.py`).

Frames are chunks (one temporal patch each, as the authors' Qwen code). Steps, with the authors'
defaults as parameters:
1. DySeg: cut the video where the cosine of adjacent frames' mean tokens is below
   `segment_threshold` (0.9); add the least similar transitions until there are `min_segments` (8).
2. Per frame, alpha (0.7) of its quota goes to ADTS: max-min diversity on (1 - cosine) distances
   scaled by the attention each token receives in the vision tower's last full-attention block.
3. The rest goes to TSTM: every other token of a frame whose most similar token in the previous
   frame is more similar than `temporal_threshold` (0.8) is folded into it (a tree over time; the
   threshold is lowered when too few tokens would remain), then each frame's remaining roots are
   clustered by DPC-kNN and each cluster becomes its centre.

Departures (see docs/strategies-baselines.md): per-frame counts are fitted so the total is exactly
the budget (the authors take ceilings and add `expansion` 1.25 for a later in-LLM stage, not run
here); carried features are true means over every folded token (the authors' running sums count a
merged token once whatever it carried); DPC's tie-breaking noise is seeded; a single-frame segment
clusters only its tokens that ADTS did not pick (the authors' code may then return one index twice).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F


def flashvid_representatives(features: torch.Tensor, attention: torch.Tensor, sizes: tuple[int, ...],
                             quotas: list[int], params: dict[str, Any], seed: int) -> tuple[torch.Tensor, float]:
    """Each visual token's representative (its kept token's index, -1 when dropped) and the scoring FLOPs."""
    n_frames, n = len(sizes), sizes[0]
    if any(s != n for s in sizes):
        raise ValueError("flashvid needs chunks of one size (a video at one resolution)")
    alpha = float(params.get("alpha", 0.7))
    x = features.float().cpu().view(n_frames, n, -1)
    attn = attention.float().cpu().view(n_frames, n)
    gen = torch.Generator().manual_seed(int(seed))
    dim = x.shape[-1]
    rep = torch.full((n_frames, n), -1, dtype=torch.long)
    flops = 0.0
    lengths = segment(x.mean(dim=1), float(params.get("segment_threshold", 0.9)), int(params.get("min_segments", 8)))
    start = 0
    for length in lengths:
        frames = list(range(start, start + length))
        start += length
        selected = torch.zeros(length, n, dtype=torch.bool)
        n_adts = [min(quotas[f], math.ceil(quotas[f] * alpha)) for f in frames]
        for j, f in enumerate(frames):
            if n_adts[j]:
                picked = adts(x[f], attn[f], n_adts[j])
                selected[j, picked] = True
                rep[f, picked] = f * n + picked
            flops += 2.0 * n * n * dim
        n_other = sum(quotas[f] for f in frames) - sum(n_adts)
        if n_other <= 0:
            continue
        roots, tam, flops_tam = temporal_tree(x[frames], ~selected, float(params.get("temporal_threshold", 0.8)),
                                              sum(quotas[f] for f in frames))
        flops += flops_tam
        is_root = torch.zeros(length * n, dtype=torch.bool)
        is_root[roots[roots >= 0]] = True
        member = roots >= 0
        frame_roots = [torch.nonzero(is_root[j * n:(j + 1) * n]).squeeze(1) + j * n for j in range(length)]
        total = sum(len(r) for r in frame_roots)
        ratio = n_other / total
        wanted = torch.tensor([len(r) * ratio for r in frame_roots])
        clusters = fitted_ceilings(wanted, n_other, [len(r) for r in frame_roots])
        center_of = torch.arange(length * n)  # root -> the root that represents its cluster
        for r, k in zip(frame_roots, clusters):
            if len(r) == 0:
                continue
            if k == 0:
                center_of[r] = -1
                continue
            if ratio >= 1.0 or k >= len(r):
                continue
            # the density's neighbourhood is the authors' (from their ceiling), so trimming only drops centres
            assign, centers = dpc_knn(tam[r], k, min(math.ceil(len(r) * ratio), 7), gen)
            flops += 2.0 * len(r) * len(r) * dim
            center_of[r] = r[centers[assign]]
        seg_rep = torch.full((length * n,), -1, dtype=torch.long)
        seg_rep[member] = center_of[roots[member]]
        for j, f in enumerate(frames):
            local = seg_rep[j * n:(j + 1) * n]
            ok = local >= 0
            rep[f, ok] = (local[ok] // n + frames[0]) * n + local[ok] % n
    return rep.view(-1), flops


def fitted_ceilings(wanted: torch.Tensor, total: int, caps: list[int]) -> list[int]:
    """The authors' ceil(count · ratio) per frame, then trimmed (largest overshoot first) to sum to `total`."""
    counts = [min(c, math.ceil(w)) for w, c in zip(wanted.tolist(), caps)]
    while sum(counts) > total:
        j = max(range(len(counts)), key=lambda j: (counts[j] - wanted[j].item() if counts[j] > 0 else -1e9, -j))
        counts[j] -= 1
    while sum(counts) < total:
        j = max((j for j in range(len(counts)) if counts[j] < caps[j]), key=lambda j: (wanted[j].item() - counts[j], -j))
        counts[j] += 1
    return counts


def segment(frame_means: torch.Tensor, threshold: float, min_segments: int) -> list[int]:
    """DySeg: segment lengths from cuts at low adjacent-frame cosine, topped up to `min_segments` (authors' `segment`)."""
    n_frames = frame_means.shape[0]
    if n_frames == 1:
        return [1]
    unit = frame_means / frame_means.norm(p=2, dim=-1, keepdim=True)
    sims = torch.sum(unit[:-1] * unit[1:], dim=-1)
    cuts = torch.where(sims < threshold)[0]
    if cuts.numel() + 1 < min_segments:
        more = min_segments - (cuts.numel() + 1)
        sims = sims.clone()
        sims[sims < threshold] = 1.0
        extra = torch.topk(sims, k=min(more, sims.shape[0]), largest=False).indices
        cuts = torch.cat([cuts, extra]).sort().values
    padded = F.pad(cuts, (1, 1), value=0)
    padded[0], padded[-1] = -1, n_frames - 1
    return [int(v) for v in torch.diff(padded) if int(v) > 0]


def adts(features: torch.Tensor, attention: torch.Tensor, k: int) -> torch.Tensor:
    """Attention- and diversity-based token selection on one frame (authors' `attn_div_based_token_selection`)."""
    n = features.shape[0]
    unit = features / features.norm(p=2, dim=-1, keepdim=True)
    dist = (1.0 - unit @ unit.T) * (attention * 1e6)[None, :]
    picked = torch.zeros(k, dtype=torch.long)
    first = torch.topk(dist, k=2, dim=0, largest=False).values[1] if n > 1 else dist[0]
    picked[0] = torch.argmax(first)
    for i in range(1, k):
        nearest = dist[picked[:i]].min(dim=0).values
        nearest[picked[:i]] = -1
        picked[i] = torch.argmax(nearest)
    return picked.sort().values


def temporal_tree(x: torch.Tensor, free: torch.Tensor, threshold: float,
                  lower_bound: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """TSTM's temporal step on one segment (authors' `spatiotemporal_compression`): each free token of frame t
    whose best match among frame t-1's free tokens exceeds the threshold joins that token's tree.

    Returns, per token (frame-major), the index of its tree's root (-1 for tokens that are not free);
    the features the authors cluster next (their running sums from the last frame back: a root is
    divided by 1 + its direct joiners, whatever those carried), which decide the clusters; the FLOPs.
    """
    length, n, dim = x.shape
    unit = x / x.norm(p=2, dim=-1, keepdim=True)
    best = torch.full((length, n), -1.0)
    anchor = torch.full((length, n), -1, dtype=torch.long)
    flops = 0.0
    for t in range(1, length):
        sim = unit[t] @ unit[t - 1].T
        sim[~free[t]] = -1.0
        sim[:, ~free[t - 1]] = -1.0
        best[t], anchor[t] = sim.max(dim=-1)
        flops += 2.0 * n * n * dim
    merge = best > threshold
    if int((~merge).sum()) < lower_bound:
        soft = best.view(-1).topk(k=length * n - lower_bound).values[-1]
        soft = max(float(soft), -1.0 + 1e-6)
        merge = best > soft
    roots = torch.full((length, n), -1, dtype=torch.long)
    for t in range(length):
        own = t * n + torch.arange(n)
        roots[t] = torch.where(merge[t], roots[t - 1][anchor[t].clamp(min=0)] if t else own, own)
        roots[t][~free[t]] = -1
    feats, counts = x.clone(), torch.ones(length, n)
    for t in range(length - 1, -1, -1):
        stay = ~merge[t]
        feats[t][stay] = feats[t][stay] / counts[t][stay, None]
        counts[t][stay] = 1
        if t and merge[t].any():
            feats[t - 1].index_add_(0, anchor[t][merge[t]], feats[t][merge[t]])
            counts[t - 1].index_add_(0, anchor[t][merge[t]], torch.ones(int(merge[t].sum())))
    return roots.view(-1), feats.view(length * n, dim), flops


def dpc_knn(x: torch.Tensor, k_clusters: int, k: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Density-peak clustering with kNN density (authors' `dpc_knn`): each point's cluster and the centres."""
    m, dim = x.shape
    dists = torch.cdist(x[None].float(), x[None].float())[0] / math.sqrt(dim)
    nearest = torch.topk(dists, k=k, dim=-1, largest=False).values
    density = torch.mean(-(nearest ** 2), dim=-1).exp()
    density = density + torch.rand(density.shape, generator=gen) * 1e-6
    higher = density[None, :] > density[:, None]
    farthest = dists.max()
    to_higher = torch.where(higher, dists, farthest).min(dim=-1).values
    centers = torch.topk(to_higher * density, k=k_clusters).indices
    assign = torch.argmin(dists[:, centers], dim=-1)
    assign[centers] = torch.arange(k_clusters)
    return assign, centers
