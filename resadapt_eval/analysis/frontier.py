"""The frontier: which way of spending a visual budget buys the most score per unit of cost.

Reads the summaries of finished runs (`<root>/<task>/<backbone>/<strategy>/b<budget>-f<frames>/`),
marks the Pareto-optimal (cost, score) points of every task x backbone, sums each strategy up in one
table, and draws the figures. Strategy names are data: a new strategy's runs need no change here.

Conventions (higher score is better; every cost is per sample and lower is better):
- Frontier: a run is on it iff no other run of its task x backbone costs no more and scores no less,
  one of the two strictly. Exact duplicates are therefore both on; at equal cost only the best score
  is; and the test uses point estimates only, so a run dominated by a hair is off even when its CI
  overlaps the dominating run. `ci_overlaps_frontier` flags those runs: off the frontier, yet their
  upper CI bound reaches the best frontier score at no greater cost (not distinguishable from it).
- `auc_logcost`: the mean, over log cost across the range [cheapest, dearest] of all runs of the task
  x backbone, of the best score the strategy reaches at that cost or less (0 below its cheapest run).
  One common range per task x backbone, so strategies compare on equal terms; it is in score units
  (a strategy scoring s everywhere in the range gets s) and rewards reaching high scores cheaply;
  a strategy whose runs all sit at the dearest cost (vanilla) gets 0: it offers nothing cheaper.
- `cost_at_95` / `cost_at_99`: the least cost at which the strategy reaches 95% / 99% of vanilla's
  score (the best `vanilla` run of the task x backbone); NaN without vanilla or when never reached.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from resadapt_eval.analysis.paired import compare_records
from resadapt_eval.pipeline.media import uniform_indices
from resadapt_eval.core.record import Record
from resadapt_eval.pipeline.store import SAMPLES, SUMMARY, load_records, read_json, read_records
from resadapt_eval.core.types import UserError

COSTS: dict[str, str] = {"tokens": "tokens", "retention": "retention", "patches": "patches", "flops": "flops",
                         "latency": "latency_s"}
COST_LABELS: dict[str, str] = {
    "tokens": "LLM visual tokens per sample (log)",
    "retention": "retention: visual tokens / vanilla tokens (log)",
    "patches": "vision-encoder patches per sample (log)",
    "flops": "prefill FLOPs per sample: vision encode + LLM + planner (log)",
    "latency": "end-to-end latency per sample, s (log)",
}
METRIC_LABELS: dict[str, str] = {"accuracy": "accuracy (%)", "iou": "mIoU (%)", "iou_robust": "mIoU, robust parser (%)"}
VANILLA = "vanilla"
GROUP = ["task", "backbone"]
RUN_COLUMNS = ["task", "backbone", "strategy", "budget", "frames", "n", "main_metric", "score", "ci_low", "ci_high",
               "retention", "tokens", "patches", "flops", "latency_s", "window_share", "directory"]
# window_share: mean share of visual tokens inside the ground-truth window (temporal grounding only)
TABLE_COLUMNS = ["task", "backbone", "strategy", "budget", "frames", "n", "main_metric", "score", "ci_low", "ci_high",
                 "retention", "tokens", "patches", "flops", "latency_s", "window_share", "on_frontier",
                 "on_strategy_frontier", "ci_overlaps_frontier"]
STRATEGY_COLUMNS = ["task", "backbone", "strategy", "points", "best_score", "vanilla_score", "auc_logcost",
                    "cost_at_95", "cost_at_99"]
PAIRED_REFERENCE = "uniform-scale"
PAIRED_COLUMNS = ["task", "backbone", "strategy", "budget", "frames", "retention", "reference", "reference_budget",
                  "reference_retention", "matched", "n", "score", "reference_score", "diff", "ci_low", "ci_high",
                  "p_value", "test", "significant"]
EVIDENCE_COLUMNS = ["id", "evidence_size", "tokens", "evidence_share", "evidence_tokens", "score"]


# -- loading -----------------------------------------------------------------------------------

def load_runs(root: str | Path, tasks: Iterable[str] | None = None) -> pd.DataFrame:
    """One row per finished run under `root` (columns RUN_COLUMNS).

    Only the results layout's depth is searched, so `results/baseline/...` and output folders such
    as `results/frontier/` never mix in. A summary that cannot be read is skipped with a warning:
    one broken run must not hide all the others.
    """
    root = Path(root)
    patterns = [f"{task}/*/*/*/{SUMMARY}" for task in tasks] if tasks else [f"*/*/*/*/{SUMMARY}"]
    rows = []
    for path in sorted({p for pattern in patterns for p in root.glob(pattern)}):
        try:
            rows.append(run_row(read_json(path), path.parent))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            warnings.warn(f"skipping {path}: {type(e).__name__}: {e}", stacklevel=2)
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def run_row(summary: dict[str, Any], directory: Path) -> dict[str, Any]:
    """The frontier's view of one summary.json: identity, main-metric score with CI, and mean costs."""
    metric = summary["main_metric"]
    main = summary["metrics"][metric]
    return {"task": str(summary["task"]), "backbone": str(summary["backbone"]), "strategy": str(summary["strategy"]),
            "budget": str(summary["budget"]), "frames": int(summary["frames"]), "n": int(main.get("n", summary["n"])),
            "main_metric": metric, "score": _number(main["value"]), "ci_low": _number(main.get("ci_low")),
            "ci_high": _number(main.get("ci_high")), "retention": _number(summary.get("retention_mean")),
            "tokens": _number(_first(summary.get("llm_visual_tokens_mean"), summary.get("tokens_mean"))), "patches": _number(summary.get("patches_mean")),
            "flops": _number(summary.get("flops_mean")),
            "latency_s": _number((summary.get("timings_mean") or {}).get("e2e")),
            "window_share": _number(summary.get("window_share_mean")), "directory": str(directory)}


