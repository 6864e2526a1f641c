"""An example backbone: the bundled model, told to answer tersely, under a name of its own.

A backbone is anything with the members of `resadapt_eval.core.protocols.Backbone`. This one
delegates to the bundled `tiny-bundled` model (real forward passes) and appends an instruction to
every prompt; since that changes outputs, `describe()` records it, so it enters the config hash.
Registered by name, it is chosen with `--backbone tiny-bundled-terse`.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from resadapt_eval.backbones import BUNDLED_NAME, load_backbone, register
from resadapt_eval.core.types import Frames, Output, Plan

INSTRUCTION = "\nAnswer with one letter or one number only."


@register("tiny-bundled-terse")
class TerseBundled:
    def __init__(self, source: str, options: Any):
        # `options` are --device, --dtype, --attn, --text-resume, --trust-remote-code (a LoadOptions).
        self.inner = load_backbone(BUNDLED_NAME, **asdict(options))
        self.name = source                      # the results directory's backbone part
        self.geometry = self.inner.geometry     # token accounting: patch, merge, temporal patch, pixels
        self.config = self.inner.config
        self.device = self.inner.device
        self.fingerprint = self.inner.fingerprint

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "name": self.name, "instruction": INSTRUCTION}

    # What a learned planner may look through (Context.backbone).
    def encode_chunks(self, plan: Plan, frames: Frames):
        return self.inner.encode_chunks(plan, frames)

    def embed_text(self, text: str):
        return self.inner.embed_text(text)

    # What the runner calls: prepare (possibly in a prefetch thread), then execute.
    def prepare(self, plan: Plan, frames: Frames, prompt: str) -> Any:
        return self.inner.prepare(plan, frames, prompt + INSTRUCTION)

    def execute(self, plan: Plan, frames: Frames, prompt: str, max_new_tokens: int,
                prepared: Any = None) -> Output:
        return self.inner.execute(plan, frames, prompt + INSTRUCTION, max_new_tokens, prepared=prepared)
