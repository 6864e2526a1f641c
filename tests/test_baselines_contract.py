"""FlashVID, VidCom2, DivPrune and PyramidDrop on real forward passes of tiny Qwen2.5-VL / Qwen3-VL models and
the bundled reference backbone: exact budgets, original positions, their own cost in the record, vanilla at
budget 1.0, deepstack features pruned with their tokens; and ToMe's kept set decided by content."""

from __future__ import annotations

import math

import pytest
import torch
from click.testing import CliRunner

from resadapt_eval.backbones import load_backbone
from resadapt_eval.backbones.llm import LayerwiseLM, Staged, last_query_attention
from resadapt_eval.backbones.pyramid import pyramid_schedule
from resadapt_eval.backbones.reduction import VisualTokens, reduce_visual
from resadapt_eval.cli import main
from resadapt_eval.pipeline import store as rec
from test_pruning import PROMPT, encoded, frames, media, ordered_subset, plan_for  # noqa: F401 (fixtures)

PRE_LLM = ["flashvid", "vidcom2", "divprune"]
NEW = PRE_LLM + ["pyramiddrop"]
FAMILIES = ["backbone25", "backbone3"]


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("kind", ["video", "image"])
def test_exact_budget_own_cost_and_vanilla_at_full_budget(name, kind, media, request):
    backbone = request.getfixturevalue(name)
    _, vanilla = plan_for(backbone, media[kind])
    ref = backbone.execute(vanilla, media[kind], PROMPT, 4)
    n_text = ref.prompt_tokens - ref.visual_tokens
    for method in NEW:
        _, full = plan_for(backbone, media[kind], method, "1.0")
        out = backbone.execute(full, media[kind], PROMPT, 4)
        assert full.reduction.keep == vanilla.tokens
        assert (out.text, out.visual_tokens) == (ref.text, ref.visual_tokens), method
        for budget in ("0.1", "0.25"):
            ctx, plan = plan_for(backbone, media[kind], method, budget)
            expected = max(1, math.floor(float(budget) * ctx.vanilla_tokens))
            out = backbone.execute(plan, media[kind], PROMPT, 2)
            assert out.visual_tokens == plan.tokens == expected, (method, budget)
            assert out.llm_visual_tokens_input == ctx.vanilla_tokens
            assert out.flops["total"] == pytest.approx(out.flops["vision"] + out.flops["llm_prefill"]
                                                       + out.flops["reduction"])
            assert out.flops["reduction"] > 0 and out.timings["backbone_total"] > 0
            if method == "pyramiddrop":  # the LLM's input is the full sequence; the mean over all layers is above
                assert out.prompt_tokens == n_text + ctx.vanilla_tokens
                assert expected < out.llm_visual_tokens < ctx.vanilla_tokens
                assert ref.flops["llm_prefill"] > out.flops["llm_prefill"]
            else:
                assert out.llm_visual_tokens == expected and out.prompt_tokens == n_text + expected
                assert "reduce" in out.timings


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("method", PRE_LLM)
def test_kept_tokens_carry_their_original_positions(name, method, frames, request):
    backbone = request.getfixturevalue(name)
    ctx, plan = plan_for(backbone, frames, method, "0.25")
    full = encoded(backbone, plan, frames)
    seen = {}

    def grab(module, args, kwargs):
        seen.setdefault("pos", kwargs["position_ids"].clone())
        if kwargs.get("deepstack_visual_embeds") is not None:
            seen.setdefault("deepstack", [d.clone() for d in kwargs["deepstack_visual_embeds"]])
    hook = backbone.model.model.language_model.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        out = backbone.execute(plan, frames, PROMPT, max_new_tokens=2)
    finally:
        hook.remove()
    assert out.visual_tokens == plan.tokens
    full_cols = [tuple(c) for c in full["pos"][:, 0].T.tolist()]
    fed_cols = [tuple(c) for c in seen["pos"][:, 0].T.tolist()]
    assert len(fed_cols) == len(full_cols) - int(full["visual"].sum()) + plan.tokens
    assert ordered_subset(fed_cols, full_cols), "kept tokens must keep their own positions, in order"
    if full["deepstack"]:  # Qwen3-VL: every deepstack level is reduced with its tokens
        assert [d.shape[0] for d in seen["deepstack"]] == [plan.tokens] * len(full["deepstack"])
        if method != "flashvid":  # selections without merging carry the kept tokens' own deepstack rows
            vis_cols = [tuple(c) for c in full["pos"][:, 0, full["visual"]].T.tolist()]
            kept_rows = [vis_cols.index(c) for c in fed_cols if c in set(vis_cols)]
            assert torch.equal(seen["deepstack"][0], full["deepstack"][0][kept_rows])


