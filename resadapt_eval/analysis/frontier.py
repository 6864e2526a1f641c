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

import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from resadapt_eval.pipeline.media import uniform_indices
from resadapt_eval.core.record import Record
from resadapt_eval.pipeline.store import SAMPLES, SUMMARY, load_records, read_json
from resadapt_eval.core.types import UserError

COSTS: dict[str, str] = {"tokens": "tokens", "retention": "retention", "patches": "patches", "flops": "flops",
                         "latency": "latency_s"}
COST_LABELS: dict[str, str] = {
    "tokens": "LLM visual tokens per sample (log)",
    "retention": "retention: visual tokens / vanilla tokens (log)",
    "patches": "vision-encoder patches per sample (log)",
    "flops": "prefill FLOPs per sample, vision + LLM (log)",
    "latency": "end-to-end latency per sample, s (log)",
}
METRIC_LABELS: dict[str, str] = {"accuracy": "accuracy (%)", "iou": "mIoU (%)", "iou_robust": "mIoU, robust parser (%)"}
VANILLA = "vanilla"
GROUP = ["task", "backbone"]
RUN_COLUMNS = ["task", "backbone", "strategy", "budget", "frames", "n", "main_metric", "score", "ci_low", "ci_high",
               "retention", "tokens", "patches", "flops", "latency_s", "directory"]
TABLE_COLUMNS = ["task", "backbone", "strategy", "budget", "frames", "n", "main_metric", "score", "ci_low", "ci_high",
                 "retention", "tokens", "patches", "flops", "latency_s", "on_frontier", "on_strategy_frontier",
                 "ci_overlaps_frontier"]
STRATEGY_COLUMNS = ["task", "backbone", "strategy", "points", "best_score", "vanilla_score", "auc_logcost",
                    "cost_at_95", "cost_at_99"]
EVIDENCE_COLUMNS = ["id", "evidence_size", "tokens", "evidence_share", "evidence_tokens", "score"]


# -- loading -----------------------------------------------------------------------------------

def load_runs(root: str | Path, tasks: Iterable[str] | None = None) -> pd.DataFrame:
    """One row per finished run under `root` (columns RUN_COLUMNS).

    Only the results layout's depth is searched, so `results/reference/...` and output folders such
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
            "tokens": _number(summary.get("tokens_mean")), "patches": _number(summary.get("patches_mean")),
            "flops": _number(summary.get("flops_mean")),
            "latency_s": _number((summary.get("timings_mean") or {}).get("e2e")), "directory": str(directory)}


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
    "patches": _fixed(0), "flops": lambda v: f"{v / 1e9:.3f}", "latency_s": _fixed(3),
    "on_frontier": lambda v: "yes" if v else "", "on_strategy_frontier": lambda v: "yes" if v else "",
    "ci_overlaps_frontier": lambda v: "yes" if v else ""}
STRATEGY_FORMATS: dict[str, Callable[[Any], str]] = {
    "best_score": _fixed(1), "vanilla_score": _fixed(1), "auc_logcost": _fixed(1),
    "cost_at_95": lambda v: f"{v:.4g}", "cost_at_99": lambda v: f"{v:.4g}"}


def frontier_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The annotated runs in reading order: task, backbone, strategy, then cheapest first."""
    return runs.sort_values(["task", "backbone", "strategy", "tokens", "frames"])[TABLE_COLUMNS].reset_index(drop=True)


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


def write_tables(runs: pd.DataFrame, strategies: pd.DataFrame, out: str | Path) -> list[Path]:
    """frontier.csv/.md (one row per run) and strategies.csv/.md (one row per strategy) in `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = frontier_table(runs)
    paths = [out / "frontier.csv", out / "frontier.md", out / "strategies.csv", out / "strategies.md"]
    table.to_csv(paths[0], index=False)
    paths[1].write_text(to_markdown(table, RUN_FORMATS, {"flops": "GFLOPs"}))
    strategies.to_csv(paths[2], index=False)
    paths[3].write_text(to_markdown(strategies, STRATEGY_FORMATS))
    return paths


def build(root: str | Path, out: str | Path, cost: str = "tokens", tasks: Iterable[str] | None = None) -> dict[str, Any]:
    """Load every run under `root`, then write the tables, one figure per task x backbone and the grid
    figure to `out`; returns the annotated runs, the strategy table and the paths written."""
    cost_column(cost)
    tasks = list(tasks) if tasks else None
    runs = load_runs(root, tasks)
    if runs.empty:
        raise UserError(_no_runs_message(Path(root), tasks))
    runs = annotate(runs, cost)
    strategies = strategy_table(runs, cost)
    colors = strategy_colors(runs["strategy"])
    out = Path(out)
    figures = [path for (task, backbone), group in runs.groupby(GROUP, sort=True)
               for path in plot_task(group, cost, out / f"{task}__{backbone}", colors)]
    return {"runs": runs, "strategies": strategies, "tables": write_tables(runs, strategies, out),
            "figures": figures, "grid": plot_grid(runs, cost, out / "frontier", colors)}


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
