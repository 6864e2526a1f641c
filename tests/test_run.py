"""End to end through the CLI: every strategy and budget on a Video-MME-layout fixture with a real tiny model."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from fixtures import make_videomme
from resadapt_eval.pipeline import store as rec
from resadapt_eval.cli import main

STRATEGIES = ["vanilla", "uniform-scale", "uniform-frames", "random-drop"]
BUDGETS = ["0.1", "0.25", "0.5", "1.0"]


def cli(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def base_args(tiny25, root, out):
    return ["run", "--task", "videomme", "--backbone", str(tiny25), "--data-root", str(root), "--frames", "8",
            "--out", str(out), "--no-progress", "--max-error-rate", "1"]  # the fixture's bad videos are on purpose


def load(directory: Path):
    return (rec.read_records(directory / "samples.jsonl"), json.loads((directory / "summary.json").read_text()),
            json.loads((directory / "manifest.json").read_text()))


@pytest.fixture(scope="module")
def sweep(tiny25, videomme_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    for strategy in STRATEGIES:
        for budget in BUDGETS:
            res = cli(*base_args(tiny25, videomme_root, out), "--strategy", strategy, "--budget", budget)
            assert res.exit_code == 0, res.output
    return out


def test_every_strategy_and_budget_writes_three_files(sweep, tiny25):
    for strategy in STRATEGIES:
        for budget in BUDGETS:
            d = rec.run_dir(sweep, "videomme", tiny25.name, strategy, f"{float(budget):g}", 8)
            records, summary, manifest = load(d)
            assert len(records) == 6 and summary["n"] == 6
            assert summary["n_errors"] == 2  # the video left out of the fixture, two questions
            for key in ("task", "backbone", "strategy", "budget", "frames", "metrics", "retention_mean",
                        "tokens_mean", "breakdowns"):
                assert key in summary
            acc = summary["metrics"]["accuracy"]
            assert acc["ci_low"] <= acc["value"] <= acc["ci_high"]
            assert set(summary["breakdowns"]) == {"duration", "domain", "task_type"}
            assert manifest["config_hash"] == summary["config_hash"] and manifest["environment"]["versions"]["torch"]
            for r in records:
                for key in ("id", "prediction", "score", "vanilla_tokens", "tokens", "retention", "plan", "timings",
                            "error"):
                    assert key in r
                if r["error"]:
                    assert "not found" in r["error"] and r["score"] is None
                    continue
                limit = math.floor(float(budget) * r["vanilla_tokens"] + 1e-9)
                if strategy == "vanilla":
                    assert r["tokens"] == r["vanilla_tokens"]
                elif r["plan"]["feasible"]:
                    assert r["tokens"] <= limit
                else:
                    assert r["tokens"] > limit and r["plan"]["note"]
                if strategy == "random-drop":
                    assert r["tokens"] == max(1, limit)
                assert r["retention"] == pytest.approx(r["tokens"] / r["vanilla_tokens"])


def test_uniform_scale_full_budget_equals_vanilla(sweep, tiny25):
    a, _, _ = load(rec.run_dir(sweep, "videomme", tiny25.name, "vanilla", "1", 8))
    b, _, _ = load(rec.run_dir(sweep, "videomme", tiny25.name, "uniform-scale", "1", 8))
    key = lambda rs: {r["id"]: (r["prediction"], r["tokens"]) for r in rs}  # noqa: E731
    assert key(a) == key(b)


def test_rerun_resumes_and_refuses_other_config(sweep, tiny25, videomme_root):
    res = cli(*base_args(tiny25, videomme_root, sweep), "--strategy", "vanilla")
    assert res.exit_code == 0
    d = rec.run_dir(sweep, "videomme", tiny25.name, "vanilla", "1", 8)
    assert len(rec.read_records(d / "samples.jsonl")) == 6  # nothing evaluated twice
    res = CliRunner().invoke(main, base_args(tiny25, videomme_root, sweep) + ["--strategy", "vanilla",
                                                                               "--max-new-tokens", "3"])
    assert res.exit_code == 2 and "different config" in res.output
    with rec.locked(d):
        res = CliRunner().invoke(main, base_args(tiny25, videomme_root, sweep) + ["--strategy", "vanilla"])
    assert res.exit_code == 2 and "lock" in res.output


def _cmd(*args: str):
    return subprocess.run([sys.executable, "-m", "resadapt_eval", *args], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)


@pytest.mark.parametrize("args,needle", [
    (["run", "--task", "nope"], "unknown task"),
    (["run", "--task", "videomme", "--budget", "0"], "outside (0, 1]"),
    (["run", "--task", "videomme", "--budget", "1.5"], "outside (0, 1]"),
    (["run", "--task", "videomme", "--strategy", "magic"], "unknown strategy"),
    (["run", "--task", "videomme", "--data-root", "/nonexistent/videomme"], "no annotation parquet"),
    (["run", "--task", "videomme", "--frames", "0"], "--frames"),
    (["run"], "Missing option"),
])
def test_bad_input_exits_2_with_one_line(args, needle):
    res = _cmd(*args)
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], res.stderr


def test_unknown_backbone_exits_2(videomme_root):
    res = _cmd("run", "--task", "videomme", "--data-root", str(videomme_root), "--backbone", "/no/such/model")
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0 and "backbone" in res.stderr


def test_sigkill_half_way_then_resume(tiny25, tmp_path):
    root = make_videomme(tmp_path / "data", n_videos=10, questions_per_video=3, missing=1)
    args = ["run", "--task", "videomme", "--backbone", str(tiny25), "--data-root", str(root), "--frames", "6",
            "--strategy", "uniform-scale", "--budget", "0.5", "--no-progress", "--max-error-rate", "1"]
    full = _cmd(*args, "--out", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr
    out = tmp_path / "killed"
    d = rec.run_dir(out, "videomme", tiny25.name, "uniform-scale", "0.5", 6)
    proc = subprocess.Popen([sys.executable, "-m", "resadapt_eval", *args, "--out", str(out)],
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline:
        n = len(rec.read_records(d / "samples.jsonl")) if (d / "samples.jsonl").exists() else 0
        if n >= 12:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = len(rec.read_records(d / "samples.jsonl"))
    assert 12 <= killed_at < 30, "the kill must land half-way"
    with open(d / "samples.jsonl", "a") as f:  # a torn line, as if killed mid-write
        f.write('{"id": "torn", "predic')
    again = _cmd(*args, "--out", str(out))
    assert again.returncode == 0, again.stderr
    records = rec.read_records(d / "samples.jsonl")
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) == 30
    ref_records = rec.read_records(rec.run_dir(tmp_path / "full", "videomme", tiny25.name, "uniform-scale", "0.5", 6)
                                   / "samples.jsonl")
    strip = lambda rs: {r["id"]: (r["prediction"], r["tokens"], r["score"], r["error"]) for r in rs}  # noqa: E731
    assert strip(records) == strip(ref_records)
    s1 = json.loads((d / "summary.json").read_text())
    s2 = json.loads((rec.run_dir(tmp_path / "full", "videomme", tiny25.name, "uniform-scale", "0.5", 6)
                     / "summary.json").read_text())
    for s in (s1, s2):
        s.pop("timings_mean")
    assert s1 == s2


def test_sweep_shares_one_load_and_matches_single_runs(sweep, tiny25, videomme_root, tmp_path):
    out = tmp_path / "sweep"
    res = cli("sweep", "--tasks", "videomme", "--strategies", "vanilla,uniform-scale", "--budgets", "0.25,1.0",
              "--backbone", str(tiny25), "--data-root", str(videomme_root), "--frames", "8", "--out", str(out),
              "--no-progress", "--max-error-rate", "1")
    assert res.exit_code == 0, res.output
    assert "4 configurations" in res.output
    for strategy in ("vanilla", "uniform-scale"):
        for budget in ("0.25", "1"):
            a, sa, _ = load(rec.run_dir(out, "videomme", tiny25.name, strategy, budget, 8))
            b, sb, _ = load(rec.run_dir(sweep, "videomme", tiny25.name, strategy, budget, 8))
            key = lambda rs: {r["id"]: (r["prediction"], r["tokens"], r["score"]) for r in rs}  # noqa: E731
            assert key(a) == key(b)
            assert sa["metrics"] == sb["metrics"]
            ok = [r for r in a if not r["error"]]
            if strategy == "vanilla" and budget == "0.25":  # first config: each video decoded once
                assert sum(not r["frames_cached"] for r in ok) == len({r["meta"]["videoID"] for r in ok})
            else:
                assert all(r["frames_cached"] for r in ok)
            assert all(r["timings"]["e2e"] >= r["timings"]["load"] > 0 for r in ok)
            # identical model inputs run once: vanilla and uniform-scale at 1.0 reuse vanilla@0.25's outputs
            assert all(r["output_reused"] == (budget == "1") for r in ok)
            assert all(r["timings"]["e2e"] >= r["timings"]["backbone_total"] for r in ok)


@pytest.mark.parametrize("task,probe", [("videomme", "probe-videoqa"), ("longvideobench", "probe-longvideo"),
                                        ("charades_sta", "probe-grounding"), ("mathvista", "probe-math")])
def test_every_adapter_end_to_end_on_its_official_layout(task, probe, tiny25, tmp_path):
    """load -> prompt -> tiny backbone -> score -> aggregate, on data written in each benchmark's layout."""
    from resadapt_eval import probes
    from resadapt_eval.adapters import ADAPTERS
    from resadapt_eval.adapters.base import TaskCard

    root = probes.build(probe, tmp_path / probe, seed=11, n=3)
    res = cli("run", "--task", task, "--backbone", str(tiny25), "--data-root", str(root), "--frames", "8",
              "--strategy", "uniform-scale", "--budget", "0.5", "--out", str(tmp_path / "out"), "--no-progress")
    assert res.exit_code == 0, res.output
    adapter = ADAPTERS.get(TaskCard.load(task, data_root=str(root)).adapter)
    d = rec.run_dir(tmp_path / "out", task, tiny25.name, "uniform-scale", "0.5", 8)
    records, summary, _ = load(d)
    assert summary["n"] == 3 and summary["n_errors"] == 0
    assert set(summary["metrics"]) == set(adapter.metrics)
    assert set(summary["breakdowns"]) == set(adapter.breakdown_keys)
    for r in records:
        assert r["meta"]["evidence"] and r["tokens"] <= r["limit"] and r["prediction"] is not None
        assert set(r["score"]) == set(adapter.metrics)


def test_a_run_over_the_error_rate_writes_everything_then_exits_1(tiny25, videomme_root, tmp_path):
    args = ["run", "--task", "videomme", "--backbone", str(tiny25), "--data-root", str(videomme_root), "--frames", "4",
            "--out", str(tmp_path), "--no-progress"]
    res = CliRunner().invoke(main, args)
    d = rec.run_dir(tmp_path, "videomme", tiny25.name, "uniform-scale", "1", 4)
    summary = json.loads((d / "summary.json").read_text())
    assert summary["n_errors"] / summary["n"] > 0.05 and len(rec.read_records(d / "samples.jsonl")) == summary["n"]
    assert res.exit_code == 1 and "over --max-error-rate 5%" in res.output
    assert CliRunner().invoke(main, args + ["--max-error-rate", "0.5"]).exit_code == 0  # resumes, nothing to do
