"""--strategy resadapt, the published method, checked against the formulas in the research notes
(../shared/research/resadapt.md sections 1.5, 2 and 5): the Beta policy, the operator, each CAPO
term; its encoder's independence from the backbone; the rollouts' cached input."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from resadapt_eval.allocator.frame_model import FrameAllocatorConfig, FrameAllocatorHead
from resadapt_eval.allocator.frame_policy import FramePolicy
from resadapt_eval.core.budget import Budget, Geometry
from resadapt_eval.core.strategy import Context
from resadapt_eval.core.types import Frames, Sample, UserError
from resadapt_eval.pipeline.store import SAMPLES, read_records
from resadapt_eval.strategies.resadapt import ResAdapt, frame_plan
from resadapt_eval.training.capo import (CapoConfig, capo_advantages, concentration_loss, normalized_cost,
                                         pivot_center)

# Qwen2.5-VL-7B's video geometry as the paper evaluates it: 768 x 28 x 28 pixels per frame.
QWEN25 = Geometry(family="qwen2_5_vl", patch_size=14, merge_size=2, temporal_patch_size=2, image_min_pixels=3136,
                  image_max_pixels=12845056, video_min_pixels=3136, video_max_pixels=768 * 28 * 28)


def context(geometry: Geometry, n: int = 4, height: int = 360, width: int = 640, fraction: float = 1.0,
            backbone=None, question: str = "Which texture?") -> Context:
    pixels = np.random.default_rng(0).integers(0, 255, (n, height, width, 3), dtype=np.uint8)
    frames = Frames("video", pixels, list(range(n)), [i / 2 for i in range(n)], 2.0, n)
    sample = Sample("s", f"Question: {question}\nA. x\nB. y", "video", None, "A", question=question)
    return Context.build(sample, frames, geometry, Budget(fraction=fraction), 0, backbone)


# -- the operator (section 2) ---------------------------------------------------------------------

@pytest.mark.parametrize("scale,tokens", [(0.2, 15), (0.25, 18), (0.3, 28), (0.4, 45), (0.5, 72), (0.75, 170),
                                          (1.0, 299), (1.5, 680), (2.0, 720)])
def test_operator_matches_the_worked_example(scale, tokens):
    """A 640x360 source: base 644x364 = 299 tokens per chunk; s scales each side, snapped, 768-token cap."""
    ctx = context(QWEN25, n=2)
    assert ctx.vanilla_hw == (364, 644)
    plan = frame_plan(ctx, [scale, scale])
    assert plan.tokens == tokens and len(plan.chunks) == 1


def test_chunk_scale_is_the_mean_of_its_frames_and_nothing_is_dropped_or_projected():
    ctx = context(QWEN25, n=4, fraction=0.1)
    plan = frame_plan(ctx, [2.0, 0.2, 0.2, 0.2])
    assert list(plan.scales) == pytest.approx([1.1, 0.2])
    assert plan.frame_positions == [0, 1, 2, 3]
    assert plan.tokens == frame_plan(ctx, [1.1, 1.1, 0.2, 0.2]).tokens > ctx.limit  # spends what it chose
    assert not plan.feasible and "steers its mean" in plan.note


# -- the policy (section 1.5) ----------------------------------------------------------------------

def small_head(**kw) -> FrameAllocatorHead:
    torch.manual_seed(0)
    return FrameAllocatorHead(FrameAllocatorConfig(token_dim=8, text_dim=8, tokens_per_frame=4, hidden=16, heads=2, **kw))


def test_policy_starts_uniform_on_0_2_to_2_0_with_mean_action_1_1():
    head = small_head()
    frames, text = torch.randn(1, 6, 4, 8), torch.randn(1, 3, 8)
    alpha, beta, feature = head(frames, torch.ones(1, 6, dtype=torch.bool), text, torch.ones(1, 3, dtype=torch.bool))
    assert alpha.shape == beta.shape == (1, 6) and feature.shape == (1, 6, 16)
    one = torch.nn.functional.softplus(torch.tensor(-10.0)) + 1
    assert torch.allclose(alpha, one) and torch.allclose(beta, one)
    assert torch.allclose(head.act(alpha, beta), torch.tensor(1.1), atol=1e-4)


def test_policy_can_start_at_a_chosen_mean_scale():
    """init_scale sets the start's Beta mean (every frame alike); init_logit sets alpha."""
    head = small_head(init_logit=-4.0, init_scale=0.6)
    frames, text = torch.randn(1, 5, 4, 8), torch.randn(1, 3, 8)
    alpha, beta, _ = head(frames, torch.ones(1, 5, dtype=torch.bool), text, torch.ones(1, 3, dtype=torch.bool))
    assert torch.allclose(alpha, torch.nn.functional.softplus(torch.tensor(-4.0)) + 1)
    assert torch.allclose(head.act(alpha, beta), torch.tensor(0.6), atol=1e-4)
    with pytest.raises(ValueError, match="strictly inside"):
        small_head(init_scale=2.0)


