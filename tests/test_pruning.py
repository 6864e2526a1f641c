"""Token-pruning baselines (VisionZip, FastV, ToMe) on real forward passes of tiny Qwen2.5-VL / Qwen3-VL models:
exact budgets, original positions, parity with vanilla at full budget, and the recomputed attention
scores against the eager attention they stand in for."""

from __future__ import annotations

import math
import sys

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from transformers import AttentionInterface

from fixtures import write_video
from resadapt_eval.pipeline import store as rec
from resadapt_eval.backbones import load_backbone
from resadapt_eval.backbones.llm import InLLMPrune, LayerwiseLM, last_query_attention
from resadapt_eval.backbones.reduction import (VisualTokens, chunk_quotas, reduce_visual, tome_tokens,
                                               visionzip_tokens)
from resadapt_eval.backbones.vit_attention import BlockRecorder, merged_order, patch_attention, scoring_block
from resadapt_eval.core.budget import parse_budget
from resadapt_eval.cli import main
from resadapt_eval.pipeline.media import load_image, load_video
from resadapt_eval.strategies import STRATEGIES
from resadapt_eval.core.strategy import Context
from resadapt_eval.core.types import Sample, UserError

PROMPT = "Which colour box moves fastest?"
# the tiny models have 2 LLM layers, so FastV prunes after layer 1 there
METHODS = {"visionzip": {}, "tome": {}, "fastv": {"layer": 1}}
FAMILIES = ["backbone25", "backbone3"]


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    path = write_video(tmp_path_factory.mktemp("v") / "clip.mp4", n_frames=40, height=150, width=210, seed=3)
    return load_video(path, 8)


@pytest.fixture(scope="module")
def media(frames):
    return {"video": frames, "image": load_image(Image.fromarray(frames.pixels[0]))}


@pytest.fixture(scope="module")
def backbone3deep(tmp_path_factory, tokenizer):
    """Qwen3-VL with 3 LLM layers and deepstack after layers 0 and 1: FastV at K=1 prunes deepstack features."""
    from resadapt_eval.backbones.tiny import build_tiny_qwen_vl
    path = build_tiny_qwen_vl(tmp_path_factory.mktemp("models") / "tiny-qwen3-deep", "qwen3_vl", seed=1,
                              text={"num_hidden_layers": 3}, vision={"deepstack_visual_indexes": [0, 1]},
                              tokenizer=tokenizer)
    return load_backbone(str(path))


def plan_for(backbone, media, strategy="vanilla", budget="1.0", **options):
    sample = Sample("s0", PROMPT, media.kind, None, "A")
    ctx = Context.build(sample, media, backbone.geometry, parse_budget(budget), seed=0)
    return ctx, STRATEGIES.get(strategy)(**options).plan(ctx)


def encoded(backbone, plan, media):
    """The full sequence the LLM would get for a plan: embeddings with visual features, positions, masks."""
    inputs = backbone.build_inputs(plan, media, PROMPT)
    ids = inputs["input_ids"]
    visual = (ids[0] == backbone.video_token_id) | (ids[0] == backbone.image_token_id)
    grid_key, pix_key = ("video_grid_thw", "pixel_values_videos") if plan.kind == "video" else \
        ("image_grid_thw", "pixel_values")
    model = backbone.model.model
    getter = model.get_video_features if plan.kind == "video" else model.get_image_features
    with torch.inference_mode():
        enc = getter(inputs[pix_key], inputs[grid_key], return_dict=True)
        embeds = backbone.model.get_input_embeddings()(ids)
        embeds[0, visual] = torch.cat(list(enc.pooler_output))
    deepstack = [torch.cat(list(d)) for d in (getattr(enc, "deepstack_features", None) or [])]
    return {"embeds": embeds, "pos": backbone.positions(plan, inputs), "visual": visual, "deepstack": deepstack,
            "grids": inputs[grid_key], "pixels": inputs[pix_key]}


def ordered_subset(part: list, whole: list) -> bool:
    it = iter(whole)
    return all(any(c == w for w in it) for c in part)


# -- the reduction functions on their own -----------------------------------------------------

def test_chunk_quotas_are_proportional_and_exact():
    assert chunk_quotas(40, (40, 40, 40, 40)) == [10, 10, 10, 10]
    assert chunk_quotas(7, (10, 30, 20)) == [1, 4, 2]  # 1.16, 3.5, 2.33 -> remainder to the largest chunks
    for keep in range(0, 61):
        q = chunk_quotas(keep, (10, 30, 20))
        assert sum(q) == keep and all(0 <= a <= n for a, n in zip(q, (10, 30, 20)))


