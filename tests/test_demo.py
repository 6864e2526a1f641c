"""`make demo`'s command: a sweep on the bundled backbone (tiny-bundled), then the frontier files."""

from __future__ import annotations

import csv

from click.testing import CliRunner


def test_demo_sweeps_then_writes_the_frontier(tmp_path, monkeypatch):
    from resadapt_eval.cli import main

    monkeypatch.setenv("RESADAPT_HOME", str(tmp_path / "home"))  # probe data is generated on first use
    out = tmp_path / "results"
    res = CliRunner().invoke(main, ["demo", "--out", str(out), "--tasks", "probe-math", "--strategies",
                                    "vanilla,uniform-scale", "--budgets", "0.25,1.0", "--limit", "4"])
    assert res.exit_code == 0, res.output
    assert "4 configurations" in res.output and "figures:" in res.output and "test split" in res.output
    assert f"report: {out / 'view' / 'index.html'}" in res.output and (out / "view" / "index.html").is_file()
    assert (tmp_path / "home" / "probes" / "probe-math" / "test" / "PROBE.json").exists()  # the held-out split
    assert not (tmp_path / "home" / "probes" / "probe-math" / "dev").exists()
    front = out / "frontier"
    for name in ("frontier.csv", "frontier.md", "strategies.md", "frontier.png", "frontier.svg",
                 "probe-math__tiny-bundled.png", "frontier-costs.png", "paired.md"):
        assert (front / name).stat().st_size > 0, name
    rows = list(csv.DictReader(open(front / "frontier.csv")))
    assert {(r["strategy"], r["budget"]) for r in rows} == {("vanilla", "0.25"), ("vanilla", "1"),
                                                           ("uniform-scale", "0.25"), ("uniform-scale", "1")}
    cheap = next(r for r in rows if r["strategy"] == "uniform-scale" and r["budget"] == "0.25")
    assert float(cheap["tokens"]) <= 0.25 * 144


def test_every_registered_strategy_runs_on_an_image_probe(tmp_path, monkeypatch):
    """The demo runs every registered strategy on probe-math, one image a sample: a strategy that breaks on a
    single frame would stop `make demo` there (resadapt's head once did)."""
    from resadapt_eval.pipeline.runner import RunConfig, sweep
    from resadapt_eval.strategies import STRATEGIES

    monkeypatch.setenv("RESADAPT_HOME", str(tmp_path / "home"))
    names = sorted(STRATEGIES.names())
    done = sweep(RunConfig(task="", backbone="tiny-bundled", out=str(tmp_path / "r"), limit=2, progress=False),
                 ["probe-math"], names, ["0.25"])
    assert sorted(r.summary["strategy"] for r in done) == names
    assert all(r.summary["n_errors"] == 0 and r.summary["n_scored"] == 2 for r in done)
