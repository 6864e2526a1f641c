"""Registries open to other installed packages through entry points.

The guide's example strategy package (docs/examples/plugin) is built and installed with pip into a
folder of its own (never into the test environment), and a separate `resadapt-eval` process whose
PYTHONPATH includes that folder lists it and runs it on the bundled backbone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from resadapt_eval import probes

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "docs" / "examples" / "plugin"

pytestmark = pytest.mark.slow


def _cli(args: list[str], site: Path, **env: str) -> subprocess.CompletedProcess:
    path = os.pathsep.join([str(ROOT), str(site), os.environ.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "resadapt_eval", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", **env}, timeout=600)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The example package plus a deliberately broken one, installed with pip into a private folder."""
    base = tmp_path_factory.mktemp("plugins")
    good = shutil.copytree(PLUGIN, base / "src-good")
    bad = base / "src-bad"
    bad.mkdir()
    (bad / "pyproject.toml").write_text((PLUGIN / "pyproject.toml").read_text())
    (bad / "setup.cfg").write_text("[metadata]\nname = resadapt-broken-plugin\nversion = 0.0.1\n\n[options]\n"
                                   "py_modules = resadapt_broken\n\n[options.entry_points]\n"
                                   "resadapt_eval.strategies =\n    broken = resadapt_broken:Missing\n")
    (bad / "resadapt_broken.py").write_text("import a_module_that_is_not_installed\n")
    target = base / "site"
    # No build isolation: setuptools comes from this environment (no index needed, offline CI works).
    res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--target", str(target), str(good), str(bad)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert (target / "resadapt_keep_first.py").is_file()
    return target


def test_an_installed_strategy_is_listed_and_runs(site, tmp_path):
    listed = _cli(["list", "strategies", "--json"], site)
    assert listed.returncode == 0, listed.stderr
    names = json.loads(listed.stdout)
    assert {"keep-first", "broken", "uniform-scale"} <= set(names)  # listing never imports a plugin
    data = probes.build("probe-videoqa", tmp_path / "data", seed=0, n=2)
    res = _cli(["run", "--task", "probe-videoqa", "--strategy", "keep-first", "--budget", "0.25", "--limit", "2",
                "--data-root", str(data), "--out", str(tmp_path / "out"), "--no-progress"], site)
    assert res.returncode == 0, res.stderr
    run = tmp_path / "out" / "probe-videoqa" / "tiny-bundled" / "keep-first" / "b0.25-f8"
    records = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(r["error"] is None for r in records)
    for r in records:  # 8 frames are 4 chunks of 2; at 0.25 the first chunk alone fits: frames 0 and 1
        frames = r["plan"]["frames"]
        assert frames == [0, 1] and r["tokens"] <= r["limit"]
        assert r["retention"] == pytest.approx(0.25)
    # Without the folder on the path the name is unknown again: nothing was installed elsewhere.
    alone = subprocess.run([sys.executable, "-m", "resadapt_eval", "list", "strategies"], capture_output=True,
                           text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert "keep-first" not in alone.stdout


def test_a_broken_plugin_fails_in_one_line_naming_its_entry_point(site, tmp_path):
    res = _cli(["run", "--task", "probe-videoqa", "--strategy", "broken", "--limit", "1",
                "--out", str(tmp_path / "out"), "--no-progress"], site)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "broken = resadapt_broken:Missing" in lines[0] and "resadapt_eval.strategies" in lines[0]
    assert "ModuleNotFoundError" in lines[0] and "resadapt-broken-plugin" in lines[0]