def test_tome_folds_similar_tokens_into_b_with_size_weighted_means():
    # chunk of 6: tokens 0/1 and 2/3 are near-duplicates, 4 and 5 point elsewhere
    x = torch.tensor([[1.0, 0, 0], [1.0, 0.01, 0], [0, 1.0, 0], [0, 1.0, 0.01], [0, 0, 1.0], [1.0, 1.0, 1.0]])
    features = {"metric": "features", "round_share": 0.5}
    sel = tome_tokens(VisualTokens(x, (6,)), 4, 0, features)
    assert sel.keep.tolist() == [1, 3, 4, 5]  # A tokens 0 and 2 fold into their B partners 1 and 3
    out = sel.gather(x)
    assert torch.allclose(out[0], (x[0] + x[1]) / 2) and torch.allclose(out[1], (x[2] + x[3]) / 2)
    assert torch.equal(out[2:], x[4:])
    # a second round merges groups: the mean stays over all original members (size-weighted)
    sel = tome_tokens(VisualTokens(x, (6,)), 1, 0, features)
    assert len(sel.keep) == 1 and torch.allclose(sel.gather(x)[0], x.mean(0))


def test_visionzip_keeps_dominant_tokens_and_merges_context_into_targets():
    n = 20
    feats = torch.randn(n, 8, generator=torch.Generator().manual_seed(0))
    attention = torch.arange(n, dtype=torch.float32)  # the last tokens receive the most attention
    keys = torch.randn(n, 4, generator=torch.Generator().manual_seed(1))
    tokens = VisualTokens(feats, (10, 10), attention, keys)
    sel = visionzip_tokens(tokens, 8, 0, {"contextual_share": 0.25, "contextual_merge": "mean"})
    # 4 per chunk: 3 dominant (highest attention) + 1 contextual target (first non-dominant by stride)
    assert sel.keep.tolist() == [0, 7, 8, 9, 10, 17, 18, 19]
    out = sel.gather(feats)
    assert torch.equal(out[1:4], feats[7:10])
    assert torch.allclose(out[0], feats[0:7].mean(0)) and torch.allclose(out[4], feats[10:17].mean(0))
    # keeping everything changes nothing
    full = visionzip_tokens(tokens, n, 0, {})
    assert full.keep.tolist() == list(range(n)) and torch.equal(full.gather(feats), feats)


# -- backbone runs --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("kind", ["video", "image"])
def test_full_budget_equals_vanilla(name, kind, media, request):
    backbone = request.getfixturevalue(name)
    _, vanilla = plan_for(backbone, media[kind])
    ref = backbone.execute(vanilla, media[kind], PROMPT, 8)
    for method, options in METHODS.items():
        _, plan = plan_for(backbone, media[kind], method, "1.0", **options)
        assert plan.reduction.method == method and plan.reduction.keep == vanilla.tokens
        out = backbone.execute(plan, media[kind], PROMPT, 8)
        assert (out.text, out.visual_tokens) == (ref.text, ref.visual_tokens), method


def test_fastv_full_budget_equals_vanilla_at_every_layer_with_deepstack(backbone3deep, frames):
    _, vanilla = plan_for(backbone3deep, frames)
    ref = backbone3deep.execute(vanilla, frames, PROMPT, 8)
    for layer in (1, 2):
        _, plan = plan_for(backbone3deep, frames, "fastv", "1.0", layer=layer)
        out = backbone3deep.execute(plan, frames, PROMPT, 8)
        assert (out.text, out.visual_tokens) == (ref.text, ref.visual_tokens)
    for budget in ("0.1", "0.25"):
        ctx, plan = plan_for(backbone3deep, frames, "fastv", budget, layer=1)
        out = backbone3deep.execute(plan, frames, PROMPT, 4)
        assert out.visual_tokens == plan.tokens == math.floor(float(budget) * ctx.vanilla_tokens)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("kind", ["video", "image"])
