"""ResAdapt, as published: a question-aware policy gives every frame its resolution before encoding.

A frozen small vision-language encoder (its own model, not the backbone) looks at every frame and
at the question; a trained head outputs one Beta per frame over [0.2, 2.0] and the evaluation action
is the Beta mean (`allocator/frame_model.py`). A chunk's scale is the mean of its frames' scales;
each chunk is resized by it per side and snapped to the backbone's grid (the same operator as
`uniform-scale`), capped at 768 tokens per video chunk (16,384 per image) as the original, so the
policy may upscale. Nothing is dropped and nothing is projected: the sample costs what the policy
chose, and records and the frontier place the run at the tokens it actually spent.

The budget steers the whole range the way the paper does at test time, by remapping min/max scale:
`steer=remap` (default) multiplies both by k = sqrt(budget / level), where `level` is the token
retention the allocator's own action spent on its training prompts (stored when it was trained; per
task for the tasks it was trained on, whose videos it spends differently on, else over all), so the
mean retention lands near the budget; `steer=none` uses the allocator as trained whatever the
budget; `min_scale=`/`max_scale=` set the range explicitly (the original's ALLOCATOR_MIN/MAX_SCALE).

The exact-budget chunk selector that this harness shipped before is `resadapt-budget`.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import replace
from pathlib import Path

from resadapt_eval.allocator.external import chunk_scales, is_external, load_external, refuse_untrusted
from resadapt_eval.allocator.model import CONFIG_NAME, WEIGHTS_NAME, head_type
from resadapt_eval.core.strategy import Context, even_plan
from resadapt_eval.core.types import Plan, UserError
from resadapt_eval.strategies import register

BUNDLED = Path(__file__).resolve().parents[1] / "assets" / "allocator" / "resadapt"
STEERS = ("remap", "none")
VIDEO_CHUNK_CAP_TOKENS, IMAGE_CAP_TOKENS = 768, 16384  # the original operator's caps (resadapt.md section 2)


def scaled_chunk_size(ctx: Context, scale: float) -> tuple[int, int]:
    """A chunk (or image) resized by `scale` per side, snapped, within the original's token caps."""
    g, kind = ctx.geometry, ctx.frames.kind
    if scale <= 1:
        return g.scaled_size(kind, ctx.vanilla_hw, scale)
    cap_tokens = IMAGE_CAP_TOKENS if kind == "image" else VIDEO_CHUNK_CAP_TOKENS
    cap = min(cap_tokens * g.factor ** 2, g.chunk_cap_pixels(kind))
    return g.scaled_size(kind, ctx.vanilla_hw, scale, cap_pixels=max(cap, ctx.vanilla_hw[0] * ctx.vanilla_hw[1]))


def frame_plan(ctx: Context, frame_scales: list[float]) -> Plan:
    """Per-frame scales -> a plan over every frame, each chunk at the mean scale of its frames."""
    n = ctx.frames.count
    step = 1 if ctx.frames.kind == "image" else ctx.geometry.temporal_patch_size
    scales = chunk_scales([float(s) for s in frame_scales], n, step)
    sizes = [scaled_chunk_size(ctx, s) for s in scales]
    plan = even_plan(ctx, list(range(n)), sizes, scales=scales)
    note = "" if plan.tokens <= ctx.limit else \
        "resadapt spends what its policy chooses: the budget steers its mean, not each sample"
    return replace(plan, note=note)


