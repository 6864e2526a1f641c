"""docs/extending.md's three worked examples run here, from the very files the guide shows.

The guide embeds docs/examples/* verbatim (checked below), so neither can drift from the other:
a task (adapter module + YAML card), a strategy (the plugin package's module) and a backbone
(a wrapper around the bundled model doing real forward passes).
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw

from resadapt_eval.adapters import ADAPTERS
from resadapt_eval.adapters.base import TASKS_PATH_ENV
from resadapt_eval.backbones import BACKBONES, load_backbone
from resadapt_eval.cli import main
from resadapt_eval.core.protocols import Backbone
from resadapt_eval.core.strategy import Strategy
from resadapt_eval.pipeline import store as rec
from resadapt_eval.probes import build as build_probe
from resadapt_eval.probes.synth import write_video
from resadapt_eval.strategies import STRATEGIES

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"
GUIDE = ROOT / "docs" / "extending.md"
FILES = ["jsonl_qa.py", "tasks/my-numbers.yaml", "plugin/resadapt_keep_first.py", "plugin/setup.cfg",
         "backbone_terse.py"]


def _import(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def examples():
    """Import the example modules (their decorators register them), and unregister them afterwards
    so that other tests see the registries as shipped."""
    registries = (ADAPTERS, BACKBONES, STRATEGIES)
    for reg in registries:
        reg.names()  # load the built-in names first, so that only the examples' are removed afterwards
    before = {reg: dict(reg._items) for reg in registries}
    mods = {"task": _import(EXAMPLES / "jsonl_qa.py", "example_jsonl_qa"),
            "backbone": _import(EXAMPLES / "backbone_terse.py", "example_backbone_terse"),
            "strategy": _import(EXAMPLES / "plugin" / "resadapt_keep_first.py", "resadapt_keep_first")}
    STRATEGIES.register("keep-first")(mods["strategy"].KeepFirst)  # what its entry point does when installed
    yield mods
    for reg, items in before.items():
        for name in set(reg._items) - set(items):
            del reg._items[name]


def _run(args: list[str]) -> None:
    res = CliRunner().invoke(main, ["run", *args, "--no-progress"], catch_exceptions=False)
    assert res.exit_code == 0, res.output


def test_the_guide_shows_the_example_files_verbatim():
    guide = GUIDE.read_text()
    blocks = re.findall(r"```[a-z]*\n(.*?)```", guide, flags=re.S)
    for name in FILES:
        assert (EXAMPLES / name).read_text() in blocks, f"docs/extending.md no longer shows docs/examples/{name}"


def _numbers_data(root: Path) -> Path:
    """Three real PNGs with a number drawn on them, one real video, and one malformed row."""
    root.mkdir(parents=True)
    rows = []
    for i, n in enumerate((3, 7, 12)):
        img = Image.new("RGB", (224, 224), "white")
        ImageDraw.Draw(img).text((80, 70), str(n), fill="black", font_size=72)
        img.save(root / f"n{i}.png")
        rows.append({"id": f"img{i}", "media": f"n{i}.png", "kind": "image", "question": "Which number is shown?",
                     "answer": n})
    write_video(root / "boxes.mp4", n_frames=16, height=112, width=168)
    rows.append({"id": "vid0", "media": "boxes.mp4", "kind": "video", "question": "How many boxes move?", "answer": 2})
    rows.append({"id": "bad0", "media": "../outside.png", "kind": "image", "question": "?", "answer": 1})
    (root / "questions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_task_example_loads_scores_and_runs(examples, tmp_path, monkeypatch):
    monkeypatch.setenv(TASKS_PATH_ENV, str(EXAMPLES / "tasks"))  # the user's own cards, before the bundled ones
    adapter = examples["task"].JsonlQA()
    assert adapter.score(_sample(adapter, tmp_path, 12), "The number is 12.")[0] == {"accuracy": 1.0}
    assert adapter.score(_sample(adapter, tmp_path, 12), "I cannot tell")[0] == {"accuracy": 0.0}
    data = _numbers_data(tmp_path / "data")
    _run(["--task", "my-numbers", "--data-root", str(data), "--strategy", "uniform-scale", "--budget", "0.5",
          "--out", str(tmp_path / "out"), "--max-error-rate", "0.5"])  # one of five rows is malformed on purpose
    run = rec.run_dir(tmp_path / "out", "my-numbers", "tiny-bundled", "uniform-scale", "0.5", 8)
    records = {r["id"]: r for r in rec.read_records(run / rec.SAMPLES)}
    assert set(records) == {"img0", "img1", "img2", "vid0", "bad0"}
    assert "escapes the data root" in records["bad0"]["error"]  # one error record; the rest ran
    for rid in ("img0", "img1", "img2", "vid0"):
        r = records[rid]
        assert r["error"] is None and r["score"]["accuracy"] in (0.0, 1.0)
        assert r["tokens"] <= r["limit"] or not r["plan"]["feasible"]  # a tiny image may not get that small
        assert r["score"]["accuracy"] == float(r["parsed"] == r["target"])
    assert records["vid0"]["frames_decoded"] == 8
    summary = rec.read_json(run / rec.SUMMARY)
    assert set(summary["breakdowns"]["kind"]) == {"image", "video"}, summary["breakdowns"]


def _sample(adapter, root: Path, answer: int):
    from resadapt_eval.adapters.base import TaskCard

    card = TaskCard(name="t", adapter="jsonl-qa", data_root=root, frames=1, max_new_tokens=8)
    return adapter.sample_from_row({"id": "x", "media": "x.png", "question": "?", "answer": answer}, card)


def test_strategy_example_keeps_the_earliest_chunks_within_the_budget(examples, tmp_path):
    assert isinstance(examples["strategy"].KeepFirst(), Strategy)
    data = build_probe("probe-videoqa", tmp_path / "data", seed=0, n=3)
    _run(["--task", "probe-videoqa", "--data-root", str(data), "--strategy", "keep-first", "--budget", "0.5",
          "--out", str(tmp_path / "out")])
    run = rec.run_dir(tmp_path / "out", "probe-videoqa", "tiny-bundled", "keep-first", "0.5", 8)
    records = rec.read_records(run / rec.SAMPLES)
    assert len(records) == 3
    for r in records:  # 8 frames are 4 chunks; half the budget holds the first two at full size
        assert r["error"] is None and r["plan"]["frames"] == [0, 1, 2, 3] and r["retention"] == pytest.approx(0.5)


def test_backbone_example_is_the_bundled_model_with_its_instruction(examples, tmp_path):
    from resadapt_eval.core.budget import parse_budget
    from resadapt_eval.core.strategy import Context, vanilla_plan
    from resadapt_eval.pipeline.media import load_frames

    terse = load_backbone("tiny-bundled-terse")
    assert isinstance(terse, Backbone) and terse.name == "tiny-bundled-terse"
    assert terse.describe()["instruction"] == examples["backbone"].INSTRUCTION
    assert terse.describe()["fingerprint"] == load_backbone("tiny-bundled").describe()["fingerprint"]
    data = build_probe("probe-videoqa", tmp_path / "data", seed=0, n=2)
    _run(["--task", "probe-videoqa", "--data-root", str(data), "--backbone", "tiny-bundled-terse", "--strategy", "vanilla",
          "--out", str(tmp_path / "out")])
    run = rec.run_dir(tmp_path / "out", "probe-videoqa", "tiny-bundled-terse", "vanilla", "1", 8)
    records = rec.read_records(run / rec.SAMPLES)
    assert len(records) == 2 and all(r["error"] is None for r in records)
    # The same answers as the bundled model given the instruction directly: it is that model, wrapped.
    from resadapt_eval.adapters.base import TaskCard

    card = TaskCard.load("probe-videoqa", data_root=str(data))
    samples = ADAPTERS.get(card.adapter)().load(card)[:2]
    for sample, r in zip(samples, records):
        frames = load_frames(sample.media_kind, sample.media, 8)
        ctx = Context.build(sample, frames, terse.geometry, parse_budget("1.0"), 0)
        out = terse.inner.execute(vanilla_plan(ctx), frames, sample.prompt + examples["backbone"].INSTRUCTION, 16)
        assert r["prediction"] == out.text and r["tokens"] == out.visual_tokens
