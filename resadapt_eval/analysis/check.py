"""Regression check of a run against a reference: the gate a released checkpoint must pass.

Against a reference *run* the samples are paired by id: a binary main metric is tested with the
exact McNemar test (only the discordant pairs carry information), a continuous one (IoU) with a
paired bootstrap of the mean difference. Against a *published* table (a paper's numbers, no
per-sample records) the summary is compared with a tolerance instead.

The run fails when its score drops significantly or by more than `max_drop` points, when it
spends more tokens than the reference beyond `max_retention_rise`, or when samples that the
reference scored now end in errors. Input that cannot be compared (another task, no common
samples, another budget) is a usage error, not a failure.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from resadapt_eval.analysis.paired import mcnemar_exact, paired_bootstrap  # noqa: F401 (re-exported)
from resadapt_eval.core.record import Record
from resadapt_eval.pipeline.store import BOOTSTRAP_RESAMPLES, SAMPLES, SUMMARY, load_records, read_json
from resadapt_eval.core.types import UserError

PUBLISHED_KIND = "published"


@dataclass(frozen=True)
class Limits:
    """What the gate tolerates."""

    alpha: float = 0.05                      # significance level of the paired test
    max_drop: float | None = None            # points of the main metric; None: only significance counts
    max_retention_rise: float = 0.01         # relative rise of mean retention and tokens over the reference
    allow_budget_change: bool = False        # compare runs of different budgets or frame counts
    tolerance: float = 2.0                   # points, for published (summary-level) references
    seed: int = 0                            # of the paired bootstrap


@dataclass
class RunView:
    """One run as the check sees it: its summary and its records by sample id."""

    path: Path
    summary: dict[str, Any]
    records: dict[str, Record]

    @property
    def task(self) -> str:
        return self.summary["task"]

    @property
    def main_metric(self) -> str:
        return self.summary["main_metric"]

    def describe(self) -> str:
        s = self.summary
        return f"{s['task']} / {s['backbone']} / {s['strategy']} / budget {s['budget']} / {s['frames']} frames"


@dataclass
class CheckResult:
    """The verdict, the table a person reads and everything `check.json` records."""

    passed: bool
    failures: list[str]
    notes: list[str]
    rows: list[list[str]]
    comparison: str                          # "paired" or "published"
    run: str
    reference: str
    limits: Limits
    stats: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "failures": self.failures, "notes": self.notes,
                "comparison": self.comparison, "run": self.run, "reference": self.reference,
                "limits": asdict(self.limits), "stats": self.stats,
                "table": [dict(zip(["quantity", "reference", "run", "change"], r)) for r in self.rows]}


# -- statistics -------------------------------------------------------------------------------------

def _binary(values: np.ndarray) -> bool:
    return bool(np.isin(values, (0.0, 1.0)).all())


def _rise(run: float | None, ref: float | None) -> float | None:
    if run is None or ref is None or ref == 0:
        return None
    return run / ref - 1


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:+.2f}%"


# -- loading ----------------------------------------------------------------------------------------

def load_run(path: str | Path) -> RunView:
    """A results directory with summary.json and samples.jsonl (error records kept apart by the check)."""
    path = Path(path)
    if not (path / SUMMARY).exists():
        raise UserError(f"{path} is not a run directory (no {SUMMARY}); give the directory that `run` wrote")
    summary = read_json(path / SUMMARY)
    records = {r.id: r for r in load_records(path / SAMPLES)}
    return RunView(path, summary, records)


PUBLISHED_DIR = Path(__file__).resolve().parents[1] / "assets" / "published"
PUBLISHED_PREFIX = "published:"


def published_tables() -> list[str]:
    """The published-numbers files shipped with the package, by name (`--reference published:NAME`)."""
    return sorted(p.stem for p in PUBLISHED_DIR.glob("*.json"))


def load_reference(path: str | Path) -> RunView | dict[str, Any]:
    """A reference run directory, a published-numbers file (JSON with kind "published"), or
    `published:NAME`, one of the files shipped with the package (found in any install)."""
    if str(path).startswith(PUBLISHED_PREFIX):
        name = str(path)[len(PUBLISHED_PREFIX):]
        if name not in published_tables():
            raise UserError(f"no published table {name!r}; shipped: {', '.join(published_tables())}")
        path = PUBLISHED_DIR / f"{name}.json"
    path = Path(path)
    if path.is_file():
        data = read_json(path)
        if data.get("kind") != PUBLISHED_KIND or "rows" not in data:
            raise UserError(f"{path} is not a published-numbers file (needs \"kind\": \"published\" and \"rows\")")
        return data
    return load_run(path)


# -- the checks -------------------------------------------------------------------------------------

def _comparable(run: RunView, ref: RunView, limits: Limits) -> None:
    if run.task != ref.task:
        raise UserError(f"the runs are of different tasks ({run.task} against reference {ref.task}); "
                        "check a run against a reference of the same task")
    if run.main_metric != ref.main_metric:
        raise UserError(f"the runs score different metrics ({run.main_metric} against {ref.main_metric})")
    for key in ("budget", "frames"):
        if str(run.summary[key]) != str(ref.summary[key]) and not limits.allow_budget_change:
            raise UserError(f"the runs differ in {key} ({run.summary[key]} against reference {ref.summary[key]}); "
                            "pass --allow-budget-change to compare them anyway")


def check_paired(run: RunView, ref: RunView, limits: Limits) -> CheckResult:
    """Per-sample comparison of two runs of the same task."""
    _comparable(run, ref, limits)
    metric = run.main_metric
    common = sorted(set(run.records) & set(ref.records))
    if not common:
        raise UserError(f"no sample ids in common between {run.path} and {ref.path}")
    ref_ok = [i for i in common if ref.records[i].ok]
    new_errors = [i for i in ref_ok if not run.records[i].ok]
    paired = [i for i in ref_ok if run.records[i].ok]
    if not paired:
        raise UserError("no sample is scored in both runs (every common sample is an error record in one of them)")
    a = np.array([ref.records[i].score[metric] for i in paired], dtype=float)
    b = np.array([run.records[i].score[metric] for i in paired], dtype=float)
    delta = float((b - a).mean() * 100)
    stats: dict[str, Any] = {"metric": metric, "n_paired": len(paired), "n_common": len(common),
                             "only_in_run": len(set(run.records) - set(ref.records)),
                             "only_in_reference": len(set(ref.records) - set(run.records)),
                             "reference_score": float(a.mean() * 100), "run_score": float(b.mean() * 100),
                             "delta_points": delta, "new_errors": new_errors[:20], "n_new_errors": len(new_errors)}
    if _binary(a) and _binary(b):
        lost, gained = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
        p = mcnemar_exact(lost, gained)
        stats.update(test="exact McNemar", p_value=p, lost=lost, gained=gained)
        how = f"McNemar p={p:.3g}, {lost} lost / {gained} gained"
    else:
        p, lo, hi = paired_bootstrap(b - a, limits.seed)
        stats.update(test="paired bootstrap", p_value=p, ci_low=lo * 100, ci_high=hi * 100)
        how = f"bootstrap p={p:.3g}, 95% CI [{lo * 100:+.2f}, {hi * 100:+.2f}]"
    same_prediction = sum(run.records[i].prediction == ref.records[i].prediction for i in paired)
    stats["identical_predictions"] = same_prediction

    costs = {}
    for key in ("retention", "tokens"):
        r0 = float(np.mean([getattr(ref.records[i], key) for i in paired]))
        r1 = float(np.mean([getattr(run.records[i], key) for i in paired]))
        costs[key] = (r0, r1, _rise(r1, r0))
    stats["costs"] = {k: {"reference": v[0], "run": v[1], "rise": v[2]} for k, v in costs.items()}

    failures = []
    if delta < 0 and p < limits.alpha:
        failures.append(f"{metric} dropped {-delta:.2f} points, significant at alpha {limits.alpha} ({how})")
    if limits.max_drop is not None and -delta > limits.max_drop:
        failures.append(f"{metric} dropped {-delta:.2f} points, more than the allowed {limits.max_drop:g}")
    for key, (_, _, rise) in costs.items():
        if rise is not None and rise > limits.max_retention_rise:
            failures.append(f"mean {key} rose {rise * 100:.2f}%, more than the allowed "
                            f"{limits.max_retention_rise * 100:g}%")
    if new_errors:
        failures.append(f"{len(new_errors)} sample(s) the reference scored now fail: {', '.join(new_errors[:5])}")
    notes = []
    if stats["only_in_reference"]:
        notes.append(f"{stats['only_in_reference']} reference sample(s) are missing from the run")
    if str(run.summary["budget"]) != str(ref.summary["budget"]) or run.summary["frames"] != ref.summary["frames"]:
        notes.append("budgets or frame counts differ (--allow-budget-change)")

    rows = [[f"{metric} (n={len(paired)})", f"{a.mean() * 100:.2f}", f"{b.mean() * 100:.2f}", f"{delta:+.2f} ({how})"],
            *[[f"mean {k}", f"{v[0]:.4g}", f"{v[1]:.4g}", _pct(v[2])] for k, v in costs.items()],
            ["identical predictions", "", f"{same_prediction}/{len(paired)}", ""],
            ["new error records", "", str(len(new_errors)), ""]]
    return CheckResult(not failures, failures, notes, rows, "paired", run.describe(), ref.describe(), limits, stats)


def _published_rows(table: dict[str, Any], run: RunView) -> list[dict[str, Any]]:
    s = run.summary
    return [r for r in table["rows"]
            if r["task"] == s["task"] and r["strategy"] == s["strategy"] and int(r["frames"]) == int(s["frames"])
            and str(r["budget"]) == str(s["budget"])]


def check_published(run: RunView, table: dict[str, Any], limits: Limits, source: str) -> CheckResult:
    """Summary-level comparison with a paper's numbers for the same task, strategy, frames and budget."""
    rows_in = _published_rows(table, run)
    if not rows_in:
        have = sorted({(r["task"], r["strategy"], r["frames"], r["budget"]) for r in table["rows"]})
        raise UserError(f"{source} has no row for {run.describe()}; it covers (task, strategy, frames, budget) "
                        f"in {have[:6]}{' ...' if len(have) > 6 else ''}")
    metrics = run.summary["metrics"]
    failures, rows, stats = [], [], {"metrics": {}}
    want, have = table.get("protocol"), run.summary.get("protocol", "fixed")  # runs before protocols: fixed
    if want:
        rows.append(["protocol", want, have, "" if want == have else "differs"])
        stats["protocol"] = {"published": want, "run": have}
        if want != have:
            failures.append(f"the run's vanilla follows the {have} protocol, the published numbers the {want} "
                            f"protocol: rerun with --protocol {want} (docs/protocols.md)")
    for r in rows_in:
        m = r["metric"]
        if m not in metrics:
            raise UserError(f"the run has no metric {m!r} (it has {', '.join(metrics)})")
        got = float(metrics[m]["value"])
        delta = got - float(r["value"])
        stats["metrics"][m] = {"published": r["value"], "run": got, "delta_points": delta}
        rows.append([m, f"{r['value']:.2f}", f"{got:.2f}", f"{delta:+.2f} (tolerance {limits.tolerance:g})"])
        if delta < -limits.tolerance:
            failures.append(f"{m} is {-delta:.2f} points below the published {r['value']:g}, "
                            f"more than the tolerance {limits.tolerance:g}")
    published_retention = rows_in[0].get("retention")
    run_retention = run.summary.get("retention_mean")
    rise = _rise(run_retention, published_retention)
    rows.append(["mean retention", "n/a" if published_retention is None else f"{published_retention:.4g}",
                 "n/a" if run_retention is None else f"{run_retention:.4g}", _pct(rise)])
    stats["retention"] = {"published": published_retention, "run": run_retention, "rise": rise}
    if rise is not None and rise > limits.max_retention_rise:
        failures.append(f"mean retention {run_retention:.4g} is {rise * 100:.2f}% above the published "
                        f"{published_retention:.4g}, more than the allowed {limits.max_retention_rise * 100:g}%")
    notes = [f"published reference: {table.get('source', source)}; no per-sample pairing, tolerance instead"]
    if table.get("backbone") and table["backbone"] != run.summary.get("backbone"):
        notes.append(f"the table is for {table['backbone']}, the run used {run.summary.get('backbone')}")
    return CheckResult(not failures, failures, notes, rows, "published", run.describe(),
                       f"{source} ({table.get('backbone', '?')})", limits, stats)


def check(run_dir: str | Path, reference: str | Path, limits: Limits) -> CheckResult:
    run = load_run(run_dir)
    ref = load_reference(reference)
    if isinstance(ref, dict):
        return check_published(run, ref, limits, str(reference))
    return check_paired(run, ref, limits)