@register("resadapt")
class ResAdapt:
    name = "resadapt"
    allocator_kinds = ("resadapt_eval_frame_allocator", "smol_allocator")

    def __init__(self, allocator: str | None = None, encoder: str | None = None, steer: str | None = None,
                 min_scale: float | None = None, max_scale: float | None = None, action: str | None = None,
                 trust_remote_code: bool = False):
        self.path = Path(allocator) if allocator else BUNDLED
        self.external = bool(allocator) and is_external(self.path)
        if self.external:
            refuse_untrusted(self.path, trust_remote_code)
        elif allocator and head_type(self.path) != "resadapt_eval_frame_allocator":
            kind = head_type(self.path) or "no allocator_config.json"
            hint = " (a resadapt-budget allocator: use --strategy resadapt-budget)" if kind == "resadapt_eval_allocator" \
                else ""
            raise UserError(f"allocator {allocator!r} is not a resadapt allocator ({kind}){hint}; train one with "
                            f"`resadapt-eval train-resadapt`")
        if allocator and not self.external and not (self.path / WEIGHTS_NAME).is_file():
            raise UserError(f"allocator {allocator!r} has no {WEIGHTS_NAME}; train one with `resadapt-eval train-resadapt`")
        if steer not in (None, *STEERS):
            raise UserError(f"strategy option steer must be one of {', '.join(STEERS)}, got {steer!r}")
        if (min_scale is None) != (max_scale is None):
            raise UserError("strategy options min_scale and max_scale go together (the original remaps both)")
        if min_scale is not None and not 0 < float(min_scale) < float(max_scale):
            raise UserError(f"need 0 < min_scale < max_scale, got {min_scale}, {max_scale}")
        if action not in (None, "mean", "mode"):
            raise UserError(f"strategy option action must be mean or mode, got {action!r}")
        if steer == "remap" and min_scale is not None:
            raise UserError("steer=remap computes the range from the budget; drop it or min_scale/max_scale")
        if self.external and steer == "remap":
            raise UserError("an original smol_allocator records no trained cost level; use steer=none or "
                            "min_scale=/max_scale= (the original's test-time knob)")
        self.encoder = encoder
        self.steer = "none" if min_scale is not None or self.external else (steer or "remap")
        self.range = None if min_scale is None else (float(min_scale), float(max_scale))
        self.action = action
        self.trust_remote_code = trust_remote_code
        self._policy = None
        self._originals: dict[int, object] = {}
        self._levels: dict[str, float] | None = None  # trained cost levels ("all" and per task), read on first use

    def check_backbone(self, name: str, folder: Path | None = None) -> None:
        """The allocator does not depend on the backbone; it only has to exist."""
        if not (self.path / CONFIG_NAME).is_file() and not self.external:
            raise UserError(f"no resadapt allocator at {self.path}; train one with `resadapt-eval train-resadapt` "
                            f"and pass --allocator FOLDER")

    def _config(self) -> dict:
        return json.loads((self.path / ("config.json" if self.external else CONFIG_NAME)).read_text())

    def describe(self, backbone) -> dict:
        """Digests of the allocator's weights and its config (without the training log) for the config
        hash, and its trained cost level (which `steer=remap` reads)."""
        self.check_backbone(backbone.name)
        digests = {f.name: hashlib.sha256(f.read_bytes()).hexdigest()[:16]
                   for f in sorted(self.path.iterdir()) if f.suffix in (".safetensors", ".py")}
        config = self._config()
        trained = config.pop("trained", {})
        return {"allocator_files": digests, "allocator_config": config, "cost_level": trained.get("cost_level"),
                "cost_levels": trained.get("cost_levels"),
                "encoder_override": self.encoder}

    def policy(self):
        if self._policy is None:
            from resadapt_eval.allocator.frame_policy import FramePolicy

            self._policy = FramePolicy.load(self.path, self.encoder)
            if self.action is not None:
                self._policy.set_action(self.action)
        return self._policy

    def factor(self, ctx: Context) -> float:
        """How much the allocator's scales are multiplied by for this budget (1 with steer=none)."""
        if self.steer == "none":
            return 1.0
        if self._levels is None:  # read once, not per sample
            trained = self._config().get("trained", {})
            self._levels = {**(trained.get("cost_levels") or {}), "all": trained.get("cost_level") or 0.0}
        level = self._levels.get(ctx.task) or self._levels["all"]  # a task it trained on: its own level
        if not level:
            raise UserError(f"allocator {str(self.path)!r} records no trained cost level; run it with "
                            f"steer=none or min_scale=/max_scale=")
        return math.sqrt((ctx.limit / ctx.vanilla_tokens) / float(level))

    def original(self, n_frames: int):
        """An original ResAdapt allocator, loaded as its evaluation loads it: max_frames = the frames the
        backbone gets, and min/max scale when given (one load per frame count)."""
        if n_frames not in self._originals:
            overrides: dict = {"max_frames": n_frames}
            if self.range is not None:
                overrides.update(min_scale=self.range[0], max_scale=self.range[1])
            self._originals[n_frames] = load_external(self.path, self.trust_remote_code, overrides)
        return self._originals[n_frames]

    def frame_scales(self, ctx: Context) -> tuple[list[float], float, float]:
        """(per-frame scales after steering, planner FLOPs, planner seconds)."""
        if self.external:  # its scales come per chunk (means of its per-frame ones); its range is set on load
            proposal = self.original(ctx.frames.count).propose(ctx)
            step = 1 if ctx.frames.kind == "image" else ctx.geometry.temporal_patch_size
            per_frame = [proposal.scales[i // step] for i in range(ctx.frames.count)]
            return per_frame, proposal.flops, proposal.seconds
        policy = self.policy()
        question = ctx.sample.question or ctx.sample.prompt
        proposal = policy.propose(ctx.frames.pixels, question)
        scales = list(proposal.scales)
        if self.range is not None:  # the original's test-time knob: the same action on a new range
            c = policy.head.config
            lo, hi = self.range
            scales = [lo + (s - c.min_scale) / (c.max_scale - c.min_scale) * (hi - lo) for s in scales]
        else:
            k = self.factor(ctx)
            scales = [s * k for s in scales]
        return scales, proposal.flops, proposal.seconds

    def plan(self, ctx: Context) -> Plan:
        scales, flops, _ = self.frame_scales(ctx)
        return replace(frame_plan(ctx, scales), planner_flops=flops)
