"""Prefill and greedy decode steps of a Qwen-VL language model, whole or layer by layer.

`StockLM` calls the language model's own forward: used whenever every layer sees the same
sequence (vanilla and pre-LLM reductions). `LayerwiseLM` drives the decoder layers one by one
with transformers' own rotary embedding, causal-mask builders and `DynamicCache`, so that the
sequence can shrink after layer K (FastV): layers < K run on (and cache) the full sequence,
layers >= K the kept tokens. Kept tokens keep their M-RoPE cos/sin (sliced from the full
sequence's), masks are built per layer against that layer's own cache length, and decode steps
take explicit positions, so the per-layer cache lengths never matter.

FastV's score is the last token's attention row at layer K-1, averaged over heads, as in the
authors' code (the paper describes the mean attention a token receives). It is recomputed from
that layer's input and cached keys (`last_query_attention`), which works under sdpa and flash-attn
(neither returns weights) without switching the model to eager. PyramidDrop (`Staged`) drops at
several layers; at each it scores with the last token's attention row of the layer about to run,
its query and keys computed from that layer's (unpruned) input, as the authors' `pdrop_rank_drop`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import DynamicCache
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

from resadapt_eval.backbones.reduction import top_scores


@dataclass
class Prefill:
    """The prefill's result: the normed hidden state of the last position, the cache, and what each layer saw."""

    last_hidden: torch.Tensor
    cache: Any
    layer_tokens: list[int]
    layer_visual: list[int]
    kept: torch.Tensor | None = None
    scoring_flops: float = 0.0


@dataclass(frozen=True)
class InLLMPrune:
    """Keep the `keep` visual tokens the last token attends to most at layer `layer` - 1, for layers >= `layer`."""

    layer: int
    keep: int


@dataclass(frozen=True)
class Staged:
    """PyramidDrop: before layer `stages[i][0]`, keep the `stages[i][1]` visual tokens the last token
    attends to most in that layer (its own query and keys on its input)."""

    stages: tuple[tuple[int, int], ...]


class StockLM:
    """The language model's own forward, for sequences that every layer sees whole."""

    def __init__(self, lm: torch.nn.Module):
        self.lm = lm

    def prefill(self, embeds: torch.Tensor, pos: torch.Tensor, visual: torch.Tensor,
                deepstack: list[torch.Tensor]) -> Prefill:
        kwargs: dict[str, Any] = {}
        if deepstack:
            kwargs = {"visual_pos_masks": visual[None], "deepstack_visual_embeds": deepstack}
        out = self.lm(inputs_embeds=embeds, position_ids=pos, use_cache=True, **kwargs)
        n_layers = len(self.lm.layers)
        return Prefill(out.last_hidden_state[:, -1], out.past_key_values, [embeds.shape[1]] * n_layers,
                       [int(visual.sum())] * n_layers)

    def step(self, embeds: torch.Tensor, pos: torch.Tensor, cache: Any) -> torch.Tensor:
        out = self.lm(inputs_embeds=embeds, position_ids=pos, past_key_values=cache, use_cache=True)
        return out.last_hidden_state[:, -1]


