"""Rerun every configuration of a committed baseline tree and check each run against it
(`resadapt-eval check-baseline`, `make check-baseline`).

A baseline tree is an ordinary results tree (results/baseline/<task>/<backbone>/<strategy>/b..-f..)
whose manifests carry the exact run configuration. Each is rerun into a fresh tree with the same
sample count, one backbone load per backbone, and checked with `check.check_paired`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable

from resadapt_eval.analysis.check import CheckResult, Limits, check_paired, load_run
from resadapt_eval.pipeline.store import MANIFEST, SUMMARY, read_json
from resadapt_eval.core.types import UserError

DEFAULT_ROOT = "results/baseline"


@dataclass
class BaselineCheck:
    baseline: Path
    run: Path
    result: CheckResult


def baseline_runs(root: str | Path) -> list[Path]:
    """Every run directory (one with a summary and a manifest) under `root`, in a stable order."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"no baseline tree at {root}; create one with `resadapt-eval run --out {root} ...`")
    runs = sorted(p.parent for p in root.rglob(SUMMARY) if (p.parent / MANIFEST).exists())
    if not runs:
        raise UserError(f"{root} holds no run directories (summary.json + manifest.json)")
    return runs


def rerun_config(baseline: Path, out: str | Path):
    """The RunConfig that reproduces a baseline run, writing under `out`."""
    from resadapt_eval.pipeline.runner import RunConfig

    manifest = read_json(baseline / MANIFEST)
    saved = manifest.get("run_config")
    if saved is None:
        raise UserError(f"{baseline / MANIFEST} has no run_config (written by an older version); rerun it once")
    known = {f.name for f in fields(RunConfig)}
    n = read_json(baseline / SUMMARY)["n"]
    return RunConfig(**{k: v for k, v in saved.items() if k in known}, out=str(out), limit=n, progress=False)


def check_baseline(root: str | Path, out: str | Path, limits: Limits,
                   on_result: Callable[[BaselineCheck], Any] | None = None) -> list[BaselineCheck]:
    """Rerun and check every baseline run; a backbone is loaded once for all its configurations."""
    from resadapt_eval.pipeline.media import FrameCache
    from resadapt_eval.pipeline.runner import backbone_key, load_backbone_for, run

    configs = [(ref, rerun_config(ref, out)) for ref in baseline_runs(root)]
    results, backbones = [], {}
    caches: dict[str, FrameCache] = {}
    for ref, cfg in configs:
        key = backbone_key(cfg)
        if key not in backbones:
            backbones[key] = load_backbone_for(cfg)
        cache = caches.setdefault(cfg.task, FrameCache())
        done = run(replace(cfg), backbone=backbones[key], cache=cache)
        item = BaselineCheck(ref, done.directory, check_paired(load_run(done.directory), load_run(ref), limits))
        results.append(item)
        if on_result is not None:
            on_result(item)
    return results
