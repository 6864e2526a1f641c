"""Registries open to other installed packages through entry points.

The guide's example strategy package (docs/examples/plugin), a task package (the guide's adapter
and card) and a broken package are installed with pip into a folder of their own (never into the
test environment); separate `resadapt-eval` processes whose PYTHONPATH includes that folder list
them and run the strategy on the bundled backbone.
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
EXAMPLES = ROOT / "docs" / "examples"
PLUGIN = EXAMPLES / "plugin"

pytestmark = pytest.mark.slow


def _cli(args: list[str], site: Path, **env: str) -> subprocess.CompletedProcess:
    path = os.pathsep.join([str(ROOT), str(site), os.environ.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "resadapt_eval", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", **env}, timeout=600)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The example strategy package, a task package (adapter + card) and a deliberately broken one,
    installed with pip into a private folder."""
    base = tmp_path_factory.mktemp("plugins")
    good = shutil.copytree(PLUGIN, base / "src-good")
    bad = base / "src-bad"
    bad.mkdir()
    (bad / "pyproject.toml").write_text((PLUGIN / "pyproject.toml").read_text())
    (bad / "setup.cfg").write_text("[metadata]\nname = resadapt-broken-plugin\nversion = 0.0.1\n\n[options]\n"
                                   "py_modules = resadapt_broken\n\n[options.entry_points]\n"
                                   "resadapt_eval.strategies =\n    broken = resadapt_broken:Missing\n")
    (bad / "resadapt_broken.py").write_text("import a_module_that_is_not_installed\n")
    # A task from another package: the guide's adapter, and its card shipped as package data.
    task = base / "src-task"
    (task / "resadapt_numbers").mkdir(parents=True)
    (task / "pyproject.toml").write_text((PLUGIN / "pyproject.toml").read_text())
    (task / "resadapt_numbers" / "__init__.py").write_text((EXAMPLES / "jsonl_qa.py").read_text())
    (task / "resadapt_numbers" / "my-numbers.yaml").write_text((EXAMPLES / "tasks" / "my-numbers.yaml").read_text())
    (task / "setup.cfg").write_text("[metadata]\nname = resadapt-numbers\nversion = 0.0.1\n\n[options]\n"
                                    "packages = resadapt_numbers\n\n[options.package_data]\n"
                                    "resadapt_numbers = *.yaml\n\n[options.entry_points]\n"
                                    "resadapt_eval.adapters =\n    jsonl-qa = resadapt_numbers:JsonlQA\n"
                                    "resadapt_eval.tasks =\n    resadapt-numbers = resadapt_numbers\n")
    target = base / "site"
    # No build isolation: setuptools comes from this environment (no index needed, offline CI works).
    res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--target", str(target), str(good), str(bad), str(task)],
                         capture_output=True, text=True, timeout=600)
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


def test_an_installed_task_brings_its_adapter_and_card(site):
    listed = _cli(["list", "tasks", "--json"], site)
    assert listed.returncode == 0, listed.stderr
    tasks = {t["name"]: t for t in json.loads(listed.stdout)}
    assert {"my-numbers", "videomme", "probe-videoqa"} <= set(tasks)
    assert tasks["my-numbers"]["origin"] == "plugin resadapt-numbers"
    code = ("from resadapt_eval.adapters import ADAPTERS; from resadapt_eval.adapters.base import TaskCard; "
            "card = TaskCard.load('my-numbers'); adapter = ADAPTERS.get(card.adapter)(); "
            "print(card.adapter, type(adapter).__module__, card.max_new_tokens)")
    path = os.pathsep.join([str(ROOT), str(site)])
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": path})
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["jsonl-qa", "resadapt_numbers", "8"]