class LayerwiseLM:
    """Decoder layers run one by one, so the sequence may shrink between two layers (FastV)."""

    def __init__(self, lm: torch.nn.Module):
        self.lm = lm
        self.config = lm.config
        n = len(lm.layers)
        self.layer_types = list(getattr(self.config, "layer_types", None) or ["full_attention"] * n)

    def _masks(self, hidden: torch.Tensor, cache: DynamicCache):
        """Per-layer causal masks sized against each layer's cache (built once per distinct size)."""
        made: dict[tuple, Any] = {}
        q = hidden.shape[1]

        def mask(i: int) -> Any:
            kind = self.layer_types[i]
            key = (kind, *cache.get_mask_sizes(q, i))
            if key not in made:
                build = create_sliding_window_causal_mask if kind == "sliding_attention" else create_causal_mask
                made[key] = build(config=self.config, inputs_embeds=hidden, attention_mask=None,
                                  past_key_values=cache, position_ids=None, layer_idx=i)
            return made[key]
        return mask

    def _layer(self, i: int, hidden: torch.Tensor, mask: Any, cos_sin: tuple, cache: DynamicCache) -> torch.Tensor:
        return self.lm.layers[i](hidden, attention_mask=mask(i), position_embeddings=cos_sin, position_ids=None,
                                 past_key_values=cache, use_cache=True)

    def prefill(self, embeds: torch.Tensor, pos: torch.Tensor, visual: torch.Tensor,
                deepstack: list[torch.Tensor], prune: InLLMPrune | Staged) -> Prefill:
        """Layers run on the full sequence until a pruning layer, then on the kept tokens (FastV once after
        layer K-1's attention; PyramidDrop at each stage with the next layer's own attention)."""
        n_layers = len(self.lm.layers)
        if isinstance(prune, InLLMPrune):
            stages, fresh = {prune.layer: prune.keep}, False
        else:
            stages, fresh = dict(prune.stages), True
        for layer in stages:
            if not 1 <= layer < n_layers:
                raise ValueError(f"in-LLM pruning needs 1 <= layer < {n_layers} (this LLM's layers), got {layer}")
        cache = DynamicCache(config=self.config)
        cos_sin = self.lm.rotary_emb(embeds, pos)
        hidden = embeds
        mask = self._masks(hidden, cache)
        kept = torch.arange(embeds.shape[1], device=embeds.device)
        layer_tokens, layer_visual = [], []
        layer_input = hidden
        rank = torch.cumsum(visual.long(), 0) - 1  # each visual token's row in the deepstack features
        flops = 0.0
        for i in range(n_layers):
            if i in stages:
                if fresh:
                    row = last_query_attention(self.lm.layers[i], hidden, cos_sin, None)
                else:
                    row = last_query_attention(self.lm.layers[i - 1], layer_input, cos_sin, cache.layers[i - 1].keys)
                flops += _row_flops(self.lm.layers[i], hidden.shape[1], fresh)
                vis_idx = visual.nonzero().squeeze(1)
                chosen = top_scores(row[vis_idx], stages[i]).keep.to(vis_idx.device)
                here = torch.cat([(~visual).nonzero().squeeze(1), vis_idx[chosen]]).sort().values
                kept = kept[here]
                hidden, visual = hidden[:, here], visual[here]
                cos_sin = tuple(t[:, here] for t in cos_sin)
                mask = self._masks(hidden, cache)
            layer_input = hidden
            hidden = self._layer(i, hidden, mask, cos_sin, cache)
            if i < len(deepstack):
                ds = deepstack[i][rank[kept[visual]].to(deepstack[i].device)]
                hidden = self.lm._deepstack_process(hidden, visual[None], ds)
            layer_tokens.append(hidden.shape[1])
            layer_visual.append(int(visual.sum()))
        hidden = self.lm.norm(hidden)
        return Prefill(hidden[:, -1], cache, layer_tokens, layer_visual, kept, flops)

    def step(self, embeds: torch.Tensor, pos: torch.Tensor, cache: DynamicCache) -> torch.Tensor:
        """One greedy step at explicit positions over a cache whose layers may hold different lengths."""
        cos_sin = self.lm.rotary_emb(embeds, pos)
        mask = self._masks(embeds, cache)
        hidden = embeds
        for i in range(len(self.lm.layers)):
            hidden = self._layer(i, hidden, mask, cos_sin, cache)
        return self.lm.norm(hidden)[:, -1]


def _row_flops(layer: torch.nn.Module, n: int, with_keys: bool) -> float:
    """FLOPs of one recomputed last-query attention row over n keys (plus the keys' projection when fresh)."""
    attn = layer.self_attn
    d = attn.q_proj.in_features
    flops = 2.0 * d * attn.q_proj.out_features + 2.0 * n * attn.q_proj.out_features
    if with_keys:
        flops += 2.0 * n * d * attn.k_proj.out_features
    return flops


def last_query_attention(layer: torch.nn.Module, layer_input: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor],
                         keys: torch.Tensor | None) -> torch.Tensor:
    """Head-mean attention of the last position over all keys, as `layer` computes it (eager's weights, last row).

    The query is rebuilt from the layer's input with its own norm, q projection, q norm (Qwen3) and
    M-RoPE; the keys are the layer's cached keys (already projected, normed and rotated), or, when
    `keys` is None, projected here from the same input (the layer has not run yet: PyramidDrop).
    """
    attn = layer.self_attn
    rotary = sys.modules[type(attn).__module__].apply_rotary_pos_emb
    if keys is None:
        h_all = layer.input_layernorm(layer_input)
        k = attn.k_proj(h_all).view(1, h_all.shape[1], -1, attn.head_dim)
        if hasattr(attn, "k_norm"):
            k = attn.k_norm(k)
        k = k.transpose(1, 2)
        _, keys = rotary(k, k, *cos_sin)
    h = layer.input_layernorm(layer_input[:, -1:])
    q = attn.q_proj(h).view(1, 1, -1, attn.head_dim)
    if hasattr(attn, "q_norm"):
        q = attn.q_norm(q)
    q = q.transpose(1, 2)
    cos, sin = (t[:, -1:] for t in cos_sin)
    q, _ = rotary(q, q, cos, sin)
    k = keys.repeat_interleave(attn.num_key_value_groups, dim=1)
    weights = torch.softmax(torch.matmul(q, k.transpose(2, 3)) * attn.scaling, dim=-1, dtype=torch.float32)
    return weights[0, :, 0].mean(dim=0)