def test_a_single_frame_image_gets_one_scale():
    """An image is one frame: no previous frame to compare with (MathVista, probe-math)."""
    head = small_head()
    alpha, beta, feature = head(torch.randn(1, 1, 4, 8), torch.ones(1, 1, dtype=torch.bool), torch.randn(1, 3, 8),
                                torch.ones(1, 3, dtype=torch.bool))
    assert alpha.shape == beta.shape == (1, 1) and feature.shape == (1, 1, 16)


def test_beta_parameters_scale_and_evaluation_action_by_hand():
    head = small_head()
    p = torch.tensor([[[2.0, -4.0], [100.0, -100.0]]])
    alpha, beta = head.beta(p)
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731
    assert alpha[0, 0].item() == pytest.approx(sp(1.0) + 1) and beta[0, 0].item() == pytest.approx(sp(-2.0) + 1)
    assert alpha[0, 1].item() == 20.0 and beta[0, 1].item() == pytest.approx(1.0)  # clamped to [0.1, 20]
    u = alpha / (alpha + beta)  # the evaluation action is the Beta mean, not the median
    assert head.act(alpha, beta)[0].tolist() == pytest.approx((0.2 + 1.8 * u)[0].tolist())
    scales, logp = head.sample(alpha, beta, torch.Generator().manual_seed(0))
    assert ((scales >= 0.2) & (scales <= 2.0)).all()
    assert torch.allclose(logp, torch.distributions.Beta(alpha, beta).log_prob((scales - 0.2) / 1.8), atol=1e-4)


# -- CAPO (section 5) -----------------------------------------------------------------------------

def test_linear_scale_cost_is_the_papers_and_retention_counts_tokens():
    scales = torch.tensor([[2.0, 0.2], [1.1, 1.1]])
    linear = normalized_cost("linear-scale", scales, torch.zeros(2))
    assert linear.tolist() == pytest.approx([0.5, 0.5])  # the same mean scale: the paper charges both alike
    retention = torch.tensor([(4.0 + 0.04) / 2, 1.21])   # but they cost 2.02 and 1.21 of vanilla's tokens
    tok = normalized_cost("retention", scales, retention)
    assert tok.tolist() == pytest.approx([(2.02 - 0.04) / 3.96, (1.21 - 0.04) / 3.96])
    assert normalized_cost("retention", scales, torch.tensor([0.01, 9.0])).tolist() == [0.0, 1.0]


def test_pivot_centre_means_in_tokens_what_0_4_means_in_linear_scale():
    assert pivot_center("linear-scale") == 0.4
    s0 = 0.2 + 0.4 * 1.8
    assert pivot_center("retention") == pytest.approx((s0 ** 2 - 0.04) / (4 - 0.04), abs=1e-6)  # 0.2036
    # a uniform allocation at s0 sits exactly on the centre in both units
    at_s0 = normalized_cost("retention", torch.full((1, 4), s0), torch.tensor([s0 * s0]))
    assert at_s0.item() == pytest.approx(pivot_center("retention"), abs=1e-6)
    assert normalized_cost("linear-scale", torch.full((1, 4), s0), torch.zeros(1)).item() == pytest.approx(0.4)


