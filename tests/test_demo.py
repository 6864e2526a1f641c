"""`make demo`'s command: a sweep on the bundled reference backbone, then the frontier files."""

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
    assert "4 configurations" in res.output and "figures:" in res.output
    assert f"report: {out / 'view' / 'index.html'}" in res.output and (out / "view" / "index.html").is_file()
    front = out / "frontier"
    for name in ("frontier.csv", "frontier.md", "strategies.md", "frontier.png", "frontier.svg",
                 "probe-math__reference.png"):
        assert (front / name).stat().st_size > 0, name
    rows = list(csv.DictReader(open(front / "frontier.csv")))
    assert {(r["strategy"], r["budget"]) for r in rows} == {("vanilla", "0.25"), ("vanilla", "1"),
                                                           ("uniform-scale", "0.25"), ("uniform-scale", "1")}
    cheap = next(r for r in rows if r["strategy"] == "uniform-scale" and r["budget"] == "0.25")
    assert float(cheap["tokens"]) <= 0.25 * 144
