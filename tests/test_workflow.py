"""The example workflow's commands run as written: the `checkpoint` job's steps, with its `env` block
pointed at the reference suite (the bundled backbone's folder, probe-videoqa, the committed reference
run), evaluate and gate with exit 0; every `make` target the workflow calls exists."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from resadapt_eval.adapters.base import TaskCard
from resadapt_eval.backbones import resolve_alias
from resadapt_eval.probes import provision

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "regression.yml"


def _steps(job: dict) -> list[str]:
    return [step["run"] for step in job["steps"] if "run" in step]


def test_every_make_target_of_the_workflow_exists():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    targets = {cmd.split()[1] for job in workflow["jobs"].values() for cmd in _steps(job) if cmd.startswith("make ")}
    assert targets == {"install", "check-baseline"}
    for target in targets:
        res = subprocess.run(["make", "-n", target], cwd=REPO, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr


def test_the_checkpoint_job_runs_as_written_on_the_reference_suite(tmp_path):
    job = yaml.safe_load(WORKFLOW.read_text())["jobs"]["checkpoint"]
    card = TaskCard.load("probe-videoqa")
    provision(card)
    reference = REPO / "results/baseline/probe-videoqa/tiny-bundled/uniform-scale/b0.25-f8"
    assert (reference / "summary.json").is_file()
    # The job's env with values for the reference suite; the keys are the workflow's own.
    values = {"CHECKPOINT": resolve_alias("reference"), "TASK": "probe-videoqa", "DATA_ROOT": str(card.data_root),
              "STRATEGY": "uniform-scale", "BUDGET": "0.25", "FRAMES": "8", "LIMIT": "12", "BASELINE": str(reference)}
    assert set(values) == set(job["env"])
    work = tmp_path / "checkout"  # the job's working directory: .venv/bin/resadapt-eval is this environment's
    (work / ".venv" / "bin").mkdir(parents=True)
    (work / ".venv" / "bin" / "resadapt-eval").symlink_to(Path(sys.executable).parent / "resadapt-eval")
    env = {**os.environ, **{k: str(v) for k, v in yaml.safe_load(WORKFLOW.read_text())["env"].items()}, **values}
    steps = [cmd for cmd in _steps(job) if not cmd.startswith("make ")]  # make install: this environment
    assert len(steps) == 2
    for cmd in steps:
        res = subprocess.run(["bash", "-e", "-c", cmd], cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, f"{cmd}\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
    assert "PASS" in res.stdout
    check = work / "results/ci/probe-videoqa/tiny-bundled/uniform-scale/b0.25-f8/check.json"
    assert check.is_file() and '"passed": true' in check.read_text()