def test_free_mode_group_with_the_retention_pivot_by_hand():
    cfg = CapoConfig(pivot_center=pivot_center("retention"))
    acc, cost = torch.tensor([1.0, 0.0]), torch.tensor([0.1, 0.3])
    pivot = 0.5 * 0.2 + 0.5 * cfg.pivot_center
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    want = [1 + 0.25 * 0.7 * 1.0 * (sig((pivot - 0.1) / 0.15) - 0.5) - 0.05 * 0.1,
            -1 + 0.25 * 1.3 * 1.0 * (sig((0.3 - pivot) / 0.15) - 0.5) - 0.05 * 0.3]
    assert capo_advantages(acc, cost, cfg).tolist() == pytest.approx(want, abs=1e-6)


def test_concentration_loss_is_the_mean_of_alpha_plus_beta_over_valid_frames():
    alpha, beta = torch.tensor([[1.0, 3.0, 9.0]]), torch.tensor([[2.0, 1.0, 9.0]])
    assert concentration_loss(alpha, beta, torch.tensor([[1.0, 1.0, 0.0]])).item() == pytest.approx((3 + 4) / 2)


# -- the head's two additions (not in the original; frame_model.py says why) -------------------------

def _additions_head(**extra) -> FrameAllocatorHead:
    torch.manual_seed(0)
    head = FrameAllocatorHead(FrameAllocatorConfig(token_dim=12, text_dim=10, tokens_per_frame=4, hidden=16, heads=2,
                                                   layers=1, init_logit=-4.0, init_scale=0.6, **extra))
    with torch.no_grad():
        head.proj[-1].weight.normal_(0, 1.0)
        head.skip.weight.normal_(0, 1.0)
    return head.eval()


def test_a_standardised_head_does_not_see_the_encoders_offsets_and_spreads():
    """Refit on features shifted and stretched per dimension, the head gives the same Betas."""
    head = _additions_head(standardize=True, token_relevance=True)
    g = torch.Generator().manual_seed(0)
    frames = [torch.randn(6, 4, 12, generator=g) for _ in range(5)]
    questions = [torch.randn(7, 10, generator=g) for _ in range(5)]
    head.fit_input_stats(frames, questions)
    masks = torch.ones(1, 6, dtype=torch.bool), torch.ones(1, 7, dtype=torch.bool)
    a, b, _ = head(frames[0][None], masks[0], questions[0][None], masks[1])
    fs, fb, qs, qb = torch.rand(12) + 0.5, torch.randn(12) * 5, torch.rand(10) + 0.5, torch.randn(10) * 5
    head.fit_input_stats([f * fs + fb for f in frames], [q * qs + qb for q in questions])
    a2, b2, _ = head(frames[0][None] * fs + fb, masks[0], questions[0][None] * qs + qb, masks[1])
    assert torch.allclose(a, a2, atol=1e-4) and torch.allclose(b, b2, atol=1e-4)
    assert torch.allclose(head.frame_shift, torch.cat([f.reshape(-1, 12) * fs + fb for f in frames]).mean(0))


def test_an_allocator_saved_before_the_additions_loads_in_the_originals_shape(tmp_path):
    import json

    head = _additions_head()
    head.save(tmp_path / "old")
    config = json.loads((tmp_path / "old" / "allocator_config.json").read_text())
    for key in ("standardize", "token_relevance"):
        config.pop(key)
    (tmp_path / "old" / "allocator_config.json").write_text(json.dumps(config))
    loaded = FrameAllocatorHead.load(tmp_path / "old")
    assert loaded.fuse.in_features == 16 + 5 and not hasattr(loaded, "frame_shift")
    assert _additions_head(token_relevance=True).fuse.in_features == 16 + 6


# -- the encoder is the allocator's own ------------------------------------------------------------

@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """An untrained allocator made less trivial: random output weights, so scales differ by frame."""
    policy = FramePolicy.create("tiny-bundled", 112, hidden=16, heads=2, layers=1)
    torch.manual_seed(1)
    with torch.no_grad():
        policy.head.proj[-1].weight.normal_(0, 2.0)
        policy.head.proj[-1].bias.zero_()
    folder = tmp_path_factory.mktemp("alloc") / "resadapt"
    policy.head.save(folder, extra={"trained": {"cost_level": 0.5}})
    return folder


