"""--strategy resadapt: allocations onto exact budgets, the allocator's cost in records, chunk dropping,
and original ResAdapt (smol_allocator) folders behind --trust-remote-code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from resadapt_eval import probes
from resadapt_eval.allocator.external import chunk_scales
from resadapt_eval.allocator.policy import Policy
from resadapt_eval.core.budget import Budget
from resadapt_eval.cli import main
from resadapt_eval.pipeline.store import SAMPLES, read_records
from resadapt_eval.core.strategy import Context
from resadapt_eval.strategies.resadapt_budget import allocation_plan, kept_chunks, parse_drop
from resadapt_eval.core.types import Frames, Sample, UserError


def video_context(backbone, fraction: float, n: int = 8, side: int = 196) -> Context:
    pixels = np.random.default_rng(0).integers(0, 255, (n, side, side, 3), dtype=np.uint8)
    frames = Frames("video", pixels, list(range(n)), [i / 4 for i in range(n)], 4.0, n)
    return Context.build(Sample("s", "Which texture?", "video", None, "A"), frames, backbone.geometry,
                         Budget(fraction=fraction), 0, backbone)


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_allocation_meets_the_budget_and_keeps_the_order(backbone25, fraction):
    ctx = video_context(backbone25, fraction)
    scales = [0.3, 1.4, 0.5, 0.9]
    plan = allocation_plan(ctx, scales)
    assert plan.tokens <= ctx.limit and plan.feasible
    tokens = [backbone25.geometry.tokens_per_chunk(c.height, c.width) for c in plan.chunks]
    order = sorted(range(4), key=lambda k: -scales[k])
    assert all(tokens[order[i]] >= tokens[order[i + 1]] for i in range(3)), tokens
    assert sum(tokens) == plan.tokens


def test_cap_fit_spends_less_when_proposed_and_never_more_than_the_budget(backbone25):
    """fit=cap: an allocation under the budget is used as proposed; one over it is projected."""
    ctx = video_context(backbone25, 0.5)
    small = allocation_plan(ctx, [0.2, 0.2, 0.4, 0.2], fit="cap")
    exact = allocation_plan(ctx, [0.2, 0.2, 0.4, 0.2], fit="exact")
    assert small.tokens < exact.tokens <= ctx.limit
    assert small.tokens == allocation_plan(ctx, [0.2, 0.2, 0.4, 0.2], fit="none").tokens
    big = allocation_plan(ctx, [1.0, 1.0, 1.0, 0.9], fit="cap")
    assert big.tokens == allocation_plan(ctx, [1.0, 1.0, 1.0, 0.9], fit="exact").tokens <= ctx.limit
    assert allocation_plan(ctx, [1.0, 1.0, 1.0, 0.9], fit="none").tokens > ctx.limit


def test_topk_drop_keeps_the_best_chunks_in_time_order(backbone25):
    ctx = video_context(backbone25, 0.25)
    assert parse_drop("topk:2") == ("topk", 2.0) and kept_chunks([0.3, 1.4, 0.5, 0.9], "topk", 2) == [1, 3]
    assert kept_chunks([0.3, 1.4, 0.5, 0.9], "threshold", 0.5) == [1, 3]
    plan = allocation_plan(ctx, [0.3, 1.4, 0.5, 0.9], parse_drop("topk:2"))
    assert plan.frame_positions == [2, 3, 6, 7] and plan.tokens <= ctx.limit
    assert plan.chunks[1].start_s == pytest.approx(1.0)  # its own time, counted from the first kept frame
    with pytest.raises(UserError, match="drop must be"):
        parse_drop("top:2")


def test_per_frame_scales_become_chunk_means():
    assert chunk_scales([1.0, 0.0, 0.5, 0.5], 4, 2) == [0.5, 0.5]
    assert chunk_scales([1.0, 0.2], 8, 2) == [1.0, 1.0, 0.2, 0.2]  # an allocator that saw fewer frames


@pytest.fixture(scope="module")
def videoqa(tmp_path_factory) -> Path:
    return probes.build("probe-videoqa", tmp_path_factory.mktemp("pvqa"), seed=0, n=6)


def run_cli(*args: str):
    return CliRunner().invoke(main, ["run", "--no-progress", *args], catch_exceptions=False)


def test_a_saved_allocator_runs_and_its_cost_is_in_every_record(videoqa, tmp_path):
    from resadapt_eval.backbones import load_backbone

    backbone = load_backbone("tiny-bundled")
    folder = Policy.create(backbone).head.save(tmp_path / "alloc")
    res = run_cli("--task", "probe-videoqa", "--data-root", str(videoqa), "--strategy", "resadapt-budget",
                  "--allocator", str(folder), "--budget", "0.25", "--out", str(tmp_path / "out"))
    assert res.exit_code == 0, res.output
    run = next((tmp_path / "out").glob("probe-videoqa/tiny-bundled/resadapt-budget+allocator=alloc@*/b0.25-f8"))
    records = read_records(run / SAMPLES)
    assert len(records) == 6
    for r in records:
        assert r["error"] is None and r["tokens"] <= r["limit"]
        assert r["flops"]["planner"] > 0
        assert r["flops"]["total"] == pytest.approx(r["flops"]["vision"] + r["flops"]["llm_prefill"]
                                                    + r["flops"]["planner"])
        assert r["plan"]["planner_flops"] == r["flops"]["planner"] and r["timings"]["plan"] > 0


def test_the_bundled_allocator_is_the_default_and_beats_uniform_at_the_same_tokens(tmp_path_factory, tmp_path):
    """The shipped allocator on 40 held-out probe-videoqa samples at 36 visual tokens: it was trained
    to keep only its best chunk on this task (drop=topk:1, used by default), so it must put the
    whole budget on one chunk and beat uniform downscaling at identical retention."""
    root = probes.build("probe-videoqa", tmp_path_factory.mktemp("pvqa40"), seed=0, n=40)
    args = ("--task", "probe-videoqa", "--data-root", str(root), "--budget", "tokens=36", "--out", str(tmp_path))
    for strategy in ("resadapt-budget", "uniform-scale"):
        res = run_cli(*args, "--strategy", strategy)
        assert res.exit_code == 0, res.output
    runs = {s: tmp_path / "probe-videoqa" / "tiny-bundled" / s / "bt36-f8" for s in ("resadapt-budget", "uniform-scale")}
    summary = {s: json.loads((d / "summary.json").read_text()) for s, d in runs.items()}
    manifest = json.loads((runs["resadapt-budget"] / "manifest.json").read_text())
    described = manifest["config"]["strategy"]
    assert "allocator.safetensors" in described["allocator_files"]
    assert described["allocator_config"]["trained_drop"]["task_drop"]["probe-videoqa"] == "topk:1"
    assert all(len(r["plan"]["frames"]) == 2 for r in read_records(runs["resadapt-budget"] / SAMPLES))
    assert summary["resadapt-budget"]["retention_mean"] == pytest.approx(summary["uniform-scale"]["retention_mean"], abs=0.01)
    acc = {s: summary[s]["metrics"]["accuracy"]["value"] for s in summary}
    assert acc["resadapt-budget"] >= acc["uniform-scale"] + 30, acc


FIXTURE_MODELING = '''
import torch
from transformers import PretrainedConfig, PreTrainedModel


class FixtureAllocatorConfig(PretrainedConfig):
    model_type = "smol_allocator"

    def __init__(self, min_scale=0.2, max_scale=2.0, max_frames=8, **kw):
        super().__init__(**kw)
        self.min_scale, self.max_scale, self.max_frames = min_scale, max_scale, max_frames


class FixtureAllocator(PreTrainedModel):
    """Follows the smol_allocator contract: scales one value per frame, brighter frames higher."""
    config_class = FixtureAllocatorConfig

    def __init__(self, config):
        super().__init__(config)
        self.gain = torch.nn.Parameter(torch.ones(1))
        self.post_init()

    def scale_multi_modal(self, messages=None, eval_mode=False, **kwargs):
        media = messages[0][0]["content"][0]
        frames = media["video"] if media["type"] == "video" else [media["image"]]
        import numpy as np
        bright = torch.tensor([float(np.asarray(f).mean()) for f in frames])
        u = (bright - bright.min()) / (bright.max() - bright.min() + 1e-6)
        scales = self.config.min_scale + self.gain * u * (self.config.max_scale - self.config.min_scale)
        return {"scales": scales[None], "scale_mask": torch.ones(1, len(frames), dtype=torch.bool)}
'''


@pytest.fixture(scope="module")
def smol_folder(tmp_path_factory) -> Path:
    import importlib.util
    import sys

    folder = tmp_path_factory.mktemp("smol")
    (folder / "modeling_fixture.py").write_text(FIXTURE_MODELING)
    spec = importlib.util.spec_from_file_location("modeling_fixture_build", folder / "modeling_fixture.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    module.FixtureAllocator(module.FixtureAllocatorConfig()).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "modeling_fixture.FixtureAllocatorConfig",
                          "AutoModel": "modeling_fixture.FixtureAllocator"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_smol_allocator_is_refused_without_trust_remote_code(smol_folder, videoqa, tmp_path):
    res = run_cli("--task", "probe-videoqa", "--data-root", str(videoqa), "--strategy", "resadapt-budget",
                  "--allocator", str(smol_folder), "--budget", "0.25", "--out", str(tmp_path))
    assert res.exit_code == 2 and "--trust-remote-code" in res.output and res.output.count("\n") == 1


def test_smol_allocator_scales_go_through_the_same_projection(smol_folder, videoqa, tmp_path):
    res = run_cli("--task", "probe-videoqa", "--data-root", str(videoqa), "--strategy", "resadapt-budget",
                  "--allocator", str(smol_folder), "--trust-remote-code", "--budget", "0.25", "--limit", "3",
                  "--out", str(tmp_path))
    assert res.exit_code == 0, res.output
    run = next(tmp_path.glob("probe-videoqa/tiny-bundled/resadapt-budget+*/b0.25-f8"))
    from resadapt_eval.pipeline.media import load_frames

    for r in read_records(run / SAMPLES):
        assert r["error"] is None and r["tokens"] <= r["limit"] and r["flops"]["planner"] > 0
        frames = load_frames("video", str(videoqa / "data" / f"{r['id']}.mp4"), 8)
        bright = frames.pixels.reshape(4, -1).mean(1)  # the fixture ranks chunks by brightness
        sizes = [h * w for h, w in r["plan"]["chunks"]]
        assert sizes[int(np.argmax(bright))] == max(sizes)


def test_train_allocator_writes_a_loadable_allocator_with_its_curves(tmp_path, monkeypatch):
    """Two real CAPO steps through the evaluation path (tiny-bundled, probe training split):
    the folder it writes runs as --allocator, and its config records how it was trained."""
    monkeypatch.setenv("RESADAPT_HOME", str(tmp_path / "home"))
    out = tmp_path / "alloc"
    res = CliRunner().invoke(main, ["train-allocator", "--task", "probe-videoqa", "--out", str(out), "--steps", "2",
                                    "--group", "3", "--train-samples", "3", "--task-budgets", "probe-videoqa=0.25",
                                    "--task-drop", "probe-videoqa=topk:2", "--no-progress"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    config = json.loads((out / "allocator_config.json").read_text())
    assert config["trained"]["task_budgets"] == {"probe-videoqa": [0.25]}
    assert config["trained"]["task_drop"] == {"probe-videoqa": "topk:2"} and config["trained"]["prompts"] == 2
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["budget"] for h in history] == [0.25, 0.25]
    assert all(0 < h["cost"] <= 0.25 and 0 <= h["reward"] <= 1 for h in history)
    assert (out / "training.png").stat().st_size > 0
    head = Policy.load(out, load_bundled()).head
    assert all(torch.isfinite(p).all() for p in head.parameters())


def load_bundled():
    from resadapt_eval.backbones import load_backbone
    return load_backbone("tiny-bundled")


@pytest.mark.parametrize("args, message", [
    (["--task-drop", "probe-math=topk:1"], "TASK one of --task"),
    (["--task-budgets", "probe-videoqa=a"], "comma-separated fractions"),
    (["--drop", "top:3"], "drop must be"),
    (["--task-mode", "probe-videoqa=loose"], "TASK=budget or TASK=free"),
    (["--warm-start", "probe-videoqa=5"], "for free-mode tasks; add --task-mode probe-videoqa=free"),
    (["--task-mode", "probe-videoqa=free", "--warm-start", "probe-videoqa=x"], "positive count of prompts"),
    (["--task-weight", "probe-videoqa=-1"], "W a number >= 0"),
    (["--task-weight", "probe-videoqa=0"], "at least one task needs a positive weight"),
])
def test_train_allocator_refuses_bad_settings_in_one_line(tmp_path, args, message):
    res = CliRunner().invoke(main, ["train-allocator", "--task", "probe-videoqa", "--out", str(tmp_path), *args])
    assert res.exit_code == 2 and message in res.output, res.output


def test_oracle_warm_start_fits_the_head_to_the_smallest_scale_that_still_answers(tmp_path, monkeypatch):
    """probe-math in free mode: the oracle scale of each prompt is the smallest grid scale from which
    every larger one answers right (checked here by rolling the backbone out again), the warm start
    is recorded in the allocator's config, and the task weight 0 leaves it with no CAPO prompts."""
    from resadapt_eval.training.allocator import ORACLE_GRID, Environment, oracle_scale

    monkeypatch.setenv("RESADAPT_HOME", str(tmp_path / "home"))
    env = Environment("probe-math", load_bundled(), 4, 0)
    for index in range(4):
        ctx = env.context(index, 1.0)
        oracle = oracle_scale(env, ctx)
        assert oracle in ORACLE_GRID
        above = [s for s in ORACLE_GRID if s >= oracle]
        rewards = [env.reward(ctx, torch.tensor([s]), "none")[0] for s in above]
        assert rewards == [1.0] * len(above) or (oracle == max(ORACLE_GRID) and rewards == [0.0])
        if oracle > min(ORACLE_GRID):  # one step smaller fails, or the walk would have gone on
            below = max(s for s in ORACLE_GRID if s < oracle)
            assert env.reward(ctx, torch.tensor([below]), "none")[0] < 1.0 or rewards == [0.0]
    out = tmp_path / "alloc"
    res = CliRunner().invoke(main, ["train-allocator", "--task", "probe-videoqa", "--task", "probe-math", "--out",
                                    str(out), "--steps", "2", "--group", "2", "--train-samples", "3",
                                    "--task-mode", "probe-math=free", "--warm-start", "probe-math=3",
                                    "--task-weight", "probe-math=0", "--no-progress"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    trained = json.loads((out / "allocator_config.json").read_text())["trained"]
    (warm,) = trained["warm_started"]
    assert warm["task"] == "probe-math" and warm["prompts"] == 3 and min(ORACLE_GRID) <= warm["oracle_mean"] <= 1
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["task"] for h in history] == ["probe-videoqa", "probe-videoqa"]