def _first(*values: Any) -> Any:
    """The first value that is not None: the token axis is the mean over LLM layers when a run records it
    (in-LLM pruning such as FastV: layers before K see every token), else the budgeted count."""
    return next((v for v in values if v is not None), None)


def _number(value: Any) -> float:
    """Summaries write null for a mean over no samples; NaN keeps the column numeric."""
    return float("nan") if value is None else float(value)


def cost_column(cost: str) -> str:
    """The run column behind a cost axis name (`latency` is `latency_s`)."""
    if cost not in COSTS:
        raise UserError(f"unknown cost axis {cost!r}; choose one of {', '.join(COSTS)}")
    return COSTS[cost]


# -- the frontier ------------------------------------------------------------------------------

def pareto_mask(cost: Iterable[float], score: Iterable[float]) -> np.ndarray:
    """True where no other point has cost <= and score >= with one strictly (see module doc).

    Points with a missing cost or score are never on the frontier and dominate nothing.
    """
    c, s = np.asarray(cost, dtype=float), np.asarray(score, dtype=float)
    ok = np.isfinite(c) & np.isfinite(s)
    # [i, j]: does point j dominate point i?
    dominates = ((c[None, :] <= c[:, None]) & (s[None, :] >= s[:, None])
                 & ((c[None, :] < c[:, None]) | (s[None, :] > s[:, None])) & ok[None, :])
    return ok & ~dominates.any(axis=1)


def ci_overlap_mask(cost: Iterable[float], score: Iterable[float], ci_high: Iterable[float],
                    on_frontier: Iterable[bool]) -> np.ndarray:
    """True for an off-frontier point whose upper CI bound reaches the best frontier score at cost <= its own:
    it lost on the point estimate only, not by a margin the samples can resolve."""
    c, s, hi = (np.asarray(x, dtype=float) for x in (cost, score, ci_high))
    on = np.asarray(on_frontier, dtype=bool)
    reachable = on[None, :] & (c[None, :] <= c[:, None])
    best = np.where(reachable, s[None, :], -np.inf).max(axis=1, initial=-np.inf)
    with np.errstate(invalid="ignore"):
        return ~on & np.isfinite(best) & (hi >= best)


def annotate(runs: pd.DataFrame, cost: str = "tokens") -> pd.DataFrame:
    """A copy of `runs` with `on_frontier` and `ci_overlaps_frontier` (per task x backbone) and
    `on_strategy_frontier` (per task x backbone x strategy) for the given cost axis."""
    col = cost_column(cost)
    out = runs.reset_index(drop=True)
    out["on_frontier"] = _groupwise(out, GROUP, lambda g: pareto_mask(g[col], g["score"]))
    out["ci_overlaps_frontier"] = _groupwise(
        out, GROUP, lambda g: ci_overlap_mask(g[col], g["score"], g["ci_high"], g["on_frontier"]))
    out["on_strategy_frontier"] = _groupwise(out, GROUP + ["strategy"], lambda g: pareto_mask(g[col], g["score"]))
    return out


def _groupwise(df: pd.DataFrame, keys: list[str], mask: Callable[[pd.DataFrame], np.ndarray]) -> pd.Series:
    """A boolean column computed group by group (a mask per group, aligned back to the rows)."""
    out = pd.Series(False, index=df.index, dtype=bool)
    for _, group in df.groupby(keys, sort=False):
        out.loc[group.index] = mask(group)
    return out


# -- per-strategy summary ----------------------------------------------------------------------

def strategy_table(runs: pd.DataFrame, cost: str = "tokens") -> pd.DataFrame:
    """One row per task x backbone x strategy: points, best score, AUC over log cost, cost to reach
    95% / 99% of vanilla (conventions in the module doc)."""
    col = cost_column(cost)
    rows = []
    for (task, backbone), group in runs.groupby(GROUP, sort=True):
        lo, hi = _log_range(group[col].to_numpy(dtype=float))
        reference = group.loc[group["strategy"] == VANILLA, "score"].max()
        for strategy, s in group.groupby("strategy", sort=True):
            c, v = s[col].to_numpy(dtype=float), s["score"].to_numpy(dtype=float)
            rows.append({"task": task, "backbone": backbone, "strategy": strategy, "points": len(s),
                         "best_score": s["score"].max(), "vanilla_score": reference,
                         "auc_logcost": attainment_auc(c, v, lo, hi),
                         "cost_at_95": cost_to_reach(c, v, 0.95 * reference),
                         "cost_at_99": cost_to_reach(c, v, 0.99 * reference)})
    return pd.DataFrame(rows, columns=STRATEGY_COLUMNS)


def _log_range(cost: np.ndarray) -> tuple[float, float]:
    """The cheapest and dearest positive cost: the range a log axis can show."""
    usable = cost[np.isfinite(cost) & (cost > 0)]
    return (float(usable.min()), float(usable.max())) if len(usable) else (float("nan"), float("nan"))