def test_same_frames_and_question_give_the_same_scales_whatever_the_backbone(untrained, backbone25):
    from resadapt_eval.backbones import load_backbone

    bundled = load_backbone("tiny-bundled")
    strategy = ResAdapt(allocator=str(untrained), steer="none")
    a = strategy.frame_scales(context(bundled.geometry, n=8, height=196, width=196, backbone=bundled))
    b = strategy.frame_scales(context(backbone25.geometry, n=8, height=196, width=196, backbone=backbone25))
    assert a[0] == b[0] and a[1] == b[1] > 0
    assert len(set(round(s, 4) for s in a[0])) > 1  # the scales do differ by frame
    other = strategy.frame_scales(context(bundled.geometry, n=8, height=196, width=196, backbone=bundled,
                                          question="Which colour is the border of the second tile?"))
    assert other[0] != a[0]  # and they depend on the question


def test_steering_remaps_the_range_by_the_budget(untrained, backbone25):
    ctx = context(backbone25.geometry, n=8, height=196, width=196, fraction=0.125, backbone=backbone25)
    free = ResAdapt(allocator=str(untrained), steer="none").frame_scales(ctx)[0]
    remap = ResAdapt(allocator=str(untrained)).frame_scales(ctx)[0]
    assert remap == pytest.approx([s * math.sqrt(ctx.limit / ctx.vanilla_tokens / 0.5) for s in free])
    fixed = ResAdapt(allocator=str(untrained), min_scale=0.1, max_scale=1.0).frame_scales(ctx)[0]
    assert fixed == pytest.approx([0.1 + (s - 0.2) / 1.8 * 0.9 for s in free])


def test_steering_uses_the_level_of_the_task_the_allocator_trained_on(untrained, backbone25, tmp_path):
    """An allocator spends differently on each task it trained on; remap steers a task by its own level
    and any other task by the overall one."""
    import json
    import shutil

    folder = tmp_path / "per-task"
    shutil.copytree(untrained, folder)
    config = json.loads((folder / "allocator_config.json").read_text())
    config["trained"] = {"cost_level": 0.5, "cost_levels": {"probe-which": 0.2, "all": 0.5}}
    (folder / "allocator_config.json").write_text(json.dumps(config))
    ctx = context(backbone25.geometry, n=8, height=196, width=196, fraction=0.125, backbone=backbone25)
    strategy = ResAdapt(allocator=str(folder))
    budget = ctx.limit / ctx.vanilla_tokens
    assert strategy.factor(ctx) == pytest.approx(math.sqrt(budget / 0.5))
    assert strategy.factor(replace(ctx, task="probe-which")) == pytest.approx(math.sqrt(budget / 0.2))


def test_a_resadapt_budget_allocator_is_refused_with_a_pointer(tmp_path):
    from resadapt_eval.strategies.resadapt_budget import BUNDLED

    with pytest.raises(UserError, match="resadapt-budget"):
        ResAdapt(allocator=str(BUNDLED["tiny-bundled"]))
    with pytest.raises(UserError, match="steer must be"):
        ResAdapt(steer="exact")
    with pytest.raises(UserError, match="go together"):
        ResAdapt(min_scale=0.1)


# -- rollouts --------------------------------------------------------------------------------------

def test_cached_rollout_input_equals_the_processors(backbone25):
    """sample_answers' per-chunk cache builds the same ids, positions and embeddings as build_inputs."""
    b = backbone25
    ctx = context(b.geometry, n=6, height=112, width=140, backbone=b)
    cache: dict = {}
    for scales in ([1.0] * 6, [2.0, 2.0, 0.2, 0.2, 1.0, 1.0], [0.5] * 6):
        plan = frame_plan(ctx, scales)
        embeds, ids, visual, grids = b._cached_video_input(plan, ctx.frames, ctx.sample.prompt, cache)
        inputs = b.build_inputs(plan, ctx.frames, ctx.sample.prompt)
        assert torch.equal(ids.cpu(), inputs["input_ids"]) and torch.equal(grids, inputs["video_grid_thw"])
        ref_visual = (inputs["input_ids"][0] == b.video_token_id)
        ref, _, _ = b._embed(inputs["input_ids"], ref_visual, inputs["pixel_values_videos"].to(b.dtype),
                             inputs["video_grid_thw"], "video")
        assert torch.allclose(embeds, ref, atol=1e-5)
        assert torch.equal(b.positions(plan, {"input_ids": ids, "video_grid_thw": grids}), b.positions(plan, inputs))
    answers = b.sample_answers(frame_plan(ctx, [1.0] * 6), ctx.frames, ctx.sample.prompt, 4, 2, 1.0,
                               torch.Generator().manual_seed(0), cache)
    assert len(answers) == 2


