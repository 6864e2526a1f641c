"""The bundled backbone (tiny-bundled): loads offline by its alias, is small, and makes budgets matter."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from resadapt_eval import probes
from resadapt_eval.pipeline import store as rec
from resadapt_eval.backbones import ALIASES
from resadapt_eval.cli import main

BUNDLED = ALIASES["tiny-bundled"]


def test_former_alias_reference_still_names_the_bundled_backbone():
    assert ALIASES["reference"] == BUNDLED and BUNDLED.name == "tiny-bundled"


def test_bundled_files_are_safetensors_and_small():
    files = {p.name for p in BUNDLED.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pth", ".pkl")) for name in files)
    assert sum(p.stat().st_size for p in BUNDLED.iterdir()) < 25 * 2**20


@pytest.fixture(scope="module")
def videoqa_root(tmp_path_factory) -> Path:
    # the first 40 samples of the evaluation split (generation is deterministic per index)
    return probes.build("probe-videoqa", tmp_path_factory.mktemp("pvqa"), seed=0, n=40)


def accuracy(out: Path, strategy: str, budget: str) -> float:
    d = rec.run_dir(out, "probe-videoqa", "tiny-bundled", strategy, budget, 8)
    return rec.read_json(d / "summary.json")["metrics"]["accuracy"]["value"]


def test_bundled_reads_the_needle_and_loses_it_at_low_budget(videoqa_root, tmp_path):
    for strategy, budget in (("vanilla", "1.0"), ("uniform-scale", "0.1")):
        res = CliRunner().invoke(main, ["run", "--task", "probe-videoqa", "--data-root", str(videoqa_root),
                                        "--strategy", strategy, "--budget", budget, "--out", str(tmp_path),
                                        "--no-progress"], catch_exceptions=False)
        assert res.exit_code == 0, res.output
    vanilla, low = accuracy(tmp_path, "vanilla", "1"), accuracy(tmp_path, "uniform-scale", "0.1")
    assert vanilla >= 85.0, vanilla
    assert low <= vanilla - 25.0, (vanilla, low)