def test_pyramiddrop_prunes_deepstack_features_with_their_tokens(backbone3deep_pd, frames, monkeypatch):
    lm = backbone3deep_pd.model.model.language_model
    _, plan = plan_for(backbone3deep_pd, frames, "pyramiddrop", "0.25")
    x = encoded(backbone3deep_pd, plan, frames)
    n_vis = int(x["visual"].sum())
    stages = pyramid_schedule(len(lm.layers), n_vis, plan.reduction.keep, plan.reduction.params)
    assert [layer for layer, _ in stages] == [1, 2]  # 3 layers: the authors' fractions land on 1 and 2
    calls = []
    stock = lm._deepstack_process

    def spy(hidden, visual_pos_masks, visual_embeds):
        calls.append((visual_pos_masks.clone(), visual_embeds.clone()))
        return stock(hidden, visual_pos_masks, visual_embeds)
    monkeypatch.setattr(lm, "_deepstack_process", spy)
    with torch.inference_mode():
        pre = LayerwiseLM(lm).prefill(x["embeds"], x["pos"], x["visual"], x["deepstack"], Staged(stages))
    assert pre.layer_visual == [n_vis, stages[0][1], stages[1][1]]
    assert (pre.layer_visual[1] + pre.layer_visual[2]) // 2 == plan.reduction.keep
    kept_visual = x["visual"][pre.kept]
    rank = torch.cumsum(x["visual"].long(), 0) - 1  # each visual token's row in the deepstack features
    assert len(calls) == 2  # deepstack after layer 0 (full sequence) and layer 1 (first stage)
    assert torch.equal(calls[0][0][0], x["visual"]) and torch.equal(calls[0][1], x["deepstack"][0])
    # after layer 1 the first stage's tokens carry their own deepstack rows, in sequence order
    rows = [int(torch.nonzero((x["deepstack"][1] == r).all(dim=1))[0]) for r in calls[1][1]]
    assert len(rows) == stages[0][1] == int(calls[1][0].sum()) and rows == sorted(rows)
    final_rows = rank[pre.kept[kept_visual]].tolist()
    assert len(final_rows) == stages[1][1] and set(final_rows) <= set(rows)


@pytest.fixture(scope="module")
def backbone3deep_pd(tmp_path_factory, tokenizer):
    from resadapt_eval.backbones.tiny import build_tiny_qwen_vl
    path = build_tiny_qwen_vl(tmp_path_factory.mktemp("models") / "tiny-qwen3-deep-pd", "qwen3_vl", seed=1,
                              text={"num_hidden_layers": 3}, vision={"deepstack_visual_indexes": [0, 1]},
                              tokenizer=tokenizer)
    return load_backbone(str(path))


@pytest.mark.parametrize("name", FAMILIES)
def test_pyramiddrop_scores_with_the_next_layers_own_attention(name, frames, request):
    """The authors score before stage layer k with layer k's query and keys on its (unpruned) input: that is
    eager attention's last row at layer k of the full sequence."""
    backbone = request.getfixturevalue(name)
    eager = load_backbone(backbone.source, attn="eager")
    _, plan = plan_for(backbone, frames, "pyramiddrop", "0.25")
    x = encoded(backbone, plan, frames)
    kwargs = {}
    if x["deepstack"]:
        kwargs = {"visual_pos_masks": x["visual"][None], "deepstack_visual_embeds": x["deepstack"]}
    lm = backbone.model.model.language_model
    seen = {}

    def layer_input(module, args, kwargs):
        seen.setdefault("input", args[0].clone())
    hook = lm.layers[1].register_forward_pre_hook(layer_input, with_kwargs=True)
    with torch.inference_mode():
        ref = eager.model.model.language_model(inputs_embeds=x["embeds"], position_ids=x["pos"],
                                               output_attentions=True, **kwargs)
        lm(inputs_embeds=x["embeds"], position_ids=x["pos"], **kwargs)
        cos_sin = lm.rotary_emb(x["embeds"], x["pos"])
        row = last_query_attention(lm.layers[1], seen["input"], cos_sin, None)
    hook.remove()
    assert torch.allclose(row, ref.attentions[1][0, :, -1].mean(0), atol=1e-6, rtol=1e-5)
    vis_idx = x["visual"].nonzero().squeeze(1)
    stages = pyramid_schedule(len(lm.layers), len(vis_idx), plan.reduction.keep, plan.reduction.params)
    with torch.inference_mode():
        pre = LayerwiseLM(lm).prefill(x["embeds"], x["pos"], x["visual"], x["deepstack"], Staged(stages))
    top = torch.topk(row[vis_idx], stages[0][1]).indices
    expected = torch.cat([(~x["visual"]).nonzero().squeeze(1), vis_idx[top]]).sort().values
    assert torch.equal(pre.kept, expected)


def test_tome_keeps_content_dependent_tokens():
    """At one budget, two inputs with different features keep different tokens (the audit found every 4th
    token at b=0.25 whatever the input, when each round merged all of A)."""
    kept = []
    for seed in (0, 1):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(80, 16, generator=g)
        sel = reduce_visual("tome", VisualTokens(x, (40, 40), keys=torch.randn(80, 8, generator=g), key_heads=2), 20)
        assert len(sel.keep) == 20
        kept.append(sel.keep.tolist())
    assert kept[0] != kept[1]
    assert kept[0] != list(range(3, 80, 4)) and kept[1] != list(range(3, 80, 4))
    feats = reduce_visual("tome", VisualTokens(torch.randn(80, 16, generator=torch.Generator().manual_seed(2)),
                                               (40, 40)), 20, params={"metric": "features"})
    assert len(feats.keep) == 20 and feats.keep.tolist() not in kept


