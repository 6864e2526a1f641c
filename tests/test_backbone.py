"""The backbone executes chunked plans exactly: parity with stock transformers, positions, reductions."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from transformers.video_utils import VideoMetadata

from fixtures import write_video
from resadapt_eval.backbones.qwen_vl import chunked_mrope_positions
from resadapt_eval.core.budget import parse_budget
from resadapt_eval.pipeline.media import load_video
from resadapt_eval.strategies import STRATEGIES
from resadapt_eval.core.strategy import Context, even_plan
from resadapt_eval.core.types import Sample

PROMPT = "Which colour box moves fastest?"


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    path = write_video(tmp_path_factory.mktemp("v") / "clip.mp4", n_frames=40, height=150, width=210, seed=3)
    return load_video(path, 8)


def sample_for(frames):
    return Sample("s0", PROMPT, "video", "clip.mp4", "A")


def plan_for(backbone, frames, strategy="vanilla", budget="1.0"):
    ctx = Context.build(sample_for(frames), frames, backbone.geometry, parse_budget(budget), seed=0)
    return ctx, STRATEGIES.get(strategy)().plan(ctx)


def stock_inputs(backbone, frames):
    """What plain transformers does with the same 8 frames as one unchunked video."""
    proc = backbone.processor
    text = proc.apply_chat_template([{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": PROMPT}]}],
                                    add_generation_prompt=True, tokenize=False)
    meta = VideoMetadata(total_num_frames=frames.total_frames, fps=frames.fps, frames_indices=frames.indices)
    return proc(text=[text], videos=[frames.pixels], video_metadata=[meta], do_sample_frames=False,
                cap_pixels_per_frame=False, return_tensors="pt")


@pytest.mark.parametrize("name", ["backbone25", "backbone3"])
def test_vanilla_chunks_equal_unchunked_video(name, frames, request):
    backbone = request.getfixturevalue(name)
    _, plan = plan_for(backbone, frames)
    ours = backbone.build_inputs(plan, frames, PROMPT)
    stock = stock_inputs(backbone, frames)
    assert torch.equal(ours["input_ids"], stock["input_ids"])
    assert torch.equal(ours["pixel_values_videos"], stock["pixel_values_videos"])
    assert int(ours["video_grid_thw"][:, 0].sum()) == int(stock["video_grid_thw"][:, 0].sum())
    model = backbone.model
    kw = {k: stock[k] for k in ("mm_token_type_ids", "video_grid_thw") if k in stock}
    if "second_per_grid_ts" in stock:
        kw["second_per_grid_ts"] = torch.as_tensor(stock["second_per_grid_ts"])
    ref_pos, _ = model.model.get_rope_index(stock["input_ids"], **kw)
    assert torch.equal(backbone.positions(plan, ours), ref_pos)
    # greedy text through our split loop equals transformers' generate on the unchunked input
    with torch.inference_mode():
        gen = model.generate(**stock, max_new_tokens=12, do_sample=False)
    ref_text = backbone.processor.tokenizer.decode(gen[0, stock["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    out = backbone.execute(plan, frames, PROMPT, max_new_tokens=12)
    assert out.text == ref_text
    assert out.visual_tokens == plan.tokens == int((ours["input_ids"] == model.config.video_token_id).sum())


def test_mixed_chunk_sizes_keep_time_running(backbone25, frames):
    ctx, _ = plan_for(backbone25, frames)
    sizes = [(112, 140), (56, 84), (84, 112), (140, 196)]
    plan = even_plan(ctx, list(range(frames.count)), sizes)
    inputs = backbone25.build_inputs(plan, frames, PROMPT)
    assert [tuple(g[1:].tolist()) for g in inputs["video_grid_thw"]] == [(h // 14, w // 14) for h, w in sizes]
    pos = backbone25.positions(plan, inputs)[:, 0]
    vis = inputs["input_ids"][0] == backbone25.video_token_id
    t = pos[0, vis]
    assert bool((t[1:] >= t[:-1]).all()), "temporal positions must not go back across chunks"
    anchor = int(pos[0, vis.nonzero()[0, 0]])
    offsets = backbone25.chunk_offsets(plan)
    assert len(set(t.tolist())) == len(sizes) and sorted(set(t.tolist())) == (anchor + offsets).tolist()
    # every chunk's h/w restart at the anchor; with max+1 text resumes after the largest position
    start = 0
    for h, w in sizes:
        n = (h // 28) * (w // 28)
        chunk = pos[:, vis.nonzero()[start:start + n, 0]]
        assert int(chunk[1].min()) == anchor and int(chunk[2].min()) == anchor
        start += n
    maxplus = chunked_mrope_positions(inputs["input_ids"][0], {backbone25.video_token_id}, inputs["video_grid_thw"],
                                      offsets, 2, "max+1")
    after = vis.nonzero()[-1, 0] + 2  # the token after <|vision_end|>
    assert int(maxplus[0, after]) == int(maxplus[:, : after].max()) + 1
    out = backbone25.execute(plan, frames, PROMPT, max_new_tokens=4)
    assert out.visual_tokens == plan.tokens == sum((h // 28) * (w // 28) for h, w in sizes)


@pytest.mark.parametrize("budget", ["0.1", "0.25", "0.5", "1.0"])
def test_random_drop_keeps_exact_count_with_original_positions(backbone25, frames, budget):
    ctx, plan = plan_for(backbone25, frames, "random-drop", budget)
    assert plan.tokens == int(float(budget) * ctx.vanilla_tokens)
    full = backbone25.build_inputs(replace(plan, reduction=None), frames, PROMPT)
    full_pos = backbone25.positions(plan, full)
    seen = {}

    def grab(module, args, kwargs):
        seen.setdefault("pos", kwargs["position_ids"].clone())
    hook = backbone25.model.model.language_model.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        out = backbone25.execute(plan, frames, PROMPT, max_new_tokens=3)
    finally:
        hook.remove()
    assert out.visual_tokens == plan.tokens
    fed = seen["pos"][:, 0]
    vis = full["input_ids"][0] == backbone25.video_token_id
    assert fed.shape[1] == len(vis) - int(vis.sum()) + plan.tokens
    # the kept visual tokens carry exactly their positions from the unpruned sequence, in order
    full_cols = [tuple(c) for c in full_pos[:, 0, vis].T.tolist()]
    n_text_before = int(vis.nonzero()[0, 0])
    fed_cols = [tuple(c) for c in fed[:, n_text_before:n_text_before + plan.tokens].T.tolist()]
    it = iter(full_cols)
    assert all(any(c == f for f in it) for c in fed_cols), "kept positions must be an ordered subset"


def test_uniform_scale_at_full_budget_is_vanilla(backbone25, frames):
    _, vanilla = plan_for(backbone25, frames)
    _, scaled = plan_for(backbone25, frames, "uniform-scale", "1.0")
    assert [(c.height, c.width) for c in scaled.chunks] == [(c.height, c.width) for c in vanilla.chunks]
    a = backbone25.execute(vanilla, frames, PROMPT, 8)
    b = backbone25.execute(scaled, frames, PROMPT, 8)
    assert (a.text, a.visual_tokens) == (b.text, b.visual_tokens)


def test_image_plan(backbone25, frames):
    from resadapt_eval.pipeline.media import load_image
    from PIL import Image
    img = load_image(Image.fromarray(frames.pixels[0]))
    for budget in ["1.0", "0.25"]:
        ctx = Context.build(Sample("i", PROMPT, "image", None, "A"), img, backbone25.geometry, parse_budget(budget), 0)
        plan = STRATEGIES.get("uniform-scale")().plan(ctx)
        out = backbone25.execute(plan, img, PROMPT, 4)
        assert out.visual_tokens == plan.tokens <= max(ctx.limit, 4)