def attainment_auc(cost: np.ndarray, score: np.ndarray, lo: float, hi: float) -> float:
    """Mean over log cost in [lo, hi] of the best score reachable at that cost or less (0 below the
    cheapest point): the normalised area under the strategy's attainment step curve. With lo == hi
    the range is one point and the value is the best score there."""
    ok = np.isfinite(cost) & np.isfinite(score) & (cost > 0)
    if not ok.any() or not (np.isfinite(lo) and np.isfinite(hi)):
        return float("nan")
    order = np.argsort(cost[ok], kind="stable")
    c, best = cost[ok][order], np.maximum.accumulate(score[ok][order])
    if hi <= lo:
        return float(best[c <= hi][-1]) if (c <= hi).any() else 0.0
    edges = np.log(np.clip(np.append(c, hi), lo, hi))  # step i holds best[i] from c[i] to c[i + 1]
    return float((np.diff(edges) * best).sum() / (np.log(hi) - np.log(lo)))


def cost_to_reach(cost: np.ndarray, score: np.ndarray, target: float) -> float:
    """The least cost whose score is at least `target`; NaN if none or no target."""
    if not np.isfinite(target):
        return float("nan")
    hit = np.isfinite(cost) & np.isfinite(score) & (score >= target)
    return float(cost[hit].min()) if hit.any() else float("nan")


# -- paired comparisons against uniform-scale --------------------------------------------------

def paired_table(runs: pd.DataFrame, reference: str = PAIRED_REFERENCE, retention_tol: float = 0.01,
                 seed: int = 0, records: dict[str, list[dict[str, Any]]] | None = None,
                 ids: dict[tuple[str, str], set[str]] | None = None) -> pd.DataFrame:
    """Every run against the `reference` strategy's run of its task x backbone x frames at matched
    retention: the reference run of the same budget when the two mean retentions differ by at most
    `retention_tol` (relative), else the reference run of closest retention within that tolerance.
    Each row holds the paired difference (run - reference, points) with its 95% bootstrap CI and
    p-value (module `paired`); a run without a match gets a row with `matched` false and no statistics.
    `records` caches each run directory's records (read here when missing); `ids` restricts each
    task x backbone to a subset of samples (the sensitive subset)."""
    records = {} if records is None else records

    def recs(directory: str) -> list[dict[str, Any]]:
        if directory not in records:
            records[directory] = read_records(Path(directory) / SAMPLES)
        return records[directory]

    rows = []
    refs_all = runs[runs["strategy"] == reference]
    for run in runs[runs["strategy"] != reference].itertuples(index=False):
        refs = refs_all[(refs_all["task"] == run.task) & (refs_all["backbone"] == run.backbone)
                        & (refs_all["frames"] == run.frames)]
        ref = _matched_reference(run, refs, retention_tol)
        row = {"task": run.task, "backbone": run.backbone, "strategy": run.strategy, "budget": run.budget,
               "frames": run.frames, "retention": run.retention, "reference": reference, "matched": ref is not None,
               "reference_budget": None if ref is None else ref.budget,
               "reference_retention": float("nan") if ref is None else ref.retention}
        if ref is not None:
            keep = None if ids is None else ids.get((run.task, run.backbone), set())
            a, b = recs(ref.directory), recs(run.directory)
            if keep is not None:
                a, b = [r for r in a if r["id"] in keep], [r for r in b if r["id"] in keep]
            try:
                p = compare_records(a, b, run.main_metric, seed)
            except UserError:  # no common scored sample (an empty subset): nothing to compare
                rows.append({**row, "n": 0, "significant": False})
                continue
            row.update(n=p.n, score=p.score_b, reference_score=p.score_a, diff=p.diff, ci_low=p.ci_low,
                       ci_high=p.ci_high, p_value=p.p_value, test=p.test, significant=p.significant)
        else:
            row.update(n=0, significant=False)
        rows.append(row)
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def _matched_reference(run: Any, refs: pd.DataFrame, tol: float) -> Any:
    def close(r: Any) -> bool:
        return bool(np.isfinite(r.retention) and np.isfinite(run.retention)
                    and abs(run.retention - r.retention) <= tol * r.retention)
    candidates = [r for r in refs.itertuples(index=False) if close(r)]
    same_budget = [r for r in candidates if r.budget == run.budget]
    if same_budget:
        return same_budget[0]
    return min(candidates, key=lambda r: abs(run.retention - r.retention)) if candidates else None


def mark_paired(runs: pd.DataFrame, paired: pd.DataFrame) -> pd.DataFrame:
    """`runs` with `paired_significant`: the run's paired difference against the reference has a 95% CI
    that excludes 0 (the figures ring those points)."""
    keys = ["task", "backbone", "strategy", "budget", "frames"]
    hits = paired.loc[paired["matched"].astype(bool) & paired["significant"].astype(bool), keys]
    marked = set(map(tuple, hits.to_numpy().tolist()))
    out = runs.copy()
    out["paired_significant"] = [tuple(r) in marked for r in out[keys].to_numpy().tolist()]
    return out


# -- the compression-sensitive subset ------------------------------------------------------------

SUBSETS = ("all", "sensitive")


