"""FastV (arXiv 2403.06764): the full input through layers 0..K-1, then only the budget's visual tokens.

The visual tokens kept for layers K.. are those the last prompt token attends to most at layer
K-1 (head mean). The plan's token count is what layers >= K see, i.e. exactly the budget; the
record also gives the visual tokens at the input (`llm_visual_tokens_input`) and their mean over
layers (`llm_visual_tokens`).
"""

from __future__ import annotations

import json
from pathlib import Path

from resadapt_eval.core.types import Plan, UserError
from resadapt_eval.strategies import register
from resadapt_eval.core.strategy import Context, check_share, reduced_plan


@register("fastv")
class FastV:
    """Options: `layer` K (default 2, as the paper), `frame_share` (uniform frames first, default 1)."""

    name = "fastv"

    def __init__(self, layer: int = 2, frame_share: float = 1.0):
        if not isinstance(layer, int) or isinstance(layer, bool) or layer < 1:
            raise UserError(f"strategy option layer must be an integer >= 1, got {layer!r}")
        self.layer = layer
        self.frame_share = check_share("frame_share", frame_share)

    def check_backbone(self, name: str, folder: Path | None = None) -> None:
        """Before the model loads (a sweep's first configuration): K must be below the LLM's depth,
        read from the checkpoint's config.json where the folder is known."""
        config = Path(folder) / "config.json" if folder is not None else None
        if config is None or not config.is_file():
            return
        raw = json.loads(config.read_text())
        n_layers = (raw.get("text_config") or {}).get("num_hidden_layers", raw.get("num_hidden_layers"))
        if isinstance(n_layers, int) and not 1 <= self.layer < n_layers:
            raise UserError(f"fastv prunes after layer K with 1 <= K < {n_layers} on the {n_layers}-layer LLM of "
                            f"backbone {name!r}, got K={self.layer}; pass layer=K (fastv+layer=K or "
                            f"--strategy-option layer=K)")

    def plan(self, ctx: Context) -> Plan:
        return reduced_plan(ctx, "fastv", layer=self.layer, frame_share=self.frame_share)
