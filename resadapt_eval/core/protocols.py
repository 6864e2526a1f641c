"""The written contract of a backbone: what the runner calls, and the part a strategy may see.

A backbone is any object with these members (structural typing: no base class to inherit).
`BackboneView` is what a strategy gets in `Context.backbone`: the name and geometry, and the
frozen parts a learned planner looks through (vision tower, text embeddings). `Backbone` adds
what only the runner uses: identity for the config hash, and plan execution.

The strategy contract is `resadapt_eval.core.strategy.Strategy`; the task adapter contract is
`resadapt_eval.adapters.base.TaskAdapter` (it is typed against the task card, which lives there).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from resadapt_eval.core.budget import Geometry
from resadapt_eval.core.types import Frames, Output, Plan


@runtime_checkable
class BackboneView(Protocol):
    """What a strategy may use of the loaded backbone."""

    name: str           # the results directory's backbone part
    geometry: Geometry  # patch, merge, temporal patch and pixel limits, read from the checkpoint
    config: Any         # the model's config (e.g. `text_config.hidden_size` sizes a planner's features)

    def encode_chunks(self, plan: Plan, frames: Frames) -> tuple[list[Any], float]:
        """The vision tower's merged-token features of every chunk of `plan`, and the FLOPs spent."""
        ...

    def embed_text(self, text: str) -> Any:
        """The LLM's input embeddings of `text`, shape (tokens, hidden)."""
        ...


@runtime_checkable
class Backbone(BackboneView, Protocol):
    """Executes plans: the runner's side of a backbone."""

    device: Any                   # a torch.device; the runner prefetches ahead on CUDA only
    fingerprint: dict[str, Any]   # digest of the weights ({"sha256": ...}), recorded in the manifest

    def describe(self) -> dict[str, Any]:
        """Everything about the backbone that changes outputs (goes into the config hash)."""
        ...

    def prepare(self, plan: Plan, frames: Frames, prompt: str) -> Any:
        """The model inputs of a plan, built before the model runs (possibly in a prefetch thread)."""
        ...

    def execute(self, plan: Plan, frames: Frames, prompt: str, max_new_tokens: int,
                prepared: Any = None) -> Output:
        """Run one plan: the answer, exact visual-token counts (must equal `plan.tokens`), timings, FLOPs."""
        ...