def _answer(record: dict[str, Any]) -> str:
    """What a record answered, as the scorer read it (the raw text when nothing was parsed)."""
    parsed = record.get("parsed")
    return json.dumps(parsed, sort_keys=True, default=str) if parsed is not None else str(record.get("prediction"))


def sensitive_ids(runs: pd.DataFrame, budget: str, records: dict[str, list[dict[str, Any]]],
                  probe: str = PAIRED_REFERENCE) -> dict[tuple[str, str], set[str]]:
    """Per task x backbone: the samples whose vanilla answer changes under `probe` (uniform
    downscaling) at `budget` (VTC-Bench's compression-sensitive subset: where the budget matters).
    A task x backbone without both runs has no subset (and is left out of a sensitive frontier)."""
    out: dict[tuple[str, str], set[str]] = {}
    for key, group in runs.groupby(GROUP, sort=True):
        vanilla = group[group["strategy"] == VANILLA]
        scaled = group[(group["strategy"] == probe) & (group["budget"].map(_budget_key) == _budget_key(budget))]
        if vanilla.empty or scaled.empty:
            continue
        ref = {r["id"]: r for r in _cached(records, vanilla["directory"].iloc[0]) if not r.get("error")}
        low = {r["id"]: r for r in _cached(records, scaled["directory"].iloc[0]) if not r.get("error")}
        out[key] = {i for i in ref.keys() & low.keys() if _answer(ref[i]) != _answer(low[i])}
    return out


def _budget_key(budget: Any) -> str:
    return f"{float(budget):g}" if _is_number(str(budget)) else str(budget)


def _cached(records: dict[str, list[dict[str, Any]]], directory: str) -> list[dict[str, Any]]:
    if directory not in records:
        records[directory] = read_records(Path(directory) / SAMPLES)
    return records[directory]


def subset_runs(runs: pd.DataFrame, ids: dict[tuple[str, str], set[str]],
                records: dict[str, list[dict[str, Any]]], seed: int = 0) -> pd.DataFrame:
    """`runs` (rows of `load_runs`) re-measured on a subset of samples per task x backbone: the main
    metric with its bootstrap CI and the mean costs over the subset's scored records only."""
    from resadapt_eval.pipeline.store import bootstrap_ci

    rows = []
    for run in runs.to_dict("records"):
        keep = ids.get((run["task"], run["backbone"]))
        if keep is None:
            continue
        recs = [r for r in _cached(records, run["directory"]) if r["id"] in keep and not r.get("error")]
        values = np.array([float(r["score"][run["main_metric"]]) for r in recs], dtype=float)
        lo, hi = bootstrap_ci(values, seed)

        def mean(get: Callable[[dict[str, Any]], Any]) -> float:
            vals = [get(r) for r in recs]
            vals = [float(v) for v in vals if v is not None]
            return float(np.mean(vals)) if vals else float("nan")

        run.update(n=len(recs), score=100 * float(values.mean()) if len(values) else float("nan"),
                   ci_low=100 * lo, ci_high=100 * hi, retention=mean(lambda r: r.get("retention")),
                   tokens=mean(lambda r: r.get("tokens")), patches=mean(lambda r: r.get("patches")),
                   flops=mean(lambda r: (r.get("flops") or {}).get("total")),
                   latency_s=mean(lambda r: (r.get("timings") or {}).get("e2e")),
                   window_share=mean(lambda r: r.get("window_share")))
        rows.append(run)
    return pd.DataFrame(rows, columns=runs.columns)


# -- figures -----------------------------------------------------------------------------------

def strategy_colors(strategies: Iterable[str]) -> dict[str, Any]:
    """Sorted names -> tab10 (tab20 beyond ten), so a strategy keeps its colour in every figure of a build."""
    names = sorted(set(strategies))
    cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def metric_label(metric: str) -> str:
    """Axis label of a main metric; every summary metric is a mean x 100, hence %."""
    return METRIC_LABELS.get(metric, f"{metric} (%)")


def plot_task(runs: pd.DataFrame, cost: str, path_stem: str | Path,
              colors: Mapping[str, Any] | None = None, formats: tuple[str, ...] = ("png", "svg")) -> list[Path]:
    """One task x backbone: score against cost, one line per strategy, frontier highlighted.
    Writes `<path_stem>.png` and `.svg` (or the given `formats`) and returns the paths."""
    if runs[GROUP].drop_duplicates().shape[0] != 1:
        raise ValueError("plot_task draws one task x backbone; use plot_grid for several")
    fig = Figure(figsize=(8, 4.8), layout="constrained")
    ax = fig.add_subplot()
    _draw(ax, annotate(runs, cost), cost, colors or strategy_colors(runs["strategy"]))
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, title="strategy")
    return _save(fig, path_stem, formats)


