"""`resadapt-eval bench`: its figures add up and come from real runs (the figures themselves are
machine-dependent and are printed, never asserted as speeds)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from resadapt_eval import probes
from resadapt_eval.tools.bench import memory_benchmark, overlap_benchmark
from resadapt_eval.cli import main


def test_overlap_accounts_a_real_sweep_with_one_backbone_load(tmp_path):
    root = probes.build("probe-videoqa", tmp_path / "videoqa", seed=0, n=6)
    figure = overlap_benchmark(("probe-videoqa",), ("vanilla", "uniform-scale"), ("0.5", "1.0"), limit=6,
                               prefetch=2, out=tmp_path / "runs", data_root=str(root))
    assert figure.backbone_loads == 1 and figure.configurations == 4 and figure.records == 24
    # vanilla under both labels and uniform-scale at 1.0 share one input: 6 + 6 executions
    assert figure.executed == 12
    assert 0 < figure.model_s < figure.wall_s and figure.planner_s == 0
    assert abs(figure.other_s - (figure.wall_s - figure.model_s)) < 1e-9 and 0 < figure.other_share < 1
    assert figure.stages_s["encode"] > 0 and figure.stages_s["preprocess"] > 0


def test_memory_runs_each_size_in_a_fresh_process(tmp_path):
    figure = memory_benchmark("probe-videoqa", sizes=(3, 6), frames=4, cache=tmp_path)
    assert set(figure.peak_mib) == {3, 6} and all(m > 100 for m in figure.peak_mib.values())  # torch is in there
    assert abs(figure.growth) < 0.5


def test_bench_command_prints_and_writes_its_figures(tmp_path):
    root = probes.build("probe-math", tmp_path / "math", seed=0, n=4)
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(main, ["bench", "overlap", "--tasks", "probe-math", "--strategies", "uniform-scale",
                                    "--budgets", "0.25", "--data-root", str(root), "--prefetch", "2,0",
                                    "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "backbone loaded 1x" in res.output and "% of wall" in res.output
    report = json.loads(out.read_text())
    assert [f["prefetch"] for f in report["overlap"]] == [2, 0]
    assert all(f["records"] == 4 for f in report["overlap"])


def test_blocked_bootstrap_draws_the_same_cis_as_one_big_draw():
    import numpy as np

    from resadapt_eval.pipeline.store import bootstrap_ci

    for n in (1, 7, 263, 5000):
        values = np.random.default_rng(n).random(n)
        rng = np.random.default_rng(3)
        means = values[rng.integers(0, n, size=(1000, n))].mean(axis=1)
        whole = (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))
        assert bootstrap_ci(values, 3) == whole == bootstrap_ci(values, 3, block=997)
