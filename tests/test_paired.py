"""Paired comparisons: the exact McNemar test, the paired bootstrap, `resadapt-eval compare`, and the
frontier's table of every strategy against uniform-scale at matched retention."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from resadapt_eval.analysis import frontier as fr
from resadapt_eval.analysis.paired import compare_records, mcnemar_exact, paired_bootstrap
from resadapt_eval.cli import main
from resadapt_eval.core.types import UserError


def record(i: int, score: float, metric: str = "accuracy", error: str | None = None, answer: str | None = None) -> dict:
    return {"id": f"s{i:03d}", "score": None if error else {metric: score}, "error": error,
            "prediction": answer, "parsed": answer, "tokens": 49.0, "retention": 0.25, "flops": {"total": 1e9},
            "timings": {"e2e": 0.01}}


def write_run(root: Path, strategy: str, budget: str, scores: list[float], retention: float,
              metric: str = "accuracy", task: str = "probe-videoqa", answers: list[str] | None = None) -> Path:
    d = root / task / "reference" / strategy / f"b{budget}-f8"
    d.mkdir(parents=True)
    value = 100 * float(np.mean(scores))
    summary = {"task": task, "backbone": "reference", "strategy": strategy, "budget": budget, "frames": 8, "n": len(scores),
               "main_metric": metric, "metrics": {metric: {"value": value, "ci_low": value - 5, "ci_high": value + 5,
                                                           "n": len(scores)}},
               "retention_mean": retention, "tokens_mean": 196 * retention, "patches_mean": 784.0,
               "flops_mean": 1e9 * (1 + retention), "timings_mean": {"e2e": 0.01}}
    (d / "summary.json").write_text(json.dumps(summary))
    answers = answers or [None] * len(scores)
    (d / "samples.jsonl").write_text("".join(json.dumps(record(i, s, metric, answer=answers[i])) + "\n"
                                             for i, s in enumerate(scores)))
    return d


def test_mcnemar_exact_matches_scipy_binomtest():
    stats = pytest.importorskip("scipy.stats")
    for lost, gained in [(0, 0), (0, 5), (1, 8), (7, 7), (3, 12), (20, 31), (0, 40), (55, 80)]:
        expected = 1.0 if lost + gained == 0 else stats.binomtest(min(lost, gained), lost + gained, 0.5).pvalue
        assert mcnemar_exact(lost, gained) == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_mcnemar_exact_known_values():
    assert mcnemar_exact(1, 8) == pytest.approx(2 * (1 + 9) / 2 ** 9)   # 0.0390625
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert mcnemar_exact(4, 4) == 1.0


def test_binary_comparison_counts_discordant_pairs_and_pairs_by_id():
    a = [record(i, float(i < 10)) for i in range(20)]
    b = [record(i, float(i < 17 and i != 3)) for i in range(20)]  # B gains samples 10..16, loses sample 3
    b.append(record(99, 1.0))                                      # only in B: left out
    a[5] = record(5, 0.0, error="corrupt video")                   # an error in A: left out
    p = compare_records(a, b, "accuracy")
    assert (p.n, p.b_better, p.a_better, p.only_b, p.only_a) == (19, 7, 1, 2, 0)
    assert p.test == "mcnemar-exact" and p.p_value == pytest.approx(mcnemar_exact(1, 7))
    assert p.diff == pytest.approx(100 * 6 / 19) and p.ci_low < p.diff < p.ci_high
    assert p.significant == (p.ci_low > 0)
    same = compare_records(a, a, "accuracy")
    assert (same.diff, same.p_value, same.significant) == (0.0, 1.0, False)


def test_continuous_scores_use_the_paired_bootstrap():
    rng = np.random.default_rng(0)
    a_scores = rng.uniform(0.2, 0.8, 60)
    a = [record(i, s, "iou") for i, s in enumerate(a_scores)]
    b = [record(i, s + 0.1, "iou") for i, s in enumerate(a_scores)]   # every sample +0.1 IoU
    p = compare_records(a, b, "iou")
    assert p.test == "paired-bootstrap" and p.diff == pytest.approx(10.0)
    assert p.ci_low == pytest.approx(10.0) and p.significant and p.p_value < 0.001
    noisy = [record(i, s + rng.normal(0, 0.2), "iou") for i, s in enumerate(a_scores)]
    q = compare_records(a, noisy, "iou")
    boot_p, lo, hi = paired_bootstrap(np.array([r["score"]["iou"] for r in noisy]) - a_scores, 0)
    assert (q.p_value, q.ci_low, q.ci_high) == pytest.approx((boot_p, 100 * lo, 100 * hi))


def test_no_common_samples_is_a_user_error():
    with pytest.raises(UserError, match="share no sample"):
        compare_records([record(1, 1.0)], [record(2, 1.0)], "accuracy")


def test_cli_compare_prints_difference_ci_and_p(tmp_path):
    a = write_run(tmp_path, "uniform-scale", "0.25", [float(i < 10) for i in range(40)], 0.25)
    b = write_run(tmp_path, "resadapt", "0.25", [float(i < 30) for i in range(40)], 0.25)
    out = tmp_path / "cmp.json"
    res = CliRunner().invoke(main, ["compare", str(a), str(b), "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "B - A = +50.0 points" in res.output and "mcnemar-exact" in res.output and "excludes 0" in res.output
    saved = json.loads(out.read_text())
    assert saved["p_value"] == pytest.approx(mcnemar_exact(0, 20)) and saved["significant"] is True
    other = write_run(tmp_path, "uniform-scale", "0.5", [1.0], 0.5, task="probe-math")
    res = CliRunner().invoke(main, ["compare", str(a), str(other)])
    assert res.exit_code == 2 and "different tasks" in res.output


def test_frontier_pairs_each_strategy_with_uniform_scale_at_matched_retention(tmp_path):
    base = [float(i < 10) for i in range(40)]
    write_run(tmp_path, "uniform-scale", "0.25", base, 0.25)
    write_run(tmp_path, "uniform-scale", "0.5", base, 0.5)
    write_run(tmp_path, "visionzip", "0.25", [float(i < 30) for i in range(40)], 0.2502)  # same budget, within 1%
    write_run(tmp_path, "resadapt", "0.1", [float(i < 12) for i in range(40)], 0.499)     # placed at 0.5: by retention
    write_run(tmp_path, "fastv", "0.25", base, 0.30)                                      # no match within 1%
    runs = fr.annotate(fr.load_runs(tmp_path))
    table = fr.paired_table(runs).set_index("strategy")
    assert table.loc["visionzip", "matched"] and table.loc["visionzip", "reference_budget"] == "0.25"
    assert table.loc["visionzip", "diff"] == pytest.approx(50.0) and table.loc["visionzip", "significant"]
    assert table.loc["resadapt", "reference_budget"] == "0.5" and not table.loc["resadapt", "significant"]
    assert table.loc["resadapt", "p_value"] == pytest.approx(mcnemar_exact(0, 2))
    assert not table.loc["fastv", "matched"] and np.isnan(table.loc["fastv", "diff"])
    marked = fr.mark_paired(runs, table.reset_index())
    flags = {(r.strategy, r.budget): r.paired_significant for r in marked.itertuples()}
    assert flags == {("fastv", "0.25"): False, ("resadapt", "0.1"): False, ("uniform-scale", "0.25"): False,
                     ("uniform-scale", "0.5"): False, ("visionzip", "0.25"): True}
    built = fr.build(tmp_path, tmp_path / "frontier")
    assert (tmp_path / "frontier" / "paired.md").exists() and built["costs"][0].exists()
    assert "Paired against uniform-scale" in (tmp_path / "frontier" / "strategies.md").read_text()


def test_sensitive_subset_keeps_the_samples_whose_vanilla_answer_changes_under_downscaling(tmp_path):
    n = 30
    write_run(tmp_path, "vanilla", "1", [1.0] * n, 1.0, answers=["A"] * n)
    # uniform downscaling at 0.25 changes the answer of samples 0..9 (and misses them)
    write_run(tmp_path, "uniform-scale", "0.25", [float(i >= 10) for i in range(n)], 0.25,
              answers=["B" if i < 10 else "A" for i in range(n)])
    write_run(tmp_path, "uniform-scale", "0.5", [1.0] * n, 0.5, answers=["A"] * n)
    write_run(tmp_path, "visionzip", "0.25", [float(i >= 5) for i in range(n)], 0.25,
              answers=["C" if i < 5 else "A" for i in range(n)])
    built = fr.build(tmp_path, tmp_path / "sensitive", subset="sensitive", subset_budget="0.25")
    assert built["subset"] == {"probe-videoqa · reference": 10}
    runs = built["runs"].set_index(["strategy", "budget"])
    assert (runs["n"] == 10).all()
    assert runs.loc[("vanilla", "1"), "score"] == 100.0 and runs.loc[("uniform-scale", "0.25"), "score"] == 0.0
    assert runs.loc[("visionzip", "0.25"), "score"] == pytest.approx(50.0)
    paired = built["paired"].set_index(["strategy", "budget"])
    assert paired.loc[("visionzip", "0.25"), "n"] == 10 and paired.loc[("visionzip", "0.25"), "diff"] == pytest.approx(50.0)
    assert paired.loc[("visionzip", "0.25"), "p_value"] == pytest.approx(mcnemar_exact(0, 5))
    full = fr.build(tmp_path, tmp_path / "all")["runs"].set_index(["strategy", "budget"])
    assert full.loc[("visionzip", "0.25"), "score"] == pytest.approx(100 * 25 / 30)
    res = CliRunner().invoke(main, ["frontier", str(tmp_path), "--subset", "sensitive", "--subset-budget", "0.5"])
    assert res.exit_code == 0 and "0 samples" in res.output  # nothing changes at 0.5
    res = CliRunner().invoke(main, ["frontier", str(tmp_path), "--subset", "sensitive", "--subset-budget", "0.1"])
    assert res.exit_code == 2 and "budget 0.1" in res.output