def plot_grid(runs: pd.DataFrame, cost: str, path_stem: str | Path,
              colors: Mapping[str, Any] | None = None) -> list[Path]:
    """Every task x backbone side by side, one shared legend outside on the right.
    Writes `<path_stem>.png` and `.svg` and returns both paths."""
    runs = annotate(runs, cost)
    colors = colors or strategy_colors(runs["strategy"])
    groups = list(runs.groupby(GROUP, sort=True))
    ncols = min(len(groups), 2 if len(groups) <= 4 else 3)
    nrows = -(-len(groups) // ncols)
    fig = Figure(figsize=(5.4 * ncols + 1.8, 4.2 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (_, group) in zip(axes, groups):
        _draw(ax, group, cost, colors)
    for ax in axes[len(groups):]:
        ax.set_visible(False)
    handles = {label: h for ax in axes[:len(groups)] for h, label in zip(*ax.get_legend_handles_labels())}
    fig.legend(handles.values(), handles.keys(), loc="outside right upper", title="strategy")
    return _save(fig, path_stem)


def plot_costs(runs: pd.DataFrame, path_stem: str | Path, costs: tuple[str, ...] = ("tokens", "flops"),
               colors: Mapping[str, Any] | None = None) -> list[Path]:
    """Every task x backbone on two cost axes side by side (one row each): LLM visual tokens, and FLOPs
    counting the vision encode and a planner's own cost. On tokens alone a method that encodes at full
    resolution and prunes afterwards looks free of its encode; the FLOPs panel shows that encode."""
    colors = colors or strategy_colors(runs["strategy"])
    groups = list(runs.groupby(GROUP, sort=True))
    fig = Figure(figsize=(5.4 * len(costs) + 1.8, 4.0 * len(groups)), layout="constrained")
    axes = fig.subplots(len(groups), len(costs), squeeze=False)
    for row, (_, group) in zip(axes, groups):
        for ax, cost in zip(row, costs):
            _draw(ax, annotate(group, cost), cost, colors)
    handles = {label: h for ax in axes.ravel() for h, label in zip(*ax.get_legend_handles_labels())}
    fig.legend(handles.values(), handles.keys(), loc="outside right upper", title="strategy")
    return _save(fig, path_stem)


def allocation_matrix(records: Iterable[dict[str, Any]], ids: list[str] | None = None) -> tuple[list[str], np.ndarray]:
    """(sample ids, tokens) with tokens[i, t] = the visual tokens sample i's plan spent on decoded frame
    position t: each chunk's tokens (its share of the plan's pixel area times the record's tokens)
    spread evenly over its frames. Rows follow `ids` when given (missing or error samples stay 0)."""
    by_id = {r["id"]: r for r in records if not r.get("error") and r.get("plan")}
    ids = sorted(by_id) if ids is None else list(ids)
    width = max([int(r.get("frames_decoded") or 1) for r in by_id.values()] + [1])
    out = np.zeros((len(ids), width))
    for i, sid in enumerate(ids):
        r = by_id.get(sid)
        if r is None:
            continue
        chunks, positions = r["plan"]["chunks"], list(r["plan"]["frames"])
        area = np.array([h * w for h, w in chunks], dtype=float)
        per_chunk = max(1, len(positions) // max(1, len(chunks)))
        for k, a in enumerate(area):
            frames = positions[k * per_chunk:(k + 1) * per_chunk]
            for t in frames:
                out[i, min(int(t), width - 1)] += float(r["tokens"]) * a / area.sum() / len(frames)
    return ids, out


def plot_allocation(runs: pd.DataFrame, path_stem: str | Path, records: dict[str, list[dict[str, Any]]] | None = None,
                    max_samples: int = 40) -> list[Path]:
    """Per-sample allocation heatmaps of one task x backbone (a video task): one panel per strategy
    (columns) and budget (rows), samples down, decoded frame positions across, colour = visual tokens
    on that frame. The same samples in every panel, so a planner's choices read against uniform ones."""
    records = {} if records is None else records
    for d in runs["directory"]:
        if d not in records:
            records[d] = read_records(Path(d) / SAMPLES)
    ids = sorted({r["id"] for d in runs["directory"] for r in records[d] if not r.get("error")})[:max_samples]
    budgets = sorted(runs["budget"].unique(), key=lambda b: float(b) if _is_number(b) else float("inf"))
    strategies = sorted(runs["strategy"].unique())
    mats = {(row.strategy, row.budget): allocation_matrix(records[row.directory], ids)[1]
            for row in runs.itertuples(index=False)}
    top = max([float(m.max()) for m in mats.values()] + [1e-9])
    fig = Figure(figsize=(2.2 * len(strategies) + 1.2, 2.4 * len(budgets) + 0.6), layout="constrained")
    axes = fig.subplots(len(budgets), len(strategies), squeeze=False)
    image = None
    for i, budget in enumerate(budgets):
        for j, strategy in enumerate(strategies):
            ax = axes[i, j]
            mat = mats.get((strategy, budget))
            if mat is None:
                ax.set_visible(False)
                continue
            image = ax.imshow(mat, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0, vmax=top)
            spent = runs[(runs["strategy"] == strategy) & (runs["budget"] == budget)]["retention"]
            ax.set_title(f"{strategy} @ {budget_label(budget, float(spent.iloc[0]) if len(spent) else float('nan'))}",
                         fontsize=8)
            ax.tick_params(labelsize=6)
            if j == 0:
                ax.set_ylabel("sample", fontsize=7)
            if i == len(budgets) - 1:
                ax.set_xlabel("frame (decoded position)", fontsize=7)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.6, label="visual tokens on the frame")
    task, backbone = runs["task"].iloc[0], runs["backbone"].iloc[0]
    fig.suptitle(f"{task} · {backbone}: where each sample's tokens went")
    return _save(fig, path_stem)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def is_video_run(records: list[dict[str, Any]]) -> bool:
    """A run over videos (more than one decoded frame per sample)."""
    return any(int(r.get("frames_decoded") or 1) > 1 for r in records if not r.get("error"))


def _draw(ax: Axes, runs: pd.DataFrame, cost: str, colors: Mapping[str, Any]) -> None:
    """One annotated task x backbone on one axes: the frontier as a wide translucent step under
    every strategy's line through its runs (sorted by cost) with 95% CI bars; vanilla as a star."""
    col = cost_column(cost)
    ax.set_title(" · ".join(str(runs[k].iloc[0]) for k in GROUP) if len(runs) else "no runs")
    ax.set_ylabel(metric_label(str(runs["main_metric"].iloc[0])) if len(runs) else "score (%)")
    runs = runs[np.isfinite(runs[col]) & (runs[col] > 0)]  # a log axis cannot show the rest
    frontier = runs[runs["on_frontier"]].sort_values([col, "score"])
    ax.plot(frontier[col], frontier["score"], drawstyle="steps-post", color="0.55", alpha=0.35, lw=9,
            solid_capstyle="round", label="Pareto frontier", zorder=1)
    for strategy, s in runs.groupby("strategy", sort=True):
        s = s.sort_values([col, "score"])
        err = np.vstack([(s["score"] - s["ci_low"]).clip(lower=0), (s["ci_high"] - s["score"]).clip(lower=0)])
        vanilla = strategy == VANILLA
        ax.errorbar(s[col], s["score"], yerr=np.nan_to_num(err), color=colors[strategy],
                    marker="*" if vanilla else "o", markersize=14 if vanilla else 6,
                    markeredgecolor="black" if vanilla else colors[strategy], lw=1.6, capsize=3,
                    elinewidth=1, label=strategy, zorder=4 if vanilla else 3)
    if "paired_significant" in runs and runs["paired_significant"].any():
        marked = runs[runs["paired_significant"].astype(bool)]
        ax.scatter(marked[col], marked["score"], s=170, facecolors="none", edgecolors="black", linewidths=1.3,
                   zorder=5, label=f"paired diff. vs {PAIRED_REFERENCE}: 95% CI excludes 0")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(_tick_label))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel(COST_LABELS[cost])
    ax.grid(True, which="both", alpha=0.25)


def _tick_label(value: float, _position: int) -> str:
    """Plain numbers on the log axis (20, 50, 100; 0.25), SI prefixes for large ones (2G FLOPs), so
    neighbouring labels stay short enough not to collide."""
    return _SI(value) if value >= 1e4 else f"{value:g}"


_SI = ticker.EngFormatter(sep="")


def _save(fig: Figure, path_stem: str | Path, formats: tuple[str, ...] = ("png", "svg")) -> list[Path]:
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_name(f"{stem.name}.{fmt}") for fmt in formats]
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # SVG text stays text: searchable, editable
        for path in paths:
            fig.savefig(path, dpi=150, bbox_inches="tight")
    return paths


# -- tables ------------------------------------------------------------------------------------

def _fixed(digits: int) -> Callable[[float], str]:
    return lambda v: f"{v:.{digits}f}"


RUN_FORMATS: dict[str, Callable[[Any], str]] = {
    "score": _fixed(1), "ci_low": _fixed(1), "ci_high": _fixed(1), "retention": _fixed(3), "tokens": _fixed(1),
    "patches": _fixed(0), "flops": lambda v: f"{v / 1e9:.3f}", "latency_s": _fixed(3), "window_share": _fixed(3),
    "on_frontier": lambda v: "yes" if v else "", "on_strategy_frontier": lambda v: "yes" if v else "",
    "ci_overlaps_frontier": lambda v: "yes" if v else ""}
STRATEGY_FORMATS: dict[str, Callable[[Any], str]] = {
    "best_score": _fixed(1), "vanilla_score": _fixed(1), "auc_logcost": _fixed(1),
    "cost_at_95": lambda v: f"{v:.4g}", "cost_at_99": lambda v: f"{v:.4g}"}


SPENT_TOLERANCE = 0.05  # relative gap between the nominal budget and the mean retention that gets named


def budget_label(budget: Any, retention: float) -> str:
    """The budget as tables show it: the nominal share where the run spent it, else what it spent too
    ("1.0, spent 0.25"): a strategy that spends what its policy chooses (resadapt, free mode) must
    never read as having run at a budget it did not use. Its place on every figure is its spending."""
    text = str(budget)
    if not _is_number(text) or not np.isfinite(retention):
        return text
    nominal = float(text)
    if nominal > 0 and abs(retention - nominal) > SPENT_TOLERANCE * nominal:
        return f"{text}, spent {retention:.3g}"
    return text


def frontier_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The annotated runs in reading order: task, backbone, strategy, then cheapest first."""
    return runs.sort_values(["task", "backbone", "strategy", "tokens", "frames"])[TABLE_COLUMNS].reset_index(drop=True)


def labelled(table: pd.DataFrame) -> pd.DataFrame:
    """A table for reading: a budget the run did not spend is shown with what it spent (`budget_label`);
    the CSVs keep the nominal budget beside the retention column."""
    shown = table.copy()
    shown["budget"] = [budget_label(b, r) for b, r in zip(shown["budget"], shown["retention"])]
    return shown


def to_markdown(table: pd.DataFrame, formats: Mapping[str, Callable[[Any], str]],
                rename: Mapping[str, str] | None = None) -> str:
    """A GitHub table with each column rounded for reading (the CSV keeps full precision)."""
    shown = table.copy()
    for col, fmt in formats.items():
        if col in shown:
            shown[col] = [("" if pd.isna(v) else fmt(v)) for v in shown[col]]
    align = ["right" if pd.api.types.is_numeric_dtype(table[col]) and table[col].dtype != bool else "left"
             for col in table.columns]
    return shown.rename(columns=dict(rename or {})).to_markdown(index=False, disable_numparse=True,
                                                                colalign=align) + "\n"


PAIRED_FORMATS: dict[str, Callable[[Any], str]] = {
    "retention": _fixed(3), "reference_retention": _fixed(3), "score": _fixed(1), "reference_score": _fixed(1),
    "diff": lambda v: f"{v:+.1f}", "ci_low": lambda v: f"{v:+.1f}", "ci_high": lambda v: f"{v:+.1f}",
    "p_value": lambda v: f"{v:.3g}", "matched": lambda v: "yes" if v else "no",
    "significant": lambda v: "yes" if v else ""}


def write_tables(runs: pd.DataFrame, strategies: pd.DataFrame, out: str | Path,
                 paired: pd.DataFrame | None = None) -> list[Path]:
    """frontier.csv/.md (one row per run) and strategies.csv/.md (one row per strategy) in `out`;
    with `paired`, also paired.csv/.md, and strategies.md gains the paired comparisons below its table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = frontier_table(runs)
    paths = [out / "frontier.csv", out / "frontier.md", out / "strategies.csv", out / "strategies.md"]
    table.to_csv(paths[0], index=False)
    paths[1].write_text(to_markdown(labelled(table), RUN_FORMATS, {"flops": "GFLOPs"}))
    strategies.to_csv(paths[2], index=False)
    text = to_markdown(strategies, STRATEGY_FORMATS)
    if paired is not None and len(paired):
        shown = paired.sort_values(["task", "backbone", "strategy", "retention"]).reset_index(drop=True)
        paired_md = to_markdown(labelled(shown), PAIRED_FORMATS)
        paths += [out / "paired.csv", out / "paired.md"]
        shown.to_csv(paths[4], index=False)
        paths[5].write_text(paired_md)
        text += (f"\n## Paired against {PAIRED_REFERENCE} at matched retention\n\n"
                 "diff = run - reference in points on the common samples, 95% paired bootstrap CI, p: exact "
                 "McNemar (binary scores) or paired bootstrap (IoU); matched: retention within 1% of the "
                 "reference run's.\n\n" + paired_md)
    paths[3].write_text(text)
    return paths


def build(root: str | Path, out: str | Path, cost: str = "tokens", tasks: Iterable[str] | None = None,
          subset: str = "all", subset_budget: str = "0.25") -> dict[str, Any]:
    """Load every run under `root`, then write the tables, one figure per task x backbone and the grid
    figure to `out`; returns the annotated runs, the strategy table and the paths written.

    `subset="sensitive"` measures every run on the samples whose vanilla answer changes under
    uniform-scale at `subset_budget` only (`sensitive_ids`)."""
    cost_column(cost)
    if subset not in SUBSETS:
        raise UserError(f"unknown subset {subset!r}; choose one of {', '.join(SUBSETS)}")
    tasks = list(tasks) if tasks else None
    runs = load_runs(root, tasks)
    if runs.empty:
        raise UserError(_no_runs_message(Path(root), tasks))
    records: dict[str, list[dict[str, Any]]] = {}
    ids = None
    if subset == "sensitive":
        ids = sensitive_ids(runs, subset_budget, records)
        if not ids:
            raise UserError(f"the sensitive subset needs a {VANILLA} run and a {PAIRED_REFERENCE} run at budget "
                            f"{subset_budget} of a task; run them, or pass --subset-budget with one that exists")
        runs = subset_runs(runs, ids, records)
    runs = annotate(runs, cost)
    strategies = strategy_table(runs, cost)
    paired = paired_table(runs, records=records, ids=ids)
    runs = mark_paired(runs, paired)
    colors = strategy_colors(runs["strategy"])
    out = Path(out)
    figures = [path for (task, backbone), group in runs.groupby(GROUP, sort=True)
               for path in plot_task(group, cost, out / f"{task}__{backbone}", colors)]
    allocation = []
    for (task, backbone), group in runs.groupby(GROUP, sort=True):
        first = group["directory"].iloc[0]
        if first not in records:
            records[first] = read_records(Path(first) / SAMPLES)
        if is_video_run(records[first]):
            allocation += plot_allocation(group, out / f"{task}__{backbone}__allocation", records)
    return {"runs": runs, "strategies": strategies, "paired": paired, "allocation": allocation,
            "subset": {f"{t} · {b}": len(v) for (t, b), v in ids.items()} if ids is not None else None,
            "tables": write_tables(runs, strategies, out, paired),
            "figures": figures, "grid": plot_grid(runs, cost, out / "frontier", colors),
            "costs": plot_costs(runs, out / "frontier-costs", colors=colors)}


def _no_runs_message(root: Path, tasks: Iterable[str] | None) -> str:
    """Name the fix: results roots one level down (`make demo` writes results/demo) or running first."""
    where = f"{root} for task {', '.join(tasks)}" if tasks else str(root)
    nested = sorted({str(p.parents[4]) for p in root.glob(f"*/*/*/*/*/{SUMMARY}")})
    if nested:
        return f"no finished runs directly under {where}; runs were found under {', '.join(nested)}: pass that as ROOT"
    return (f"no finished runs under {where} (no <task>/<backbone>/<strategy>/<run>/summary.json); "
            "run `resadapt-eval sweep` or `make demo` first")


# -- per sample: where did the tokens go? ------------------------------------------------------

def evidence_spend(records: Iterable[Record | dict[str, Any]], metric: str, source_frames: int | None = None) -> pd.DataFrame:
    """Per probe sample: the share of its LLM visual tokens that landed on the evidence, with the
    evidence size and the sample's score (x 100, as in summaries). This shows *why* a strategy wins:
    whether its budget went where the answer is.

    A chunk's tokens are (h/f)(w/f) with f = patch x merge (28 on Qwen2.5-VL); every chunk side is a
    multiple of f, so f cancels and the share is the evidence chunks' share of the planned pixel
    area, whatever the backbone. Evidence chunks are those holding an evidence frame; an image is one
    chunk, so its share is 1. A token reduction (random-drop) keeps tokens from every chunk alike, so
    the share is its expectation there. Plan frames are positions into the decoded frames: they are
    the clip's frame numbers when the run decoded every frame (the probe cards do); otherwise pass the
    clip's frame count as `source_frames` to map them through the harness's uniform sampling.
    Error records and records without evidence (real benchmarks) are left out.
    """
    typed = (r if isinstance(r, Record) else Record.from_dict(r) for r in records)
    rows = [_evidence_row(r, metric, source_frames) for r in typed if r.ok and r.plan and r.meta.get("evidence")]
    return pd.DataFrame(rows, columns=EVIDENCE_COLUMNS)


def _evidence_row(record: Record, metric: str, source_frames: int | None) -> dict[str, Any]:
    evidence, plan = record.meta["evidence"], record.plan
    share = evidence_share(plan, evidence.get("frames"), source_frames, record.frames_decoded)
    return {"id": record.id, "evidence_size": evidence.get("size", evidence.get("text_size")),
            "tokens": record.tokens, "evidence_share": share, "evidence_tokens": share * record.tokens,
            "score": 100.0 * float(record.score[metric])}


def evidence_share(plan: dict[str, Any], evidence_frames: Iterable[int] | None, source_frames: int | None = None,
                   decoded: int | None = None) -> float:
    """The share of a plan's token area in chunks that hold at least one evidence frame; evidence without
    frame numbers (an image probe) is in every planned frame."""
    chunks, positions = plan["chunks"], list(plan["frames"])
    if source_frames is not None:
        numbers = uniform_indices(source_frames, decoded or len(positions))
        positions = [numbers[p] for p in positions]
    wanted = set(positions if evidence_frames is None else evidence_frames)
    per_chunk = max(1, len(positions) // max(1, len(chunks)))
    hit = np.array([bool(wanted & set(positions[k * per_chunk:(k + 1) * per_chunk])) for k in range(len(chunks))])
    area = np.array([h * w for h, w in chunks], dtype=float)
    return float(area[hit].sum() / area.sum()) if area.sum() > 0 else 0.0


def evidence_runs(runs: pd.DataFrame, source_frames: int | None = None) -> pd.DataFrame:
    """`evidence_spend` of every run in `runs` (rows of `load_runs`), with the run's identity columns."""
    parts = []
    for run in runs.itertuples(index=False):
        spend = evidence_spend(load_records(Path(run.directory) / SAMPLES), run.main_metric, source_frames)
        parts.append(spend.assign(task=run.task, backbone=run.backbone, strategy=run.strategy, budget=run.budget,
                                  frames=run.frames))
    columns = ["task", "backbone", "strategy", "budget", "frames"] + EVIDENCE_COLUMNS
    return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)


def evidence_summary(spend: pd.DataFrame) -> pd.DataFrame:
    """Per task x strategy x budget: mean evidence share, mean tokens on the evidence, mean score."""
    return (spend.groupby(["task", "backbone", "strategy", "budget"], sort=True)
            .agg(samples=("id", "size"), evidence_share=("evidence_share", "mean"),
                 evidence_tokens=("evidence_tokens", "mean"), tokens=("tokens", "mean"), score=("score", "mean"))
            .reset_index())


def score_by_evidence_size(spend: pd.DataFrame, bins: int = 4) -> pd.DataFrame:
    """Mean score per strategy x budget (rows) in `bins` quantile bins of evidence size (columns, e.g.
    tile side in px) for one task: does a strategy lose the small needles first?"""
    if spend["task"].nunique() != 1:
        raise ValueError("score_by_evidence_size compares sizes within one task; select one first")
    size = spend["evidence_size"].astype(float)
    edges = np.unique(np.quantile(size, np.linspace(0, 1, bins + 1)))
    labels = [f"{a:g}-{b:g}" for a, b in zip(edges[:-1], edges[1:])]
    size_bin = pd.cut(size, edges, labels=labels, include_lowest=True) if len(labels) else size.astype(str)
    return spend.assign(evidence_size=size_bin).pivot_table(
        index=["strategy", "budget"], columns="evidence_size", values="score", aggfunc="mean", observed=True)
