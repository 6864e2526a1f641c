"""The frontier: Pareto sets, the strategy table, loading runs, the tables and figures, the CLI and the notebook."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from resadapt_eval.analysis import frontier as fr
from resadapt_eval.cli import COST_AXES, main

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "frontier.ipynb"
NEW_STRATEGY = "my-allocator"  # a strategy the library has never heard of


# -- a small results tree ----------------------------------------------------------------------

def video_record(i: int, strategy: str, keep_evidence: bool, score: float) -> dict:
    """A probe-videoqa record: 8 frames in 4 chunks, evidence in chunk 3 (frames 6, 7)."""
    if strategy == "uniform-frames":
        frames, chunks = ([0, 7] if keep_evidence else [0, 3]), [[196, 196]]
    elif strategy == "uniform-scale":
        frames, chunks = list(range(8)), [[84, 84]] * 4
    else:  # vanilla, random-drop, the new one: full input (the new one spends more on the evidence chunk)
        frames, chunks = list(range(8)), [[196, 196]] * 3 + [[196, 196]]
        if strategy == NEW_STRATEGY:
            chunks = [[56, 56]] * 3 + [[196, 196]]
    tokens = sum(h * w for h, w in chunks) // 784
    return {"id": f"{i:04d}-pvqa-0-{i:05d}", "target": "A",
            "meta": {"duration": "short", "videoID": f"pvqa-0-{i:05d}",
                     "evidence": {"frames": [6, 7], "chunk": 3, "box": [10, 10, 40, 40], "size": 30 + i,
                                  "period": 4, "texture": "horizontal stripes"}},
            "prediction": "A", "score": {"accuracy": score}, "vanilla_tokens": 196, "tokens": tokens,
            "retention": tokens / 196, "plan": {"frames": frames, "chunks": chunks, "scales": [], "starts_s": [],
                                                "limit": 49, "feasible": True, "reduction": None, "note": ""},
            "frames_decoded": 8, "timings": {"e2e": 0.05}, "error": None}


def write_run(root: Path, task: str, strategy: str, budget: str, frames: int, score: float, tokens: float,
              metric: str = "accuracy", vanilla_tokens: float = 196.0, records: list[dict] | None = None) -> Path:
    """A run directory as the runner writes it (summary keys of a real probe run)."""
    d = root / task / "reference" / strategy / f"b{budget}-f{frames}"
    d.mkdir(parents=True)
    block = {"value": score, "ci_low": max(0.0, score - 4.0), "ci_high": min(100.0, score + 4.0), "n": 200}
    summary = {"task": task, "backbone": "reference", "strategy": strategy, "budget": budget,
               "budget_spec": {"fraction": float(budget), "tokens": None, "ref_frames": None}, "frames": frames,
               "config_hash": "0123456789abcdef", "n": 200, "n_scored": 200, "n_errors": 0, "n_infeasible": 0,
               "main_metric": metric, "metrics": {metric: block, "unparsed": {**block, "value": 0.0}},
               "retention_mean": tokens / vanilla_tokens, "tokens_mean": tokens,
               "vanilla_tokens_mean": vanilla_tokens, "patches_mean": 4 * vanilla_tokens,
               "flops_mean": 1e9 * (1 + tokens / vanilla_tokens),
               "timings_mean": {"e2e": 0.02 + tokens / 4000, "encode": 0.01}, "breakdowns": {}, "errors": []}
    (d / "summary.json").write_text(json.dumps(summary))
    (d / "manifest.json").write_text(json.dumps({"config": {"task": task, "strategy": strategy}}))
    (d / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records or []))
    return d


# (strategy, budget) -> (score, tokens) on probe-videoqa (accuracy) and probe-grounding (mIoU)
VIDEOQA = {("vanilla", b): (100.0, 196.0) for b in ("0.25", "0.5", "1")} | {
    ("uniform-scale", "0.25"): (27.0, 36.0), ("uniform-scale", "0.5"): (27.0, 81.0), ("uniform-scale", "1"): (100.0, 196.0),
    ("random-drop", "0.25"): (66.0, 49.0), ("random-drop", "0.5"): (86.0, 98.0), ("random-drop", "1"): (100.0, 196.0),
    (NEW_STRATEGY, "0.25"): (90.0, 49.0), (NEW_STRATEGY, "0.5"): (99.5, 98.0), (NEW_STRATEGY, "1"): (100.0, 196.0)}
GROUNDING = {("vanilla", "1"): (93.9, 256.0), ("uniform-frames", "0.25"): (41.7, 64.0),
             ("uniform-frames", "1"): (93.9, 256.0), (NEW_STRATEGY, "0.25"): (92.0, 64.0)}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("results")
    for (strategy, budget), (score, tokens) in VIDEOQA.items():
        records = [video_record(i, strategy, keep_evidence=i % 2 == 0, score=float(i % 2 == 0)) for i in range(4)]
        write_run(root, "probe-videoqa", strategy, budget, 8, score, tokens, records=records)
    for (strategy, budget), (score, tokens) in GROUNDING.items():
        write_run(root, "probe-grounding", strategy, budget, 32, score, tokens, metric="iou", vanilla_tokens=256.0)
    return root


# -- Pareto sets -------------------------------------------------------------------------------

def test_pareto_keeps_exact_duplicates_and_drops_dominated():
    assert fr.pareto_mask([1, 1, 2, 3], [5, 5, 4, 6]).tolist() == [True, True, False, True]


def test_pareto_at_equal_cost_only_the_best_score():
    assert fr.pareto_mask([4, 4, 4], [50, 70, 60]).tolist() == [False, True, False]


def test_pareto_single_point_and_missing_values():
    assert fr.pareto_mask([10], [3]).tolist() == [True]
    assert fr.pareto_mask([1, np.nan, 2], [1, 99, np.nan]).tolist() == [True, False, False]


def test_dominated_point_with_overlapping_ci_is_off_but_flagged():
    cost, score, ci_high = [10, 20, 30], [50.0, 49.0, 40.0], [55.0, 52.0, 45.0]
    on = fr.pareto_mask(cost, score)
    assert on.tolist() == [True, False, False]
    # 49 [.., 52] reaches 50 (the frontier at cost <= 20); 40 [.., 45] does not
    assert fr.ci_overlap_mask(cost, score, ci_high, on).tolist() == [False, True, False]


def test_annotate_per_group_and_per_strategy():
    runs = pd.DataFrame({"task": ["t"] * 4, "backbone": ["b"] * 4, "strategy": ["a", "a", "b", "b"],
                         "tokens": [10.0, 20.0, 10.0, 20.0], "score": [50.0, 60.0, 55.0, 58.0],
                         "ci_high": [52.0, 62.0, 57.0, 61.0]})
    out = fr.annotate(runs, "tokens")
    assert out["on_frontier"].tolist() == [False, True, True, False]
    assert out["on_strategy_frontier"].tolist() == [True, True, True, True]
    assert out["ci_overlaps_frontier"].tolist() == [False, False, False, True]  # 58 [.., 61] reaches 60


# -- the strategy table ------------------------------------------------------------------------

def _table(points: dict[str, list[tuple[float, float]]]) -> pd.DataFrame:
    rows = [{"task": "t", "backbone": "b", "strategy": s, "tokens": c, "score": v}
            for s, pts in points.items() for c, v in pts]
    return fr.strategy_table(pd.DataFrame(rows), "tokens").set_index("strategy")


def test_auc_ranks_the_clearly_better_strategy_first_and_is_in_score_units():
    table = _table({"vanilla": [(100, 80.0)], "good": [(10, 70.0), (100, 80.0)], "bad": [(10, 30.0), (100, 80.0)],
                    "late": [(math.sqrt(10 * 100), 70.0)]})
    assert table.loc["good", "auc_logcost"] > table.loc["bad", "auc_logcost"]
    assert table.loc["good", "auc_logcost"] == pytest.approx(70.0)  # 70 over the whole range, 80 only at its end
    assert table.loc["late", "auc_logcost"] == pytest.approx(35.0)  # 0 over the first half of log cost
    assert table.loc["vanilla", "auc_logcost"] == 0.0  # nothing below the dearest cost
    assert table.loc["good", "points"] == 2 and table.loc["good", "best_score"] == 80.0


def test_cost_to_reach_vanilla_and_a_strategy_that_never_does():
    table = _table({"vanilla": [(100, 80.0)], "close": [(20, 76.5), (50, 79.5)], "never": [(10, 60.0), (50, 75.0)]})
    assert table.loc["close", "cost_at_95"] == 20 and table.loc["close", "cost_at_99"] == 50
    assert np.isnan(table.loc["never", "cost_at_95"]) and np.isnan(table.loc["never", "cost_at_99"])
    assert table.loc["vanilla", "cost_at_95"] == 100
    no_vanilla = _table({"a": [(10, 60.0)]})
    assert np.isnan(no_vanilla.loc["a", "cost_at_95"]) and np.isnan(no_vanilla.loc["a", "vanilla_score"])


# -- loading runs and building the outputs -----------------------------------------------------

def test_load_runs_reads_every_summary_and_skips_broken_ones(results, tmp_path):
    runs = fr.load_runs(results)
    assert len(runs) == len(VIDEOQA) + len(GROUNDING)
    assert set(fr.RUN_COLUMNS) <= set(runs.columns)
    row = runs[(runs.strategy == NEW_STRATEGY) & (runs.task == "probe-videoqa") & (runs.budget == "0.25")].iloc[0]
    assert (row.score, row.ci_low, row.ci_high, row.tokens, row.frames) == (90.0, 86.0, 94.0, 49.0, 8)
    assert row.latency_s == pytest.approx(0.02 + 49 / 4000) and row.retention == pytest.approx(0.25)
    assert set(runs[runs.task == "probe-grounding"].main_metric) == {"iou"}
    assert len(fr.load_runs(results, tasks=["probe-grounding"])) == len(GROUNDING)

    broken = tmp_path / "results"
    write_run(broken, "probe-videoqa", "vanilla", "1", 8, 100.0, 196.0)
    (write_run(broken, "probe-videoqa", "uniform-scale", "1", 8, 99.0, 196.0) / "summary.json").write_text("{not json")
    bad = write_run(broken, "probe-videoqa", "random-drop", "1", 8, 99.0, 196.0) / "summary.json"
    bad.write_text(json.dumps({k: v for k, v in json.loads(bad.read_text()).items() if k != "main_metric"}))
    with pytest.warns(UserWarning, match="skipping") as caught:
        runs = fr.load_runs(broken)
    assert runs.strategy.tolist() == ["vanilla"] and len(caught) == 2


def test_build_writes_tables_and_figures_for_a_new_strategy(results, tmp_path):
    out = tmp_path / "frontier"
    result = fr.build(results, out)
    runs = result["runs"].set_index(["task", "strategy", "budget"])
    assert runs.loc[("probe-videoqa", NEW_STRATEGY, "0.25"), "on_frontier"]
    assert not runs.loc[("probe-videoqa", "random-drop", "0.25"), "on_frontier"]  # same cost, lower score
    assert runs.loc[("probe-videoqa", "vanilla", "1"), "on_frontier"]  # ties at the top are all on
    assert not runs.loc[("probe-videoqa", "uniform-scale", "0.5"), "on_frontier"]

    table = pd.read_csv(out / "frontier.csv")
    assert set(fr.TABLE_COLUMNS) <= set(table.columns) and len(table) == len(VIDEOQA) + len(GROUNDING)
    assert table.equals(table.sort_values(["task", "backbone", "strategy", "tokens"], kind="stable").reset_index(drop=True))
    strategies = pd.read_csv(out / "strategies.csv").set_index(["task", "strategy"])
    videoqa = strategies.loc["probe-videoqa", "auc_logcost"]
    assert videoqa[NEW_STRATEGY] > videoqa["random-drop"] > videoqa["uniform-scale"]
    assert strategies.loc[("probe-videoqa", NEW_STRATEGY), "cost_at_95"] == 98.0
    md = [line.split("|")[1:-1] for line in (out / "frontier.md").read_text().splitlines()]
    row = [[c.strip() for c in line] for line in md if NEW_STRATEGY in line[2] and line[3].strip() == "0.5"
           and "videoqa" in line[0]][0]
    assert row[7:10] == ["99.5", "95.5", "100.0"] and row[10] == "0.500" and row[16] == "yes"

    for stem in ("probe-videoqa__reference", "probe-grounding__reference", "frontier"):
        assert (out / f"{stem}.png").stat().st_size > 10_000
        svg = (out / f"{stem}.svg").read_text()
        assert NEW_STRATEGY in svg and "LLM visual tokens per sample (log)" in svg
    assert "mIoU (%)" in (out / "probe-grounding__reference.svg").read_text()
    assert "probe-videoqa · reference" in (out / "probe-videoqa__reference.svg").read_text()


def test_colours_are_stable_whatever_the_order():
    a = fr.strategy_colors(["vanilla", NEW_STRATEGY, "random-drop"])
    b = fr.strategy_colors(["random-drop", "vanilla", NEW_STRATEGY, "vanilla"])
    assert a == b and len(set(a.values())) == 3


def test_evidence_spend_counts_tokens_on_the_evidence_chunks():
    records = [video_record(0, "uniform-frames", True, 1.0), video_record(1, "uniform-frames", False, 0.0),
               video_record(2, "vanilla", True, 1.0), video_record(3, NEW_STRATEGY, True, 1.0),
               {**video_record(4, "vanilla", True, 0.0), "error": "corrupt video"}]
    spend = fr.evidence_spend(records, "accuracy")
    assert spend["evidence_share"].tolist() == pytest.approx([1.0, 0.0, 0.25, 196**2 / (196**2 + 3 * 56**2)])
    assert spend["evidence_tokens"].tolist() == pytest.approx([49.0, 0.0, 49.0, 49.0])
    assert spend["score"].tolist() == [100.0, 0.0, 100.0, 100.0] and spend["evidence_size"].tolist() == [30, 31, 32, 33]
    image = {"frames": [0], "chunks": [[168, 168]]}
    assert fr.evidence_share(image, None) == 1.0  # an image probe: the evidence is in the one image
    # 4 of 8 frames decoded ([0, 2, 5, 7]): position 3 is frame 7, which is evidence
    assert fr.evidence_share({"frames": [0, 1, 2, 3], "chunks": [[28, 28], [56, 56]]}, [6, 7], source_frames=8,
                             decoded=4) == pytest.approx(4 / 5)


def test_evidence_runs_and_summaries(results):
    runs = fr.load_runs(results, tasks=["probe-videoqa"])
    spend = fr.evidence_runs(runs)
    assert len(spend) == 4 * len(VIDEOQA)
    summary = fr.evidence_summary(spend).set_index(["strategy", "budget"])
    assert summary.loc[("vanilla", "1"), "evidence_share"] == pytest.approx(0.25)
    assert summary.loc[(NEW_STRATEGY, "1"), "evidence_tokens"] == pytest.approx(49.0)
    by_size = fr.score_by_evidence_size(spend, bins=2)
    assert by_size.shape == (len(VIDEOQA), 2)


def test_allocation_matrix_spreads_each_chunks_tokens_over_its_frames():
    ids, mat = fr.allocation_matrix([video_record(0, "uniform-scale", True, 1.0)])
    assert ids == ["0000-pvqa-0-00000"] and mat.shape == (1, 8) and np.allclose(mat, 36 / 8)
    record = video_record(1, NEW_STRATEGY, True, 1.0)  # three small chunks, the evidence chunk (frames 6, 7) at full size
    _, mat = fr.allocation_matrix([record], ids=["missing", record["id"]])
    assert mat[0].sum() == 0 and mat[1].sum() == pytest.approx(record["tokens"])
    assert mat[1, 6] == mat[1, 7] == pytest.approx(record["tokens"] * 196 ** 2 / (3 * 56 ** 2 + 196 ** 2) / 2)


# -- the CLI and the notebook ------------------------------------------------------------------

def test_cli_writes_every_output(results, tmp_path):
    out = tmp_path / "cli"
    res = CliRunner().invoke(main, ["frontier", str(results), "--out", str(out), "--cost", "tokens"])
    assert res.exit_code == 0, res.output
    expected = ["frontier.csv", "frontier.md", "strategies.csv", "strategies.md", "frontier.png", "frontier.svg",
                "paired.csv", "paired.md", "frontier-costs.png", "frontier-costs.svg",
                "probe-videoqa__reference__allocation.png", "probe-videoqa__reference__allocation.svg"]
    expected += [f"{t}__reference.{ext}" for t in ("probe-videoqa", "probe-grounding") for ext in ("png", "svg")]
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)
    assert str(out / "frontier.md") in res.output


def test_cli_task_filter_and_cost_axes(results, tmp_path):
    out = tmp_path / "latency"
    res = CliRunner().invoke(main, ["frontier", str(results), "--out", str(out), "--cost", "latency",
                                    "--task", "probe-grounding"])
    assert res.exit_code == 0, res.output
    assert not (out / "probe-videoqa__reference.png").exists() and (out / "probe-grounding__reference.png").exists()
    assert "end-to-end latency per sample, s (log)" in (out / "frontier.svg").read_text()
    assert COST_AXES == list(fr.COSTS)


def test_cli_empty_root_is_one_line_exit_2(tmp_path):
    res = CliRunner().invoke(main, ["frontier", str(tmp_path)])
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "no finished runs" in lines[0] and "resadapt-eval sweep" in lines[0]
    nested = tmp_path / "nested"
    write_run(nested / "demo", "probe-videoqa", "vanilla", "1", 8, 100.0, 196.0)
    res = CliRunner().invoke(main, ["frontier", str(nested)])
    assert res.exit_code == 2 and str(nested / "demo") in res.stderr


def test_notebook_runs_headless_on_a_results_tree(results, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("RESADAPT_RESULTS", str(results))
    monkeypatch.setenv("RESADAPT_FRONTIER_OUT", str(tmp_path / "nb"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=120, resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 5  # two tasks, the grid, two cost axes, allocation
    text = json.dumps(outputs)
    assert NEW_STRATEGY in text and "cost_at_95" in text and "30-30.75" in text  # tables, down to evidence size
    assert (tmp_path / "nb" / "frontier.png").exists() and (tmp_path / "nb" / "probe-videoqa__reference.png").exists()