def test_budgets_keep_exactly_floor_b_n(name, kind, media, request):
    backbone = request.getfixturevalue(name)
    layers = backbone.config.text_config.num_hidden_layers
    _, vanilla = plan_for(backbone, media[kind])
    ref = backbone.execute(vanilla, media[kind], PROMPT, 1)
    n_text = ref.prompt_tokens - ref.visual_tokens
    for method, options in METHODS.items():
        for budget in ("0.1", "0.25", "0.5"):
            ctx, plan = plan_for(backbone, media[kind], method, budget, **options)
            expected = max(1, math.floor(float(budget) * ctx.vanilla_tokens))
            out = backbone.execute(plan, media[kind], PROMPT, 3)
            assert out.visual_tokens == plan.tokens == expected, (method, budget)
            assert plan.feasible and out.llm_visual_tokens_input == ctx.vanilla_tokens
            if method == "fastv":  # layer 0 sees every visual token, layers >= K the budget
                k = options["layer"]
                mean = (k * ctx.vanilla_tokens + (layers - k) * expected) / layers
                assert out.llm_visual_tokens == pytest.approx(mean)
                assert out.prompt_tokens == n_text + ctx.vanilla_tokens  # the LLM's input is the full sequence
                assert ref.flops["llm_prefill"] > out.flops["llm_prefill"]
            else:
                assert out.llm_visual_tokens == expected
                assert out.prompt_tokens == n_text + expected


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("method", ["visionzip", "tome"])
def test_pre_llm_kept_tokens_carry_their_original_positions(name, method, frames, request):
    backbone = request.getfixturevalue(name)
    ctx, plan = plan_for(backbone, frames, method, "0.25")
    full = encoded(backbone, plan, frames)
    seen = {}

    def grab(module, args, kwargs):
        seen.setdefault("pos", kwargs["position_ids"].clone())
        seen.setdefault("n", kwargs["inputs_embeds"].shape[1])
    hook = backbone.model.model.language_model.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        out = backbone.execute(plan, frames, PROMPT, max_new_tokens=3)
    finally:
        hook.remove()
    n_full, n_vis = full["embeds"].shape[1], int(full["visual"].sum())
    assert out.visual_tokens == plan.tokens and seen["n"] == n_full - n_vis + plan.tokens
    full_cols = [tuple(c) for c in full["pos"][:, 0].T.tolist()]
    fed_cols = [tuple(c) for c in seen["pos"][:, 0].T.tolist()]
    assert ordered_subset(fed_cols, full_cols), "kept tokens must keep their own positions, in order"
    text_cols = [tuple(c) for c in full["pos"][:, 0, ~full["visual"]].T.tolist()]
    assert ordered_subset(text_cols, fed_cols), "every text token stays"


@pytest.mark.parametrize("name,k_layer", [("backbone25", 1), ("backbone3", 1), ("backbone3deep", 2)])
def test_fastv_score_row_equals_eager_attention_and_selects_from_it(name, k_layer, frames, request):
    backbone = request.getfixturevalue(name)
    eager = load_backbone(backbone.source, attn="eager")
    _, plan = plan_for(backbone, frames, "fastv", "0.25", layer=k_layer)
    x = encoded(backbone, plan, frames)
    kwargs = {}
    if x["deepstack"]:
        kwargs = {"visual_pos_masks": x["visual"][None], "deepstack_visual_embeds": x["deepstack"]}
    with torch.inference_mode():
        ref = eager.model.model.language_model(inputs_embeds=x["embeds"], position_ids=x["pos"],
                                               output_attentions=True, **kwargs)
    eager_row = ref.attentions[k_layer - 1][0, :, -1].mean(0)

    lm = backbone.model.model.language_model
    assert lm.config._attn_implementation == "sdpa"
    seen = {}

    def layer_input(module, args, kwargs):
        seen.setdefault("input", args[0].clone())

    def layer_rotary(module, args, kwargs):
        seen.setdefault("cos_sin", kwargs["position_embeddings"])
    hooks = [lm.layers[k_layer - 1].register_forward_pre_hook(layer_input, with_kwargs=True),
             lm.layers[k_layer].register_forward_pre_hook(layer_rotary, with_kwargs=True)]
    try:
        with torch.inference_mode():
            pre = LayerwiseLM(lm).prefill(x["embeds"], x["pos"], x["visual"], x["deepstack"],
                                          InLLMPrune(k_layer, plan.reduction.keep))
            cos_sin = lm.rotary_emb(x["embeds"], x["pos"])
            keys = pre.cache.layers[k_layer - 1].keys
            row = last_query_attention(lm.layers[k_layer - 1], seen["input"], cos_sin, keys)
    finally:
        for h in hooks:
            h.remove()
    assert torch.allclose(row, eager_row, atol=1e-6, rtol=1e-5)
    # FastV keeps the text and the top-`keep` visual tokens of that row, with their full-sequence rotary
    vis_idx = x["visual"].nonzero().squeeze(1)
    top = torch.topk(eager_row[vis_idx], plan.reduction.keep).indices
    expected = torch.cat([(~x["visual"]).nonzero().squeeze(1), vis_idx[top]]).sort().values
    assert torch.equal(pre.kept, expected)
    assert pre.cache.layers[k_layer - 1].keys.shape[-2] == x["embeds"].shape[1]
    assert pre.cache.layers[k_layer].keys.shape[-2] == len(expected)
    for got, full in zip(seen["cos_sin"], cos_sin):
        assert torch.equal(got, full[:, expected])