@pytest.mark.slow
@pytest.mark.parametrize("method", NEW)
def test_cli_run_records_budget_and_cost(method, tiny25, videomme_root, tmp_path):
    args = ["run", "--task", "videomme", "--backbone", str(tiny25), "--data-root", str(videomme_root), "--frames", "8",
            "--out", str(tmp_path), "--no-progress", "--max-error-rate", "1", "--strategy", method, "--budget", "0.25"]
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    records = rec.read_records(rec.run_dir(tmp_path, "videomme", tiny25.name, method, "0.25", 8) / "samples.jsonl")
    scored = [r for r in records if not r["error"]]
    assert len(scored) == 4
    for r in scored:
        assert r["tokens"] == max(1, math.floor(0.25 * r["vanilla_tokens"])) == r["plan"]["reduction"]["keep"]
        assert r["plan"]["reduction"]["method"] == method and r["flops"]["reduction"] > 0
        assert r["llm_visual_tokens_input"] == r["vanilla_tokens"] and r["llm_visual_tokens"] >= r["tokens"]


@pytest.fixture(scope="module")
def reference():
    return load_backbone("reference")


@pytest.mark.slow
@pytest.mark.parametrize("method", NEW)
def test_reference_backbone_contracts(reference, method):
    """The trained reference model (4 LLM layers) on probe clips and images: vanilla at 1.0, exact budgets below."""
    from resadapt_eval import probes
    from resadapt_eval.core.types import Frames
    from resadapt_eval.training.bundled_model import prompt_for

    for task in ("probe-videoqa", "probe-math"):
        item = probes.GENERATORS[task](0, 7)
        n = item.pixels.shape[0]
        media = Frames(kind="video" if n > 1 else "image", pixels=item.pixels, indices=list(range(n)),
                       timestamps=[i / item.fps for i in range(n)], fps=item.fps, total_frames=n)
        prompt = prompt_for(task, item.row)
        _, vanilla = plan_for(reference, media)
        want = reference.execute(vanilla, media, prompt, 12)
        _, plan = plan_for(reference, media, method, "1.0")
        got = reference.execute(plan, media, prompt, 12)
        assert got.text == want.text and got.visual_tokens == want.visual_tokens == vanilla.tokens
        for budget in ("0.1", "0.25"):
            ctx, plan = plan_for(reference, media, method, budget)
            out = reference.execute(plan, media, prompt, 4)
            assert out.visual_tokens == plan.tokens == max(1, math.floor(float(budget) * ctx.vanilla_tokens))


def test_frontier_token_axis_is_the_mean_over_llm_layers(tmp_path):
    """FastV (and PyramidDrop) sit on the token axis at their mean over LLM layers, not at the count after K."""
    from resadapt_eval.analysis.frontier import run_row

    summary = {"task": "t", "backbone": "b", "strategy": "fastv", "budget": "0.1", "frames": 8, "n": 4,
               "main_metric": "accuracy", "metrics": {"accuracy": {"value": 50.0, "n": 4}},
               "retention_mean": 0.1, "tokens_mean": 10.0, "llm_visual_tokens_mean": 16.4, "patches_mean": 400,
               "flops_mean": 1e9, "timings_mean": {"e2e": 0.5}}
    assert run_row(summary, tmp_path)["tokens"] == 16.4
    older = {k: v for k, v in summary.items() if k != "llm_visual_tokens_mean"}  # runs that predate the field
    assert run_row(older, tmp_path)["tokens"] == 10.0


def test_visionzip_global_ranking_and_add_merge():
    """`ranking=global` ranks dominant tokens over the whole sample (the authors' Qwen port), `chunk` per chunk;
    `contextual_merge=add` gives a target its own feature plus its joiners' mean (the original)."""
    n = 20
    feats = torch.randn(n, 8, generator=torch.Generator().manual_seed(0))
    attention = torch.cat([torch.zeros(10), torch.arange(1, 11, dtype=torch.float32)])  # chunk 2 gets all attention
    keys = torch.randn(n, 4, generator=torch.Generator().manual_seed(1))
    tokens = VisualTokens(feats, (10, 10), attention, keys)
    per_chunk = reduce_visual("visionzip", tokens, 6, params={"contextual_share": 0.0})
    overall = reduce_visual("visionzip", tokens, 6, params={"contextual_share": 0.0, "ranking": "global"})
    assert per_chunk.keep.tolist() == [0, 1, 2, 17, 18, 19]
    assert overall.keep.tolist() == [14, 15, 16, 17, 18, 19]
    added = reduce_visual("visionzip", tokens, 8, params={"contextual_share": 0.25})
    out = added.gather(feats)
    for j, target in enumerate(added.keep.tolist()):
        joiners = [i for i in range(n) if added.owner[i] == j and i != target]
        want = feats[target] + (torch.stack([feats[i] for i in joiners]).mean(0) if joiners else 0)
        assert torch.allclose(out[j], want, atol=1e-6)
