"""Paired comparison of two runs on the samples they share: the claim behind every "A beats B".

Two runs of the same task are paired by sample id (samples scored in both, error records left out).
The difference is B - A of the mean score, in points (x 100, as summaries), with a 95% percentile
bootstrap CI over samples (the same resampled samples for both runs: that is what makes it paired).
The p-value is the exact McNemar test for a binary score (accuracy: only the discordant samples
carry information, each a fair coin under no difference) and the paired bootstrap's for a continuous
one (IoU: resampling the differences re-centred on zero).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from resadapt_eval.core.types import UserError
from resadapt_eval.pipeline.store import BOOTSTRAP_RESAMPLES, SAMPLES, SUMMARY, read_json, read_records



def mcnemar_exact(lost: int, gained: int) -> float:
    """Two-sided exact McNemar p-value: under no change each discordant pair is a fair coin
    (scipy.stats.binomtest(min, n, 0.5) gives the same; tested)."""
    n = lost + gained
    if n == 0:
        return 1.0
    k = min(lost, gained)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired_bootstrap(diff: np.ndarray, seed: int, resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float, float]:
    """(two-sided p-value, 95% CI low, high) of the mean of paired differences.

    The p-value resamples the differences re-centred on zero (the null of no change) and counts
    means at least as far from zero as the observed one."""
    if len(diff) == 0:
        return 1.0, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diff), size=(resamples, len(diff)))
    means = diff[idx].mean(axis=1)
    centred = (diff - diff.mean())[idx].mean(axis=1)
    observed = abs(diff.mean())
    p = float((np.abs(centred) >= observed - 1e-12).mean()) if observed > 0 else 1.0
    return p, float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def is_binary(values: np.ndarray) -> bool:
    return bool(np.isin(values, (0.0, 1.0)).all())


@dataclass(frozen=True)
class Paired:
    """B against A on their common samples; scores and differences in points (x 100)."""

    metric: str
    n: int                  # common samples scored in both
    score_a: float
    score_b: float
    diff: float             # score_b - score_a
    ci_low: float
    ci_high: float
    p_value: float
    test: str               # "mcnemar-exact" or "paired-bootstrap"
    b_better: int           # samples where B scores higher
    a_better: int
    only_a: int             # scored samples in one run only (left out)
    only_b: int

    @property
    def significant(self) -> bool:
        """The 95% CI of the difference excludes 0."""
        return bool(self.ci_low > 0 or self.ci_high < 0)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "significant": self.significant}


def _scored(records: Mapping[str, dict[str, Any]] | list[dict[str, Any]], metric: str) -> dict[str, float]:
    items = records.values() if isinstance(records, Mapping) else records
    return {r["id"]: float(r["score"][metric]) for r in items
            if not r.get("error") and r.get("score") and metric in r["score"]}


def compare_records(records_a, records_b, metric: str, seed: int = 0,
                    resamples: int = BOOTSTRAP_RESAMPLES) -> Paired:
    """Paired comparison of two runs' records (lists or id -> record maps) on `metric`."""
    a, b = _scored(records_a, metric), _scored(records_b, metric)
    ids = sorted(a.keys() & b.keys())
    if not ids:
        raise UserError(f"the two runs share no sample scored on {metric!r}; compare runs of the same task and split")
    va, vb = np.array([a[i] for i in ids]), np.array([b[i] for i in ids])
    diff = vb - va
    p_boot, lo, hi = paired_bootstrap(diff, seed, resamples)
    binary = is_binary(va) and is_binary(vb)
    b_better, a_better = int((diff > 0).sum()), int((diff < 0).sum())
    p = mcnemar_exact(a_better, b_better) if binary else p_boot
    return Paired(metric, len(ids), 100 * va.mean(), 100 * vb.mean(), 100 * diff.mean(), 100 * lo, 100 * hi, p,
                  "mcnemar-exact" if binary else "paired-bootstrap", b_better, a_better,
                  len(a.keys() - b.keys()), len(b.keys() - a.keys()))


def load_run(directory: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(summary, records) of a finished run directory; a one-line error naming what is missing."""
    directory = Path(directory)
    if not (directory / SUMMARY).exists() or not (directory / SAMPLES).exists():
        raise UserError(f"{directory} is not a finished run (needs {SUMMARY} and {SAMPLES}); "
                        "pass a directory results/<task>/<backbone>/<strategy>/b<budget>-f<frames>")
    return read_json(directory / SUMMARY), read_records(directory / SAMPLES)


def compare_runs(dir_a: str | Path, dir_b: str | Path, metric: str | None = None, seed: int = 0,
                 resamples: int = BOOTSTRAP_RESAMPLES) -> Paired:
    """B against A for two run directories of the same task (default metric: A's main metric)."""
    summary_a, records_a = load_run(dir_a)
    summary_b, records_b = load_run(dir_b)
    if summary_a.get("task") != summary_b.get("task"):
        raise UserError(f"runs of different tasks ({summary_a.get('task')} vs {summary_b.get('task')}) "
                        "cannot be paired; compare two runs of one task")
    return compare_records(records_a, records_b, metric or summary_a["main_metric"], seed, resamples)


def describe(summary: dict[str, Any]) -> str:
    return f"{summary['strategy']} @ {summary['budget']} (retention {summary.get('retention_mean') or float('nan'):.3f})"


def format_paired(p: Paired, name_a: str = "A", name_b: str = "B") -> str:
    """The comparison as a person reads it (what `resadapt-eval compare` prints)."""
    verdict = "the 95% CI excludes 0" if p.significant else "the 95% CI includes 0: no difference shown"
    lines = [f"A: {name_a}", f"B: {name_b}",
             f"{p.metric} on {p.n} common samples: A {p.score_a:.1f}, B {p.score_b:.1f}",
             f"B - A = {p.diff:+.1f} points, 95% paired bootstrap CI [{p.ci_low:+.1f}, {p.ci_high:+.1f}] ({verdict})",
             f"p = {p.p_value:.3g} ({p.test}; B better on {p.b_better}, A better on {p.a_better} samples)"]
    if p.only_a or p.only_b:
        lines.append(f"left out: {p.only_a} samples scored only in A, {p.only_b} only in B")
    return "\n".join(lines)
