"""A researcher's day, on CPU: install the package as a user does, bring checkpoints and data by path,
train an allocator, run the README's sweep, draw the frontier and gate a run.

Every command runs the `resadapt-eval` of a fresh virtualenv that holds the built wheel (non-editable),
from a temporary directory outside the checkout, with no PYTHONPATH: a step that needs the source
tree fails. The fresh venv takes its dependencies (torch, transformers, ...) from this environment's
site-packages through a .pth line instead of copying gigabytes; the package itself is the wheel's.

Slow (several minutes): marked `acceptance`, run by `make test-acceptance` in `.ci/run`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from resadapt_eval.pipeline import store as rec

pytestmark = [pytest.mark.slow, pytest.mark.acceptance]

REPO = Path(__file__).resolve().parents[1]
SOURCE_IGNORE = shutil.ignore_patterns(".git", ".venv*", "build", "dist", "results", ".cache", "__pycache__",
                                       "*.egg-info", ".pytest_cache", "notebooks", "docs")
CARDS = {"charades_sta", "longvideobench", "mathvista", "probe-grounding", "probe-longvideo", "probe-math",
         "probe-videoqa", "probe-which", "videomme"}


@dataclass
class Install:
    """A fresh virtualenv with the package installed non-editable, and how to run its CLI."""

    root: Path
    python: Path
    cli: Path
    env: dict[str, str]
    cwd: Path

    def run(self, *args: str, timeout: int = 1800, ok: bool = True) -> subprocess.CompletedProcess:
        started = time.perf_counter()
        res = subprocess.run([str(self.cli), *args], cwd=self.cwd, env=self.env, capture_output=True, text=True,
                             timeout=timeout)
        print(f"[{time.perf_counter() - started:6.1f} s] resadapt-eval {' '.join(args[:6])} -> {res.returncode}")
        if ok:
            assert res.returncode == 0, f"resadapt-eval {' '.join(args)}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
        return res


def _copy_source(dst: Path) -> Path:
    """The checkout's files a build reads, copied: a build never writes build/ into the checkout, and
    stale build output cannot leak into the wheel."""
    shutil.copytree(REPO, dst, ignore=SOURCE_IGNORE)
    return dst


def _fresh_venv(path: Path) -> Path:
    """A venv whose own site-packages is empty; dependencies come from this environment's."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # A path line, not the other env's .pth files: its editable install of this checkout stays inactive.
    (Path(site) / "_resadapt_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def _pip_install(python: Path, target: str | Path) -> None:
    """--ignore-installed: this environment's own (editable) resadapt-eval is visible through the .pth
    line and would otherwise count as already installed."""
    res = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--ignore-installed",
                          "--no-build-isolation", "--no-index", "--quiet", str(target)],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]


def _user_env(root: Path, venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "RESADAPT_TASKS_DIR",
                                                            "RESADAPT_TASKS_PATH", "PYTHONHOME")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               HF_HOME=str(root / "hf"), RESADAPT_HOME=str(root / "resadapt-home"), TOKENIZERS_PARALLELISM="false",
               MPLBACKEND="Agg")
    return env


