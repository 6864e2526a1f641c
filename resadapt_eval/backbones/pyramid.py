"""PyramidDrop's stage schedule (Xing et al., CVPR 2025; github.com/Cooperx521/PyramidDrop) under an exact budget.

The authors drop visual tokens after layers 8, 16 and 24 of a 32-layer LLM, keeping lambda = 0.5 of
them at each stage (`--layer_list '[8,16,24]' --image_token_ratio_list "[0.5,0.25,0.125]"`). Here the
stage boundaries are the same fractions of the LLM's depth (option `layers`, default 0.25,0.5,0.75)
and each stage keeps `ratio` (lambda, default 0.5) of the previous stage's tokens. The first stage
sees every visual token, as in the original. The budget is the mean number of visual tokens over
the layers that prune (layers >= the first boundary), as FastV's is what layers >= K see: the count
after the first drop is the smallest that brings that mean to floor(b·N) (its floor is exactly the
budget). The record also carries the mean over all layers (`llm_visual_tokens`).
"""

from __future__ import annotations

from typing import Any


def stage_layers(n_layers: int, fractions: tuple[float, ...]) -> list[int]:
    """Drop points (the layer about to run) at fractions of the depth, within [1, n_layers - 1], deduplicated."""
    return sorted({min(n_layers - 1, max(1, round(f * n_layers))) for f in fractions})


def pyramid_schedule(n_layers: int, n_visual: int, keep: int, params: dict[str, Any]) -> tuple[tuple[int, int], ...]:
    """((layer, visual tokens kept from that layer on), ...) whose mean over layers >= the first drop floors to `keep`."""
    if keep >= n_visual or n_layers < 2:
        return ()
    fractions = tuple(float(f) for f in str(params.get("layers", "0.25,0.5,0.75")).split(","))
    ratio = float(params.get("ratio", 0.5))
    layers = stage_layers(n_layers, fractions)
    spans = [b - a for a, b in zip(layers, layers[1:] + [n_layers])]
    target = (n_layers - layers[0]) * keep

    def counts(first: int) -> list[int]:
        return [max(1, min(first, round(first * ratio ** i))) for i in range(len(layers))]

    for first in range(keep, n_visual + 1):
        c = counts(first)
        if sum(s * n for s, n in zip(spans, c)) >= target:
            return tuple(zip(layers, c))
    return tuple((layer, keep) for layer in layers)  # lambda too small to reach it from N: flat at the budget
