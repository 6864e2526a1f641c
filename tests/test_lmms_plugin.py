"""lmms-eval's own evaluator runs our `resadapt` model (entry-point plugin) on a local copy of its
videomme task pointed at probe-videoqa (which is written in Video-MME's layout), and its score and
our token log agree with the harness's own run of the same configuration.

Needs the [lmms] extra in its own environment: `make test-lmms` (the core suite deselects it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from resadapt_eval import probes
from resadapt_eval.pipeline.store import SAMPLES, read_records

pytestmark = pytest.mark.lmms

N = 8
TASK_YAML = """task: videomme_probe
dataset_path: parquet
dataset_kwargs:
  data_files:
    test: {parquet}
  cache_dir: videomme
  video: True
test_split: test
output_type: generate_until
doc_to_visual: !function utils.videomme_doc_to_visual
doc_to_text: !function utils.videomme_doc_to_text
doc_to_target: "answer"
generation_kwargs:
  max_new_tokens: 16
  temperature: 0
  do_sample: false
process_results: !function utils.videomme_process_results
metric_list:
  - metric: videomme_perception_score
    aggregation: !function utils.probe_aggregate
    higher_is_better: true
lmms_eval_specific_kwargs:
  default:
    pre_prompt: ""
    post_prompt: "\\nAnswer with the option's letter from the given choices directly."
"""


# lmms-eval's own prompt, visuals and answer extraction; only the aggregation is ours, because
# videomme_aggregate_results keys its table by Video-MME's real categories and the probe has its own.
SHIM = """from lmms_eval.tasks.videomme.utils import *  # noqa: F401,F403


def probe_aggregate(results):
    return 100.0 * sum(r["pred_answer"] == r["answer"] for r in results) / len(results)
"""


def lmms_errors(output: str) -> list[str]:
    """lmms-eval's ERROR-level log lines (loguru: `... | ERROR | module:function:line - message`) and any
    traceback that follows one."""
    lines, keep = output.splitlines(), []
    for i, line in enumerate(lines):
        if "| ERROR" in line or "| CRITICAL" in line or line.startswith("Traceback"):
            keep.extend(lines[i:i + 12])
    return keep


def test_lmms_errors_finds_loguru_error_lines():
    out = "2026-12-06 21:00:00 | INFO | x:y:1 - fine\n2026-12-06 21:00:01 | ERROR | lmms_eval.tasks:load:9 - boom"
    assert lmms_errors(out) == ["2026-12-06 21:00:01 | ERROR | lmms_eval.tasks:load:9 - boom"]
    assert lmms_errors("all fine") == []


def test_lmms_eval_runs_the_resadapt_model_and_agrees_with_the_harness(tmp_path):
    root = probes.build("probe-videoqa", tmp_path / "probe", seed=0, n=N)
    hf_home = tmp_path / "hf"
    hf_home.mkdir()
    (hf_home / "videomme").symlink_to(root, target_is_directory=True)  # $HF_HOME/videomme/data/<id>.mp4
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "videomme_probe.yaml").write_text(TASK_YAML.format(parquet=next(root.glob("videomme/*.parquet"))))
    (tasks / "utils.py").write_text(SHIM)
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(tmp_path / "datasets")}
    lmms = shutil.which("lmms-eval", path=str(Path(sys.executable).parent)) or "lmms-eval"
    tokens_log = tmp_path / "tokens.jsonl"
    args = f"backbone=tiny-bundled,strategy=uniform-scale,budget=0.25,frames=8,tokens_log={tokens_log}"
    res = subprocess.run([lmms, "--model", "resadapt", "--model_args", args, "--tasks", "videomme_probe",
                          "--include_path", str(tasks), "--output_path", str(tmp_path / "out"), "--log_samples"],
                         env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    # lmms-eval logs an error (a task that fails to load, a bad import) and still exits 0: show its own
    # lines, not only the missing results file that follows.
    logged_errors = lmms_errors(res.stdout + res.stderr)
    assert not logged_errors, "lmms-eval logged errors although it exited 0:\n" + "\n".join(logged_errors)[-4000:]
    found = sorted((tmp_path / "out").rglob("*_results.json"))
    assert found, "lmms-eval wrote no results file; its output ends:\n" + (res.stdout + res.stderr)[-4000:]
    results = json.loads(found[0].read_text())
    lmms_score = results["results"]["videomme_probe"]["videomme_perception_score,none"]

    ours = subprocess.run([sys.executable, "-m", "resadapt_eval", "run", "--task", "probe-videoqa", "--data-root",
                           str(root), "--strategy", "uniform-scale", "--budget", "0.25", "--frames", "8", "--out",
                           str(tmp_path / "ours"), "--no-progress"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert ours.returncode == 0, ours.stderr[-3000:]
    run_dir = tmp_path / "ours/probe-videoqa/tiny-bundled/uniform-scale/b0.25-f8"
    summary = json.loads((run_dir / "summary.json").read_text())
    print(f"\nlmms-eval videomme_probe score {lmms_score:.1f}; harness accuracy "
          f"{summary['metrics']['accuracy']['value']:.1f} (n={N}, uniform-scale 0.25, 8 frames)")
    assert lmms_score == pytest.approx(summary["metrics"]["accuracy"]["value"])

    logged = read_records(tokens_log)
    harness = read_records(run_dir / SAMPLES)
    assert len(logged) == N and all(r["error"] is None for r in logged)
    assert sorted(r["tokens"] for r in logged) == sorted(r["tokens"] for r in harness)
    assert sorted(r["prediction"] for r in logged) == sorted(r["prediction"] for r in harness)
    assert all(r["retention"] == pytest.approx(36 / 196) for r in logged)
