"""Prefill and greedy decode steps of a Qwen-VL language model, whole or layer by layer.

`StockLM` calls the language model's own forward: used whenever every layer sees the same
sequence (vanilla and pre-LLM reductions). `LayerwiseLM` drives the decoder layers one by one
with transformers' own rotary embedding, causal-mask builders and `DynamicCache`, so that the
sequence can shrink after layer K (FastV): layers < K run on (and cache) the full sequence,
layers >= K the kept tokens. Kept tokens keep their M-RoPE cos/sin (sliced from the full
sequence's), masks are built per layer against that layer's own cache length, and decode steps
take explicit positions, so the per-layer cache lengths never matter.

FastV's score is the last token's attention row at layer K-1, averaged over heads. It is
recomputed from that layer's input and cached keys (`last_query_attention`), which works under
sdpa and flash-attn (neither returns weights) without switching the model to eager.
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


@dataclass(frozen=True)
class InLLMPrune:
    """Keep the `keep` visual tokens the last token attends to most at layer `layer` - 1, for layers >= `layer`."""

    layer: int
    keep: int


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
                deepstack: list[torch.Tensor], prune: InLLMPrune) -> Prefill:
        """Layers 0..K-1 on the full sequence, FastV's selection, layers K..L-1 on the kept tokens."""
        n_layers = len(self.lm.layers)
        if not 1 <= prune.layer < n_layers:
            raise ValueError(f"in-LLM pruning needs 1 <= layer < {n_layers} (this LLM's layers), got {prune.layer}")
        cache = DynamicCache(config=self.config)
        cos_sin = self.lm.rotary_emb(embeds, pos)
        hidden = embeds
        mask = self._masks(hidden, cache)
        kept = torch.arange(embeds.shape[1], device=embeds.device)
        layer_tokens, layer_visual = [], []
        layer_input = hidden
        for i in range(n_layers):
            if i == prune.layer:
                row = last_query_attention(self.lm.layers[i - 1], layer_input, cos_sin, cache.layers[i - 1].keys)
                vis_idx = visual.nonzero().squeeze(1)
                chosen = top_scores(row[vis_idx], prune.keep).keep.to(vis_idx.device)
                kept = torch.cat([(~visual).nonzero().squeeze(1), vis_idx[chosen]]).sort().values
                hidden, visual = hidden[:, kept], visual[kept]
                cos_sin = tuple(t[:, kept] for t in cos_sin)
                deepstack = [d[chosen.to(d.device)] for d in deepstack]
                mask = self._masks(hidden, cache)
            layer_input = hidden
            hidden = self._layer(i, hidden, mask, cos_sin, cache)
            if i < len(deepstack):
                hidden = self.lm._deepstack_process(hidden, visual[None], deepstack[i])
            layer_tokens.append(hidden.shape[1])
            layer_visual.append(int(visual.sum()))
        hidden = self.lm.norm(hidden)
        return Prefill(hidden[:, -1], cache, layer_tokens, layer_visual, kept)

    def step(self, embeds: torch.Tensor, pos: torch.Tensor, cache: DynamicCache) -> torch.Tensor:
        """One greedy step at explicit positions over a cache whose layers may hold different lengths."""
        cos_sin = self.lm.rotary_emb(embeds, pos)
        mask = self._masks(embeds, cache)
        hidden = embeds
        for i in range(len(self.lm.layers)):
            hidden = self._layer(i, hidden, mask, cos_sin, cache)
        return self.lm.norm(hidden)[:, -1]


def last_query_attention(layer: torch.nn.Module, layer_input: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor],
                         keys: torch.Tensor) -> torch.Tensor:
    """Head-mean attention of the last position over all keys, as `layer` computed it (eager's weights, last row).

    The query is rebuilt from the layer's input with its own norm, q projection, q norm (Qwen3) and
    M-RoPE; the keys are the layer's cached keys (already projected, normed and rotated).
    """
    attn = layer.self_attn
    h = layer.input_layernorm(layer_input[:, -1:])
    q = attn.q_proj(h).view(1, 1, -1, attn.head_dim)
    if hasattr(attn, "q_norm"):
        q = attn.q_norm(q)
    q = q.transpose(1, 2)
    rotary = sys.modules[type(attn).__module__].apply_rotary_pos_emb
    cos, sin = (t[:, -1:] for t in cos_sin)
    q, _ = rotary(q, q, cos, sin)
    k = keys.repeat_interleave(attn.num_key_value_groups, dim=1)
    weights = torch.softmax(torch.matmul(q, k.transpose(2, 3)) * attn.scaling, dim=-1, dtype=torch.float32)
    return weights[0, :, 0].mean(dim=0)