def _installed(root: Path, venv: Path, target: str | Path) -> Install:
    python = _fresh_venv(venv)
    _pip_install(python, target)
    work = root / "work"
    work.mkdir(parents=True, exist_ok=True)
    inst = Install(root, python, venv / "bin" / "resadapt-eval", _user_env(root, venv), work)
    where = subprocess.run([str(python), "-c", "import resadapt_eval; print(resadapt_eval.__file__)"], cwd=work,
                           env=inst.env, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(venv), f"resadapt_eval imported from {where}, not from the fresh venv"
    assert not Path(where).is_relative_to(REPO)
    return inst


def _check_installed_cards(inst: Install) -> None:
    rows = json.loads(inst.run("list", "tasks", "--json").stdout)
    assert {r["name"] for r in rows} >= CARDS
    for r in rows:
        if r["name"] in CARDS:
            assert r["origin"] == "bundled" and Path(r["path"]).is_relative_to(inst.root), r


def test_pip_install_dot_runs_a_probe_offline_from_another_directory(tmp_path):
    """The README's install line, `pip install .`, into a fresh venv; then a probe run from elsewhere."""
    inst = _installed(tmp_path, tmp_path / "venv", _copy_source(tmp_path / "src"))
    _check_installed_cards(inst)
    res = inst.run("run", "--task", "probe-videoqa", "--budget", "0.25", "--limit", "4", "--no-progress",
                   "--out", "results")
    run_dir = inst.cwd / "results/probe-videoqa/tiny-bundled/uniform-scale/b0.25-f8"
    records = rec.read_records(run_dir / rec.SAMPLES)
    assert len(records) == 4 and all(r["error"] is None and r["tokens"] > 0 for r in records), res.stdout
    summary = json.loads((run_dir / rec.SUMMARY).read_text())
    assert summary["n"] == 4 and summary["n_errors"] == 0
    assert (tmp_path / "resadapt-home/probes/probe-videoqa/test/PROBE.json").is_file()  # built where the card says (test split)


def _standins(root: Path) -> dict[str, Path]:
    """Two tiny random checkpoints saved with save_pretrained, laid out as hub snapshots."""
    from resadapt_eval.backbones.tiny import build_tiny_qwen_vl

    deep = {"num_hidden_layers": 4}  # fastv's default layer (2) must lie inside the LLM
    out = {"Qwen2.5-VL-7B-Instruct": build_tiny_qwen_vl(root / "Qwen2.5-VL-7B-Instruct", "qwen2_5_vl", text=deep),
           "Qwen3-VL-8B-Instruct": build_tiny_qwen_vl(root / "Qwen3-VL-8B-Instruct", "qwen3_vl", text=deep)}
    for folder in out.values():
        names = {p.name for p in folder.iterdir()}
        assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                "tokenizer_config.json", "chat_template.jinja"} <= names, names
        assert names & {"processor_config.json", "preprocessor_config.json"}, names
    return out


def _data(inst: Install) -> Path:
    """Video-MME and LongVideoBench layouts under $HF_HOME (where the bundled cards look), real encoded
    videos; a user card outside the package, found through $RESADAPT_TASKS_PATH."""
    from resadapt_eval.probes.synth import make_videomme

    hf = Path(inst.env["HF_HOME"])
    make_videomme(hf / "videomme", n_videos=3, questions_per_video=2, missing=0)
    inst.run("probe", "build", "--task", "probe-longvideo", "--n", "4", "--out", str(hf / "longvideobench"))
    cards = inst.root / "my-cards"
    cards.mkdir()
    (cards / "my-videoqa.yaml").write_text(
        "# A user's own task: Video-MME's data with the Qwen3-VL prompt, 8 frames\n"
        "adapter: videomme\ndata_root: ${HF_HOME}/videomme\nannotations: videomme/test-*.parquet\nvideos: data\n"
        "prompt_variant: qwen3_vl\nframes: 8\nmax_new_tokens: 8\n")
    inst.env["RESADAPT_TASKS_PATH"] = str(cards)
    rows = {r["name"]: r for r in json.loads(inst.run("list", "tasks", "--json").stdout)}
    assert rows["my-videoqa"]["origin"] == "$RESADAPT_TASKS_PATH"
    return cards


def _runs(out: Path) -> dict[tuple[str, str, str, str], Path]:
    """(task, backbone, strategy, b<budget>-f<frames>) -> run directory, for every summary under out."""
    return {tuple(p.parent.relative_to(out).parts): p.parent for p in out.glob(f"*/*/*/*/{rec.SUMMARY}")}