def test_fastv_prunes_deepstack_features_with_their_tokens(backbone3deep, frames, monkeypatch):
    lm = backbone3deep.model.model.language_model
    _, plan = plan_for(backbone3deep, frames, "fastv", "0.25", layer=1)
    x = encoded(backbone3deep, plan, frames)
    calls = []
    stock = lm._deepstack_process

    def spy(hidden, visual_pos_masks, visual_embeds):
        calls.append((visual_pos_masks.clone(), visual_embeds.clone()))
        return stock(hidden, visual_pos_masks, visual_embeds)
    monkeypatch.setattr(lm, "_deepstack_process", spy)
    with torch.inference_mode():
        pre = LayerwiseLM(lm).prefill(x["embeds"], x["pos"], x["visual"], x["deepstack"],
                                      InLLMPrune(1, plan.reduction.keep))
    assert len(calls) == 2  # deepstack after layer 0 (full sequence) and layer 1 (pruned)
    assert torch.equal(calls[0][0][0], x["visual"]) and torch.equal(calls[0][1], x["deepstack"][0])
    kept_visual = x["visual"][pre.kept]
    rank = torch.cumsum(x["visual"].long(), 0) - 1  # each visual token's row in the deepstack features
    assert torch.equal(calls[1][0][0], kept_visual) and int(kept_visual.sum()) == plan.reduction.keep
    assert torch.equal(calls[1][1], x["deepstack"][1][rank[pre.kept[kept_visual]]])


@pytest.fixture(scope="module")
def recorded_attention():
    """An attention implementation that is transformers' eager attention, also keeping its weights."""
    calls = []

    def recording_eager(module, query, key, value, attention_mask, **kwargs):
        out, weights = sys.modules[type(module).__module__].eager_attention_forward(
            module, query, key, value, attention_mask, **kwargs)
        calls.append((module, weights.detach()))
        return out, weights
    AttentionInterface.register("recording_eager", recording_eager)
    return calls


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("kind", ["video", "image"])
def test_visionzip_vit_attention_equals_eager(name, kind, media, recorded_attention, request):
    backbone = request.getfixturevalue(name)
    eager = load_backbone(backbone.source, attn="recording_eager")
    _, plan = plan_for(backbone, media[kind], "visionzip", "0.25")
    x = encoded(backbone, plan, media[kind])
    block = scoring_block(backbone.config.vision_config)
    visual = backbone.model.model.visual
    with torch.inference_mode():
        with BlockRecorder(visual, block) as recorder:
            out = visual(x["pixels"], grid_thw=x["grids"], return_dict=True)
        received, _ = patch_attention(visual.blocks[block].attn, recorder.captured)

    recorded_attention.clear()
    with torch.inference_mode():
        eager.model.model.visual(x["pixels"], grid_thw=x["grids"], return_dict=True)
    target = eager.model.model.visual.blocks[block].attn
    weights = [w for m, w in recorded_attention if m is target]
    assert len(weights) == len(x["grids"])  # one full-attention segment per chunk (or the image)
    eager_received = torch.cat([w[0].mean(dim=(0, 1)) for w in weights])
    assert torch.allclose(received, eager_received, atol=1e-6, rtol=1e-5)
    # the tower's order maps back to the merged tokens' sequence order exactly as the merger output does
    with torch.inference_mode():
        merged = visual.merger(out.last_hidden_state)
    assert torch.equal(merged_order(visual, x["grids"], merged), out.pooler_output)


