"""Data-parallel runs under torchrun (2 CPU processes, gloo): the merged records equal a 1-process
run's, and a job whose rank was SIGKILLed mid-run completes on restart with every sample once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resadapt_eval import probes
from resadapt_eval.pipeline.store import SAMPLES, SUMMARY, read_records, shard_files

N = 24
RUN_DIR = Path("probe-longvideo/tiny-bundled/uniform-scale/b1-f64")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


@pytest.fixture(scope="module")
def longvideo(tmp_path_factory) -> Path:
    return probes.build("probe-longvideo", tmp_path_factory.mktemp("plv"), seed=0, n=N)


def env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run_args(root: Path, out: Path) -> list[str]:
    return ["-m", "resadapt_eval", "run", "--task", "probe-longvideo", "--data-root", str(root), "--out", str(out),
            "--no-progress"]


def by_id(directory: Path) -> dict[str, tuple]:
    records = read_records(directory / SAMPLES)
    assert len(records) == len({r["id"] for r in records}), "a sample was written twice"
    return {r["id"]: (r["prediction"], r["tokens"], r["score"]) for r in records}


def metrics(directory: Path) -> dict:
    summary = json.loads((directory / SUMMARY).read_text())
    return {k: summary[k] for k in ("n", "n_scored", "n_errors", "metrics", "retention_mean", "tokens_mean")}


@pytest.fixture(scope="module")
def single(longvideo, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single")
    subprocess.run([sys.executable, *run_args(longvideo, out)], env=env(), check=True, timeout=300)
    return out / RUN_DIR


def test_two_ranks_give_the_records_and_summary_of_one_process(longvideo, single, tmp_path):
    res = subprocess.run([*TORCHRUN, *run_args(longvideo, tmp_path)], env=env(), capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    merged = tmp_path / RUN_DIR
    assert not shard_files(merged)
    assert by_id(merged) == by_id(single) and len(by_id(merged)) == N
    assert metrics(merged) == metrics(single)
    assert res.stdout.count("probe-longvideo tiny-bundled uniform-scale") == 1  # rank 0 reports, once


def _rank_pid(parent: int, rank: int) -> int | None:
    """The pid of the torchrun worker started with RANK=rank under `parent`."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == parent:
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ and _descends(int(entry.name), parent):
            return int(entry.name)
    return None


def _descends(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            return False
    return False


def test_a_killed_rank_resumes_without_losing_or_duplicating_samples(longvideo, single, tmp_path):
    run_dir = tmp_path / RUN_DIR
    job = subprocess.Popen([*TORCHRUN, *run_args(longvideo, tmp_path)], env=env(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    victim, deadline = None, time.time() + 240
    while time.time() < deadline and job.poll() is None:
        shard = run_dir / "samples.rank1-of-2.jsonl"
        if shard.exists() and len(read_records(shard)) >= 2:
            victim = _rank_pid(job.pid, 1)
            if victim is not None:
                os.kill(victim, signal.SIGKILL)
                break
        time.sleep(0.02)
    assert victim is not None, "rank 1 finished before it could be killed"
    assert job.wait(timeout=120) != 0
    written = sum(len(read_records(p)) for p in shard_files(run_dir))
    assert 2 <= written < N and not (run_dir / SUMMARY).exists()

    res = subprocess.run([*TORCHRUN, *run_args(longvideo, tmp_path)], env=env(), capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert not shard_files(run_dir)
    assert by_id(run_dir) == by_id(single) and len(by_id(run_dir)) == N
    assert metrics(run_dir) == metrics(single)


def test_a_sweep_reads_its_grid_from_a_yaml_file_and_flags_override_it(longvideo, tmp_path):
    from click.testing import CliRunner

    from resadapt_eval.cli import main

    config = tmp_path / "sweep.yaml"
    config.write_text("tasks: [probe-longvideo]\nstrategies: [uniform-scale, uniform-frames]\nbudgets: [0.25, 1.0]\n"
                      f"limit: 2\ndata-root: {longvideo}\n")
    res = CliRunner().invoke(main, ["sweep", "--config", str(config), "--budgets", "0.5", "--out", str(tmp_path),
                                    "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "2 configurations" in res.output
    runs = sorted(p.parent.relative_to(tmp_path).as_posix() for p in tmp_path.rglob(SUMMARY))
    assert runs == ["probe-longvideo/tiny-bundled/uniform-frames/b0.5-f64", "probe-longvideo/tiny-bundled/uniform-scale/b0.5-f64"]
    config.write_text("taks: [probe-longvideo]\n")
    res = CliRunner().invoke(main, ["sweep", "--config", str(config)])
    assert res.exit_code == 2 and "unknown option(s) taks" in res.output