# -- original checkpoints ---------------------------------------------------------------------------

from test_resadapt_budget import run_cli, smol_folder, videoqa  # noqa: E402,F401  (shared fixtures)


def test_an_original_allocator_runs_as_the_original_evaluates_it(smol_folder, videoqa, tmp_path):
    """max_frames = the frames the backbone gets and min/max scale reach its config before it loads; its
    per-frame scales become chunk means and nothing is projected onto the budget."""
    res = run_cli("--task", "probe-videoqa", "--data-root", str(videoqa), "--strategy",
                  "resadapt+min_scale=0.5+max_scale=1.0", "--allocator", str(smol_folder), "--trust-remote-code",
                  "--budget", "0.1", "--limit", "2", "--out", str(tmp_path))
    assert res.exit_code == 0, res.output
    run = next(tmp_path.glob("probe-videoqa/tiny-bundled/resadapt+*/b0.1-f8"))
    for r in read_records(run / SAMPLES):
        scales = r["plan"]["scales"]
        assert r["error"] is None and len(scales) == 4 and min(scales) >= 0.5 - 1e-6 and max(scales) <= 1.0 + 1e-6
        assert r["tokens"] > r["limit"]  # spent what it chose: at least 0.5 per side is over 0.1 of the tokens
    refused = run_cli("--task", "probe-videoqa", "--data-root", str(videoqa), "--strategy", "resadapt",
                      "--allocator", str(smol_folder), "--budget", "0.25", "--out", str(tmp_path / "x"))
    assert refused.exit_code == 2 and "--trust-remote-code" in refused.output


# -- training ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_short_capo_run_trains_saves_and_plans(tmp_path):
    """train-resadapt end to end on the bundled backbone: batched updates, the recipe's options recorded,
    the head's weights moved, and the saved allocator plans through --strategy resadapt."""
    from resadapt_eval.training.resadapt import ResAdaptTrainConfig, train

    config = ResAdaptTrainConfig(tasks=["probe-longvideo"], steps=6, group=2, answers=1, train_samples=3,
                                 batch_prompts=3, init_logit=-4.0, init_scale=0.6, pivot_c0=0.24,
                                 clamp_correct=False, cost_penalty=0.5, concentration_weight=0.0, level_prompts=2)
    meta = train(config, tmp_path / "alloc", progress=False, log=lambda *_: None)
    trained = meta["trained"]
    assert trained["prompts"] == 6 and trained["batch_prompts"] == 3 and trained["clamp_correct"] is False
    assert trained["pivot_center"] == pytest.approx(pivot_center("retention", c0=0.24))
    history = (tmp_path / "alloc" / "history.jsonl").read_text().splitlines()
    assert len(history) == 6
    head = FrameAllocatorHead.load(tmp_path / "alloc")
    assert head.config.init_scale == 0.6
    assert float(head.proj[-1].weight.detach().abs().sum()) > 0  # zero at the start: the updates reached it
    ctx_frames = np.random.default_rng(0).integers(0, 255, (8, 112, 112, 3), dtype=np.uint8)
    scales = FramePolicy.load(tmp_path / "alloc").propose(ctx_frames, "Which texture?").scales
    assert len(scales) == 8 and all(0.2 <= s <= 2.0 for s in scales)
    # A curriculum's next stage starts from these weights, not from a fresh head: with no update
    # (lr 0) it plans exactly what the earlier stage planned.
    train(replace(config, steps=1, batch_prompts=1, lr=0.0, init_from=str(tmp_path / "alloc")), tmp_path / "stage2",
          progress=False, log=lambda *_: None)
    again = FramePolicy.load(tmp_path / "stage2").propose(ctx_frames, "Which texture?").scales
    assert again == scales


