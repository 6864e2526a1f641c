"""ResAdapt-Budget: an exact-budget learned chunk selector (not the published ResAdapt; see `resadapt`).

A learned allocator ranks chunks before the backbone encodes them.

The allocator proposes relative per-chunk scales (its deterministic action); `project_to_budget`
turns them into sizes that meet the budget exactly while keeping their order, through the same
resize-and-snap operator as `uniform-scale`. Optionally the lowest-ranked chunks are dropped
first (`drop=topk:K` keeps the K best chunks, `drop=threshold:X` keeps chunks whose scale is at
least X of the best one); without the option, the dropping the allocator was trained with on the
task is used. The allocator's own FLOPs are charged to every plan, and its files' digests are part
of the run's config hash.

Allocators: the one trained for the bundled `tiny-bundled` backbone (default there), a folder written
by `resadapt-eval train-allocator`, or a folder saved by the original ResAdapt repository
(`model_type: smol_allocator`), which runs code shipped with it and so needs trust_remote_code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

from resadapt_eval.allocator.external import is_external, load_external, refuse_untrusted
from resadapt_eval.allocator.model import CONFIG_NAME, WEIGHTS_NAME
from resadapt_eval.allocator.projection import project_to_budget
from resadapt_eval.core.types import Plan, UserError
from resadapt_eval.strategies import register
from resadapt_eval.core.strategy import Context, even_plan

FITS = ("exact", "cap")
# The allocator trained for the bundled backbone, by that backbone's name (its folder name).
BUNDLED = {"tiny-bundled": Path(__file__).resolve().parents[1] / "assets" / "allocator" / "tiny-bundled"}


def no_allocator_message(backbone: str) -> str:
    bundled = ", ".join(sorted(BUNDLED)) or "none"
    return (f"strategy resadapt-budget has no allocator for backbone {backbone!r} (one is bundled only for: {bundled}); "
            f"pass --allocator FOLDER (or resadapt-budget+allocator=FOLDER) with a folder from "
            f"`resadapt-eval train-allocator --backbone <this backbone> --out FOLDER`, or an original ResAdapt "
            f"allocator folder together with --trust-remote-code")


def check_trained_for(path: Path, backbone: str, backbone_sha: str) -> None:
    """A native allocator reads features of the backbone it was trained on (its vision tower and
    embeddings); with another backbone's they mean nothing, so that is refused. Allocators that do
    not record their backbone (saved untrained, or by older versions) are not checked."""
    config = json.loads((path / CONFIG_NAME).read_text()) if (path / CONFIG_NAME).is_file() else {}
    trained = config.get("trained") or {}
    sha = (trained.get("backbone_fingerprint") or {}).get("sha256")
    if sha and sha != backbone_sha:
        raise UserError(f"allocator {str(path)!r} was trained for backbone {trained.get('backbone')!r} "
                        f"(fingerprint {sha[:12]}), not for {backbone!r} ({backbone_sha[:12]}); train one for it "
                        f"with `resadapt-eval train-allocator --backbone <this backbone>`")


def parse_drop(drop: str) -> tuple[str, float]:
    """'none', 'topk:K' or 'threshold:X' -> (mode, value), or a one-line error."""
    if drop in ("", "none", None):
        return "none", 0.0
    mode, _, value = str(drop).partition(":")
    try:
        v = float(value)
    except ValueError:
        v = float("nan")
    if mode == "topk" and v >= 1 and v == int(v):
        return mode, v
    if mode == "threshold" and 0 < v <= 1:
        return mode, v
    raise UserError(f"strategy option drop must be none, topk:K (K >= 1) or threshold:X (0 < X <= 1), got {drop!r}")


def kept_chunks(scales: list[float], mode: str, value: float) -> list[int]:
    """Indices of the chunks that stay, in time order."""
    if mode == "topk":
        best = sorted(range(len(scales)), key=lambda k: (-scales[k], k))[: int(value)]
        return sorted(best)
    if mode == "threshold":
        top = max(scales)
        return [k for k, s in enumerate(scales) if s >= value * top]
    return list(range(len(scales)))


@register("resadapt-budget")
class ResAdaptBudget:
    name = "resadapt-budget"
    allocator_kinds = ("resadapt_eval_allocator", "smol_allocator")

    def __init__(self, allocator: str | None = None, action: str | None = None, drop: str | None = None,
                 fit: str | None = None, trust_remote_code: bool = False):
        self.path = Path(allocator) if allocator else None
        if self.path is not None and not (self.path / "config.json").exists() and \
                not (self.path / "allocator_config.json").exists():
            raise UserError(f"allocator {allocator!r} is not an allocator folder (no allocator_config.json or "
                            f"config.json); train one with `resadapt-eval train-allocator`")
        if self.path is not None:
            refuse_untrusted(self.path, trust_remote_code)
            from resadapt_eval.backbones.qwen_vl import require_safetensors
            require_safetensors(self.path, "allocator")  # pickled weights (.bin, .pt) are refused
            if not is_external(self.path) and not (self.path / WEIGHTS_NAME).is_file():
                raise UserError(f"allocator {allocator!r} has no {WEIGHTS_NAME}; train one with "
                                f"`resadapt-eval train-allocator`")
        if action not in (None, "mean", "mode"):
            raise UserError(f"strategy option action must be mean or mode, got {action!r}")
        self.action = action
        # None: the chunk dropping the allocator was trained with for the task (its ranking was learned
        # for that operator; a different one is an explicit choice).
        self.drop = parse_drop(drop) if drop is not None else None
        if fit not in (None, *FITS):
            raise UserError(f"strategy option fit must be exact or cap, got {fit!r}")
        self.fit = fit  # None: cap where the allocator was trained in free mode, else exact
        self.trust_remote_code = trust_remote_code
        self._policy = None
        self._trained: dict = {}

    def check_backbone(self, name: str, folder: Path | None = None) -> None:
        """Before any model loads: is there an allocator for this backbone? A native allocator that
        records the backbone it was trained on must be used with that backbone (`folder`, when
        known, is fingerprinted without loading it)."""
        path = self.path or BUNDLED.get(name)
        if path is None or not path.exists():
            raise UserError(no_allocator_message(name))
        if folder is not None and not is_external(path):
            from resadapt_eval.backbones.qwen_vl import fingerprint
            check_trained_for(path, name, fingerprint(Path(folder))["sha256"])

    def folder(self, backbone) -> Path:
        """The allocator folder: --allocator, or the one bundled for this backbone."""
        path = self.path or BUNDLED.get(backbone.name)
        if path is None or not path.exists():
            raise UserError(no_allocator_message(backbone.name))
        if not is_external(path):
            check_trained_for(path, backbone.name, backbone.fingerprint["sha256"])
        return path

    def describe(self, backbone) -> dict:
        """What of the allocator goes into the run's config hash: digests of its weights and code, its
        config without the training log (retraining to the same weights keeps the hash; different
        weights never mix into old results), and the dropping it was trained with."""
        path = self.folder(backbone)
        digests = {f.name: hashlib.sha256(f.read_bytes()).hexdigest()[:16]
                   for f in sorted(path.iterdir()) if f.suffix in (".safetensors", ".bin", ".py")}
        config = {}
        for name in ("allocator_config.json", "config.json"):
            if (path / name).exists():
                config = json.loads((path / name).read_text())
        trained = config.pop("trained", {})
        config["trained_drop"] = {"drop": trained.get("drop"), "task_drop": trained.get("task_drop")}
        return {"allocator_files": digests, "allocator_config": config}

    def policy(self, backbone):
        if self._policy is None:
            path = self.folder(backbone)
            if is_external(path):
                self._policy = load_external(path, trust_remote_code=self.trust_remote_code)
            else:
                from resadapt_eval.allocator.policy import Policy
                self._policy = Policy.load(path, backbone)
                self._trained = Policy.training_config(path)
            if self.action is not None:
                self._policy.set_action(self.action)
        return self._policy

    def plan(self, ctx: Context) -> Plan:
        if ctx.backbone is None:
            raise UserError("the resadapt-budget strategy needs the backbone's vision tower; run it through the runner")
        proposal = self.policy(ctx.backbone).propose(ctx)
        plan = allocation_plan(ctx, proposal.scales, self.drop_for(ctx.task), self.fit_for(ctx.task))
        return replace(plan, planner_flops=proposal.flops)

    def drop_for(self, task: str) -> tuple[str, float]:
        """The chunk dropping to use on `task`: the option if given, else what training used there."""
        if self.drop is not None:
            return self.drop
        return parse_drop(self._trained.get("task_drop", {}).get(task, self._trained.get("drop", "none")))

    def fit_for(self, task: str) -> str:
        """How the proposal meets the budget on `task`: the option if given, else `cap` where the
        allocator learned how much to spend (free mode), `exact` where it learned only where."""
        if self.fit is not None:
            return self.fit
        mode = self._trained.get("task_mode", {}).get(task, self._trained.get("mode", "budget"))
        return "cap" if mode == "free" else "exact"


def allocation_plan(ctx: Context, scales, drop: tuple[str, float] = ("none", 0.0), fit: str = "exact") -> Plan:
    """Per-chunk scales -> a plan: drop chunks if asked, then fit the budget.

    fit: `exact` projects the scales onto the budget keeping their order (every strategy's budget);
    `cap` uses them as proposed unless that exceeds the budget, then projects (the budget is a
    ceiling, and an allocator that learned how much to spend may spend less); `none` uses them as
    they are whatever the budget (what CAPO's free mode trains)."""
    if fit not in (*FITS, "none"):
        raise ValueError(f"fit must be one of {FITS} or none, got {fit!r}")
    scales = [float(s) for s in scales]
    kind, g = ctx.frames.kind, ctx.geometry
    step = 1 if kind == "image" else g.temporal_patch_size
    keep = kept_chunks(scales, *drop)
    rel = [scales[k] for k in keep]
    used = [min(s, 1.0) for s in rel]
    sizes, note = [g.scaled_size(kind, ctx.vanilla_hw, s) for s in used], ""
    if fit == "exact" or (fit == "cap" and sum(g.tokens_per_chunk(h, w) for h, w in sizes) > ctx.limit):
        proj = project_to_budget(g, kind, ctx.vanilla_hw, rel, ctx.limit)
        sizes, used, note = list(proj.sizes), list(proj.scales), "" if proj.feasible else \
            "smallest chunk sizes still exceed the budget"
    positions = [i for k in keep for i in range(k * step, min(ctx.frames.count, (k + 1) * step))]
    return even_plan(ctx, positions, sizes, scales=used, evenly_spaced=len(keep) == len(scales), note=note)