@pytest.mark.parametrize("method", list(METHODS))
def test_frame_share_composes_with_pruning(method, backbone25, frames):
    options = METHODS[method]
    ctx, plan = plan_for(backbone25, frames, method, "0.25", frame_share=0.5, **options)
    assert len(plan.frame_positions) == frames.count // 2 and plan.interval_s is not None
    out = backbone25.execute(plan, frames, PROMPT, 3)
    assert out.visual_tokens == plan.tokens == math.floor(0.25 * ctx.vanilla_tokens)
    assert out.llm_visual_tokens_input == ctx.vanilla_tokens // 2
    # when the frame share alone meets the budget, nothing more is pruned
    ctx, plan = plan_for(backbone25, frames, method, "0.5", frame_share=0.5, **options)
    assert backbone25.execute(plan, frames, PROMPT, 3).visual_tokens == plan.tokens == ctx.vanilla_tokens // 2


def test_random_selection_is_unchanged():
    """random-drop keeps the seeded subset the backbone drew before reductions had their own module."""
    g = torch.Generator().manual_seed(123)
    expected = torch.randperm(50, generator=g)[:12].sort().values
    feats = torch.randn(50, 2)
    sel = reduce_visual("random", VisualTokens(feats, (25, 25)), 12, 123)
    assert torch.equal(sel.keep, expected) and torch.equal(sel.gather(feats), feats[expected])


def test_bad_options_are_one_line_errors(backbone25, frames):
    _, plan = plan_for(backbone25, frames, "fastv", "0.25", layer=2)  # the tiny LLM has 2 layers
    with pytest.raises(UserError, match="1 <= K < 2"):
        backbone25.execute(plan, frames, PROMPT, 3)
    with pytest.raises(UserError, match="frame_share"):
        STRATEGIES.get("tome")(frame_share=0)
    res = CliRunner().invoke(main, ["run", "--task", "videomme", "--strategy", "tome", "--strategy-option", "layer=1"])
    assert res.exit_code == 2 and "has no option layer" in res.output


@pytest.mark.parametrize("method", list(METHODS))
def test_cli_run_spends_exactly_the_budget(method, tiny25, videomme_root, tmp_path):
    args = ["run", "--task", "videomme", "--backbone", str(tiny25), "--data-root", str(videomme_root), "--frames", "8",
            "--out", str(tmp_path), "--no-progress", "--max-error-rate", "1", "--strategy", method, "--budget", "0.25"]
    args += [f"--strategy-option={k}={v}" for k, v in METHODS[method].items()]
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    label = rec.strategy_label(method, METHODS[method])  # options are part of the run's name: fastv+layer=1
    records = rec.read_records(rec.run_dir(tmp_path, "videomme", tiny25.name, label, "0.25", 8) / "samples.jsonl")
    scored = [r for r in records if not r["error"]]
    assert len(scored) == 4
    for r in scored:
        assert r["tokens"] == max(1, math.floor(0.25 * r["vanilla_tokens"]))
        assert r["plan"]["reduction"]["method"] == method and r["plan"]["reduction"]["keep"] == r["tokens"]
        assert r["llm_visual_tokens_input"] == r["vanilla_tokens"]
        if method == "fastv":
            assert r["plan"]["reduction"]["layer"] == 1
            assert r["llm_visual_tokens"] == (r["vanilla_tokens"] + r["tokens"]) / 2


@pytest.fixture(scope="module")
def bundled():
    return load_backbone("tiny-bundled")


@pytest.mark.parametrize("method", ["visionzip", "tome", "fastv"])
def test_full_budget_equals_vanilla_on_the_bundled_backbone(bundled, method):
    """The trained bundled model (tiny-bundled: 4 LLM layers, FastV at its default K=2) on probe clips and images."""
    from resadapt_eval import probes
    from resadapt_eval.training.bundled_model import prompt_for
    from resadapt_eval.core.types import Frames

    for task in ("probe-videoqa", "probe-math"):
        item = probes.GENERATORS[task](0, 7)
        n = item.pixels.shape[0]
        frames = Frames(kind="video" if n > 1 else "image", pixels=item.pixels, indices=list(range(n)),
                        timestamps=[i / item.fps for i in range(n)], fps=item.fps, total_frames=n)
        prompt = prompt_for(task, item.row)
        _, vanilla = plan_for(bundled, frames)
        _, plan = plan_for(bundled, frames, method, "1.0")
        want, got = (bundled.execute(p, frames, prompt, 12) for p in (vanilla, plan))
        assert plan.reduction is not None and got.visual_tokens == want.visual_tokens == vanilla.tokens
        assert got.text == want.text