def test_init_from_refuses_an_allocator_of_another_shape(tmp_path):
    """Continuing from an allocator whose head differs names the difference, before any training."""
    from resadapt_eval.training.resadapt import start_from

    FramePolicy.create(hidden=32).head.save(tmp_path / "narrow")
    with pytest.raises(UserError, match="hidden 32"):
        start_from(FramePolicy.create(hidden=64), str(tmp_path / "narrow"))
    with pytest.raises(UserError, match="no allocator there"):
        start_from(FramePolicy.create(hidden=64), str(tmp_path / "missing"))


def test_the_shipped_allocator_is_what_the_makefile_recipe_trains():
    """`make bundled-allocator`'s last stage, RESADAPT_RECIPE, and the shipped allocator's recorded training
    agree; the recipe continues from RESADAPT_STAGE1's output."""
    import json
    import re
    import shlex
    from pathlib import Path

    from resadapt_eval.strategies.resadapt import BUNDLED

    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text().replace("\\\n", " ")
    recipe = shlex.split(re.search(r"^RESADAPT_RECIPE := (.*)$", makefile, re.M).group(1))
    trained = json.loads((BUNDLED / "allocator_config.json").read_text())["trained"]
    flags = {"--steps": "steps", "--train-samples": "train_samples", "--batch-prompts": "batch_prompts",
             "--init-logit": "init_logit", "--init-scale": "init_scale", "--pivot-center": "pivot_c0",
             "--concentration-weight": "concentration_weight", "--cost-penalty": "cost_penalty", "--seed": "seed",
             "--answers": "answers", "--group": "group", "--lr": "lr"}
    per_task = {"--task-cost-penalty": "task_cost_penalties", "--task-weight": "task_weights"}
    tasks, named, i = [], {key: 0 for key in per_task.values()}, 0
    while i < len(recipe):
        flag = recipe[i]
        if flag == "--task":
            tasks.append(recipe[i + 1])
        elif flag in per_task:
            task, _, value = recipe[i + 1].partition("=")
            assert float(value) == pytest.approx(trained[per_task[flag]][task]), flag
            named[per_task[flag]] += 1
        elif flag == "--init-from":  # a curriculum's earlier stage (RESADAPT_STAGE1's output), recorded by digest
            assert trained["init_from"] == recipe[i + 1] and len(trained["init_from_sha256"]) == 64
        elif flag in ("--no-clamp", "--standardize", "--token-relevance"):
            key, want = {"--no-clamp": ("clamp_correct", False), "--standardize": ("standardize", True),
                         "--token-relevance": ("token_relevance", True)}[flag]
            assert trained[key] is want, flag
            i += 1
            continue
        else:
            assert float(recipe[i + 1]) == pytest.approx(float(trained[flags[flag]])), flag
        i += 2
    assert tasks == trained["tasks"] and trained["prompts"] == trained["steps"]
    assert all(count == len(trained[key]) for key, count in named.items())
    stage1 = re.search(r"--out (\S+) \$\(RESADAPT_STAGE1\)", makefile)
    assert stage1 and trained["init_from"] == stage1.group(1)  # bundled-allocator trains the stage it starts from
    assert trained["encoder"] == "tiny-encoder"  # the Makefile names none: train-resadapt's default
    FramePolicy.load(BUNDLED)  # and the shipped encoder is the one it was trained with (fingerprint checked)


@pytest.mark.parametrize("args, message", [
    (["--task-cost-penalty", "probe-math=1"], "TASK one of --task"),
    (["--task-cost-penalty", "probe-which=-1"], "X a number >= 0"),
    (["--task-cost-penalty", "probe-which=a"], "X a number >= 0"),
])
def test_train_resadapt_refuses_bad_per_task_penalties_in_one_line(tmp_path, args, message):
    from click.testing import CliRunner

    from resadapt_eval.cli import main

    res = CliRunner().invoke(main, ["train-resadapt", "--task", "probe-which", "--out", str(tmp_path), *args])
    assert res.exit_code == 2 and message in res.output, res.output
