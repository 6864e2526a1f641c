"""`resadapt-eval check` and `check-baseline`: the regression gate, on real runs of the bundled backbone.

A baseline run is evaluated once; the runs under test are that run with answers flipped, costs
raised or ids changed (edited records), or a real rerun of the same configuration.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from resadapt_eval import probes
from resadapt_eval.analysis.check import Limits, check, mcnemar_exact, paired_bootstrap
from resadapt_eval.cli import main
from resadapt_eval.pipeline.store import SAMPLES, SUMMARY, read_records
from resadapt_eval.analysis.check_baseline import check_baseline
from resadapt_eval.pipeline.runner import RunConfig, run

PUBLISHED = Path(__file__).parents[1] / "resadapt_eval" / "assets" / "published" / "resadapt-qwen2.5-vl-7b.json"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("check-data")
    return {"probe-videoqa": probes.build("probe-videoqa", root / "videoqa", seed=0, n=120),
            "probe-grounding": probes.build("probe-grounding", root / "grounding", seed=0, n=30)}


@pytest.fixture(scope="module")
def reference_tree(data, tmp_path_factory):
    """A committed-style reference tree: videoqa (binary accuracy) and grounding (continuous IoU)."""
    out = tmp_path_factory.mktemp("reference")
    dirs = {}
    for task, budget in (("probe-videoqa", "1.0"), ("probe-grounding", "1.0")):
        cfg = RunConfig(task=task, strategy="uniform-scale", budget=budget, data_root=str(data[task]),
                        out=str(out), progress=False)
        dirs[task] = run(cfg).directory
    return out, dirs


def edited_copy(src: Path, dst: Path, edit) -> Path:
    """A copy of a run whose records pass through `edit(index, record)`; the summary is kept."""
    shutil.copytree(src, dst)
    recs = [edit(i, r) for i, r in enumerate(read_records(src / SAMPLES))]
    (dst / SAMPLES).write_text("".join(json.dumps(r) + "\n" for r in recs))
    return dst


def flip_correct(n_flips: int):
    state = {"left": n_flips}

    def edit(i, r):
        if state["left"] and r["score"]["accuracy"] == 1.0:
            state["left"] -= 1
            r["score"]["accuracy"], r["prediction"] = 0.0, "Z"
        return r
    return edit


def test_mcnemar_exact_matches_the_binomial_by_hand():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(3, 0) == pytest.approx(2 / 8)
    assert mcnemar_exact(10, 0) == pytest.approx(2 / 1024)
    assert mcnemar_exact(5, 5) == 1.0
    want = 2 * sum(math.comb(20, k) for k in range(5)) / 2 ** 20
    assert mcnemar_exact(16, 4) == pytest.approx(want) == mcnemar_exact(4, 16)


def test_paired_bootstrap_separates_a_shift_from_noise():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.1, 200)
    p, lo, hi = paired_bootstrap(noise - noise.mean(), seed=0)
    assert p > 0.5 and lo < 0 < hi
    p, lo, hi = paired_bootstrap(noise - noise.mean() - 0.05, seed=0)
    assert p < 0.01 and hi < 0


def test_identical_rerun_passes_and_is_deterministic(reference_tree, tmp_path):
    ref_root, dirs = reference_tree
    results = check_baseline(ref_root, tmp_path / "rerun", Limits())
    assert len(results) == 2 and all(r.result.passed for r in results)
    for r in results:  # same machine, same config: records identical, so the gate never flakes
        assert r.result.stats["identical_predictions"] == r.result.stats["n_paired"]
        assert r.result.stats["costs"]["tokens"]["rise"] == 0.0
        new = {x["id"]: (x["prediction"], x["tokens"], x["score"]) for x in read_records(r.run / SAMPLES)}
        old = {x["id"]: (x["prediction"], x["tokens"], x["score"]) for x in read_records(r.baseline / SAMPLES)}
        assert new == old


def test_ten_percent_of_correct_answers_flipped_fails(reference_tree, tmp_path):
    src = reference_tree[1]["probe-videoqa"]
    n_correct = sum(r["score"]["accuracy"] for r in read_records(src / SAMPLES))
    assert n_correct >= 60  # the reference backbone reads the probe: there is something to lose
    bad = edited_copy(src, tmp_path / "bad", flip_correct(int(0.1 * n_correct)))
    res = CliRunner().invoke(main, ["check", str(bad), "--reference", str(src)])  # the former option name
    assert res.exit_code == 1, res.output
    assert "FAIL: accuracy dropped" in res.output and "McNemar" in res.output
    written = json.loads((bad / "check.json").read_text())
    assert written["passed"] is False and written["stats"]["lost"] == int(0.1 * n_correct)


def test_a_few_flips_are_not_significant_and_pass(reference_tree, tmp_path):
    src = reference_tree[1]["probe-videoqa"]
    few = edited_copy(src, tmp_path / "few", flip_correct(3))
    res = CliRunner().invoke(main, ["check", str(few), "--baseline", str(src)])
    assert res.exit_code == 0, res.output
    assert "PASS" in res.output
    # ... unless a hard limit on the drop is set below it
    res = CliRunner().invoke(main, ["check", str(few), "--baseline", str(src), "--max-drop", "1"])
    assert res.exit_code == 1 and "more than the allowed 1" in res.output


def test_five_percent_more_tokens_fails_a_one_percent_allowance(reference_tree, tmp_path):
    src = reference_tree[1]["probe-videoqa"]

    def costlier(i, r):
        r["tokens"] = r["tokens"] * 1.05
        r["retention"] = r["retention"] * 1.05
        return r
    dear = edited_copy(src, tmp_path / "dear", costlier)
    res = CliRunner().invoke(main, ["check", str(dear), "--baseline", str(src), "--max-retention-rise", "0.01"])
    assert res.exit_code == 1 and "mean tokens rose 5.00%" in res.output
    res = CliRunner().invoke(main, ["check", str(dear), "--baseline", str(src), "--max-retention-rise", "0.1"])
    assert res.exit_code == 0, res.output


def test_continuous_iou_uses_the_paired_bootstrap(reference_tree, tmp_path):
    src = reference_tree[1]["probe-grounding"]

    def worse(i, r):
        r["score"]["iou"] = max(0.0, r["score"]["iou"] - 0.2)
        return r
    res = check(edited_copy(src, tmp_path / "worse", worse), src, Limits())
    assert not res.passed and res.stats["test"] == "paired bootstrap" and res.stats["delta_points"] < -10
    same = check(src, src, Limits())
    assert same.passed and same.stats["p_value"] == 1.0


def test_new_error_records_fail(reference_tree, tmp_path):
    src = reference_tree[1]["probe-videoqa"]

    def broken(i, r):
        if i == 0:
            r.update(score=None, prediction=None, error="video file is truncated")
        return r
    res = check(edited_copy(src, tmp_path / "broken", broken), src, Limits())
    assert not res.passed and any("now fail" in f for f in res.failures)


@pytest.mark.parametrize("case,needle", [
    ("task", "different tasks"),
    ("ids", "no sample ids in common"),
    ("budget", "pass --allow-budget-change"),
    ("not-a-run", "is not a run directory"),
])
def test_unusable_input_exits_2_with_one_line(case, needle, reference_tree, tmp_path):
    dirs = reference_tree[1]
    src = dirs["probe-videoqa"]
    if case == "task":
        other = dirs["probe-grounding"]
    elif case == "ids":
        other = edited_copy(src, tmp_path / "ids", lambda i, r: {**r, "id": "x" + r["id"]})
    elif case == "budget":
        other = tmp_path / "budget"
        shutil.copytree(src, other)
        summary = json.loads((other / SUMMARY).read_text())
        (other / SUMMARY).write_text(json.dumps({**summary, "budget": "0.1"}))
    else:
        other = tmp_path / "empty"
        other.mkdir()
    res = CliRunner().invoke(main, ["check", str(other), "--baseline", str(src)])
    assert res.exit_code == 2, res.output
    assert needle in res.output and res.output.count("\n") == 1
    if case == "budget":
        res = CliRunner().invoke(main, ["check", str(other), "--baseline", str(src), "--allow-budget-change"])
        assert res.exit_code == 0, res.output


def test_published_reference_compares_summaries_with_a_tolerance(reference_tree, tmp_path):
    src = reference_tree[1]["probe-videoqa"]
    summary = json.loads((src / SUMMARY).read_text())
    got = summary["metrics"]["accuracy"]["value"]

    def table(value: float, retention: float) -> Path:
        path = tmp_path / f"published-{value}-{retention}.json"
        path.write_text(json.dumps({"kind": "published", "source": "a test table", "backbone": "reference", "rows": [
            {"task": "probe-videoqa", "strategy": summary["strategy"], "frames": summary["frames"],
             "budget": summary["budget"], "retention": retention, "metric": "accuracy", "value": value}]}))
        return path
    ret = summary["retention_mean"]
    assert check(src, table(got + 1.5, ret), Limits()).passed
    low = check(src, table(got + 3.0, ret), Limits())
    assert not low.passed and "below the published" in low.failures[0]
    assert not check(src, table(got, ret / 1.05), Limits()).passed  # spent 5% more than the paper
    # a table measured under another protocol: the same numbers, yet not comparable
    paper = json.loads(table(got, ret).read_text())
    (tmp_path / "paper.json").write_text(json.dumps({**paper, "protocol": "resadapt-paper"}))
    other = check(src, tmp_path / "paper.json", Limits())
    assert not other.passed and "--protocol resadapt-paper" in other.failures[0]
    res = CliRunner().invoke(main, ["check", str(src), "--baseline", str(PUBLISHED)])
    assert res.exit_code == 2 and "has no row for probe-videoqa" in res.output
    # the shipped table by name, as an installed package finds it
    res = CliRunner().invoke(main, ["check", str(src), "--reference", "published:resadapt-qwen2.5-vl-7b"])
    assert res.exit_code == 2 and "published:resadapt-qwen2.5-vl-7b has no row for probe-videoqa" in res.output
    res = CliRunner().invoke(main, ["check", str(src), "--reference", "published:nope"])
    assert res.exit_code == 2 and "shipped: resadapt-qwen2.5-vl-7b" in res.output


def test_shipped_published_table_holds_the_papers_qwen25_rows():
    data = json.loads(PUBLISHED.read_text())
    assert data["kind"] == "published" and "2603.28610" in data["source"] and data["protocol"] == "resadapt-paper"
    rows = {(r["task"], r["strategy"], r["frames"], r["budget"], r["metric"]): r for r in data["rows"]}
    assert len(rows) == len(data["rows"])  # one number per configuration and metric
    assert rows[("videomme", "vanilla", 32, "1", "accuracy")]["value"] == 62.0
    assert rows[("longvideobench", "resadapt", 128, "0.1", "accuracy")]["retention"] == 0.111
    assert rows[("charades_sta", "uniform-scale", 32, "0.123", "iou")]["value"] == 32.0
    assert rows[("mathvista", "visionzip", 1, "0.5", "accuracy")]["value"] == 47.2
    assert all(0 <= r["value"] <= 100 and 0 < r["retention"] <= 1 for r in data["rows"])


def test_check_baseline_is_named_apart_and_recheck_still_works():
    """`check` gates one run; `check-baseline` reruns a baseline tree; `recheck` is its hidden former name."""
    top = CliRunner().invoke(main, ["--help"]).output
    assert "check-baseline" in top and "recheck" not in top
    for name in ("check-baseline", "recheck"):
        res = CliRunner().invoke(main, [name, "--help"])
        assert res.exit_code == 0 and "results/baseline" in res.output, res.output
    res = CliRunner().invoke(main, ["recheck", "/nonexistent/tree"])
    assert res.exit_code == 2 and "no baseline tree at /nonexistent/tree" in res.output