def _check_run(directory: Path, n: int) -> dict:
    records = rec.read_records(directory / rec.SAMPLES)
    summary = json.loads((directory / rec.SUMMARY).read_text())
    manifest = json.loads((directory / rec.MANIFEST).read_text())
    assert len(records) == n and len({r["id"] for r in records}) == n, directory
    # resadapt spends what its policy chooses and may upscale (scales up to 2.0 per side: 4x the tokens);
    # every other strategy stays within its budget, so within vanilla
    most = 4.0001 if summary["strategy"].split("+")[0] == "resadapt" else 1.0001
    for r in records:
        assert r["error"] is None, (directory, r["error"])
        assert isinstance(r["prediction"], str) and r["tokens"] > 0 and 0 < r["retention"] <= most, (directory, r)
        assert r["tokens"] <= most * r["vanilla_tokens"] and r["timings"]["e2e"] > 0, (directory, r)
    assert summary["n"] == n and summary["n_errors"] == 0 and summary["main_metric"] in summary["metrics"]
    assert manifest["config_hash"] == summary["config_hash"] and manifest["environment"]["versions"]["torch"]
    return {"records": records, "summary": summary, "manifest": manifest}


def test_a_researchers_day(tmp_path):
    started = time.perf_counter()
    # 1. Install: build the wheel, install it non-editable into a fresh venv.
    src = _copy_source(tmp_path / "src")
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                          "--quiet", "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    wheel = next((tmp_path / "dist").glob("resadapt_eval-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"resadapt_eval/tasks/{c}.yaml" for c in CARDS} <= names
    assert {"resadapt_eval/assets/tiny-bundled/model.safetensors", "resadapt_eval/assets/tiny-bundled/config.json",
            "resadapt_eval/assets/tiny-encoder/model.safetensors", "resadapt_eval/assets/allocator/resadapt/allocator.safetensors",
            "resadapt_eval/assets/allocator/tiny-bundled/allocator.safetensors",
            "resadapt_eval/assets/published/resadapt-qwen2.5-vl-7b.json"} <= names
    inst = _installed(tmp_path, tmp_path / "venv", wheel)
    _check_installed_cards(inst)

    # 2. Stand-in checkpoints, referred to by path only from here on.
    models = _standins(tmp_path / "models")
    qwen25, qwen3 = str(models["Qwen2.5-VL-7B-Instruct"]), str(models["Qwen3-VL-8B-Instruct"])

    # 3. Data in the benchmarks' layouts, and a user's own card.
    _data(inst)

    # 4. A resadapt-budget allocator for the Qwen2.5-VL stand-in (resadapt's bundled one plans for any backbone).
    allocator = tmp_path / "allocators" / "qwen25-standin"
    inst.run("train-allocator", "--backbone", qwen25, "--task", "probe-videoqa", "--out", str(allocator),
             "--steps", "4", "--group", "2", "--train-samples", "8", "--no-progress")
    assert {"allocator.safetensors", "allocator_config.json", "history.jsonl"} <= {p.name for p in allocator.iterdir()}
    config = json.loads((allocator / "allocator_config.json").read_text())
    assert json.dumps(config).count("Qwen2.5-VL-7B-Instruct") >= 1  # trained against the stand-in

    # 5. The README's sweep (sweep.yaml in its form: tasks, strategies, budgets, frames, backbone, allocator)
    # with every registered strategy at two budgets, the trained allocator, one strategy option and the
    # user's card. (The README's grid verbatim runs in tests/test_sweep_grid.py; here it is kept small
    # because every command goes through a fresh interpreter.)
    strategies = json.loads(inst.run("list", "strategies", "--json").stdout)
    assert {"vanilla", "uniform-scale", "uniform-frames", "fastv", "resadapt", "resadapt-budget", "visionzip"} <= set(strategies)
    grid = {"tasks": ["my-videoqa", "longvideobench"], "strategies": [*strategies, "fastv+layer=1"],
            "budgets": [0.25, 1.0], "frames": [8], "backbone": qwen25, "allocator": str(allocator)}
    (inst.cwd / "sweep.yaml").write_text(yaml.safe_dump(grid, sort_keys=False))
    res = inst.run("sweep", "--config", "sweep.yaml", "--limit", "1", "--out", "results", "--no-progress")
    n_grid = 2 * (len(strategies) + 1) * 2
    assert f"{n_grid} configurations in" in res.stdout, res.stdout[-2000:]
    # The sweep-wide allocator went to resadapt-budget only (resadapt plans with its own bundled allocator,
    # for any backbone). The Qwen3-VL stand-in has no resadapt-budget allocator: that fails before anything runs ...
    grid3 = {**grid, "tasks": ["my-videoqa"], "backbone": qwen3}
    grid3.pop("allocator")
    (inst.cwd / "sweep3.yaml").write_text(yaml.safe_dump(grid3, sort_keys=False))
    res = inst.run("sweep", "--config", "sweep3.yaml", "--limit", "1", "--out", "results", "--no-progress", ok=False)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1 and "--allocator" in lines[0], res.stderr
    assert not (inst.cwd / "results/my-videoqa/Qwen3-VL-8B-Instruct").exists()
    # ... and every other strategy runs on it, resadapt included.
    grid3["strategies"] = [s for s in grid3["strategies"] if not s.startswith("resadapt-budget")]
    (inst.cwd / "sweep3.yaml").write_text(yaml.safe_dump(grid3, sort_keys=False))
    inst.run("sweep", "--config", "sweep3.yaml", "--limit", "1", "--out", "results", "--no-progress")

    runs = _runs(inst.cwd / "results")
    labels = {key[2] for key in runs}
    for budget in ("b0.25-f8", "b1-f8"):
        for strategy in [*strategies, "fastv+layer=1"]:
            for task, backbone in [("my-videoqa", "Qwen2.5-VL-7B-Instruct"), ("longvideobench", "Qwen2.5-VL-7B-Instruct"),
                                   ("my-videoqa", "Qwen3-VL-8B-Instruct")]:
                if strategy.startswith("resadapt-budget"):
                    if backbone.startswith("Qwen2.5"):  # labelled with its allocator
                        assert any(k[:2] == (task, backbone) and k[2].startswith("resadapt-budget+allocator=qwen25-standin")
                                   and k[3] == budget for k in runs), (task, strategy, budget, labels)
                    continue
                assert (task, backbone, strategy, budget) in runs, (task, backbone, strategy, budget, labels)
    assert len(runs) == n_grid + 2 * len(strategies)  # Qwen3: every strategy but resadapt-budget, plus fastv+layer=1
    for directory in runs.values():
        _check_run(directory, 1)
    alloc_runs = [d for k, d in runs.items() if k[2].startswith("resadapt-budget")]
    assert len(alloc_runs) == 4 and all(str(allocator) in json.dumps(json.loads((d / rec.MANIFEST).read_text())["config"])
                                        for d in alloc_runs)
    layer1 = json.loads((runs[("my-videoqa", "Qwen3-VL-8B-Instruct", "fastv+layer=1", "b0.25-f8")] / rec.MANIFEST)
                        .read_text())
    assert layer1["config"]["strategy_options"] == {"layer": 1}
    mine = json.loads((runs[("my-videoqa", "Qwen3-VL-8B-Instruct", "vanilla", "b1-f8")] / rec.MANIFEST).read_text())
    assert mine["config"]["card"]["options"]["prompt_variant"] == "qwen3_vl"

    # 6. Analysis: the frontier of everything, and a rerun gated against the sweep's run.
    inst.run("frontier", "results")
    frontier = inst.cwd / "results" / "frontier"
    assert frontier.is_dir() and any(frontier.glob("*.png")) and any(frontier.glob("*.csv")), list(frontier.iterdir())
    inst.run("run", "--task", "my-videoqa", "--backbone", qwen3, "--strategy", "uniform-scale", "--budget", "0.25",
             "--limit", "1", "--out", "rerun", "--no-progress")
    rerun = inst.cwd / "rerun/my-videoqa/Qwen3-VL-8B-Instruct/uniform-scale/b0.25-f8"
    res = inst.run("check", str(rerun), "--reference", str(runs[("my-videoqa", "Qwen3-VL-8B-Instruct",
                                                                   "uniform-scale", "b0.25-f8")]))
    assert "PASS" in res.stdout and json.loads((rerun / "check.json").read_text())["passed"] is True
    # The shipped published numbers are found from the install (they cover the paper's tasks, not this one).
    res = inst.run("check", str(rerun), "--reference", "published:resadapt-qwen2.5-vl-7b", ok=False)
    assert res.returncode == 2 and "has no row for my-videoqa" in res.stderr, res.stderr
    print(f"a researcher's day: {time.perf_counter() - started:.0f} s")
