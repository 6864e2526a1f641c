"""Fidelity goldens: on a fixed input (the tiny Qwen2.5-VL's merged visual tokens for a fixed clip,
`tests/data/baseline_goldens/input.safetensors`), our reductions keep or merge the tokens the authors'
own code selects (`authors.json`, produced outside this repository; provenance in tests/data/README).
PyramidDrop and FastV, whose code is tied to LLaVA's LLaMA, are checked against a written trace."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from resadapt_eval.backbones.pyramid import pyramid_schedule, stage_layers
from resadapt_eval.backbones.reduction import VisualTokens, reduce_visual, top_scores

DATA = Path(__file__).parent / "data" / "baseline_goldens"


@pytest.fixture(scope="module")
def tokens() -> VisualTokens:
    t = load_file(str(DATA / "input.safetensors"))
    return VisualTokens(t["features"], tuple(t["chunk_sizes"].tolist()), t["attention"], t["keys"],
                        int(t["key_heads"][0]))


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads((DATA / "authors.json").read_text())


def groups(sel) -> list[list[int]]:
    return sorted(sorted(torch.nonzero(sel.owner == j).squeeze(1).tolist()) for j in range(len(sel.keep)))


@pytest.mark.parametrize("keep", [32, 80])
def test_divprune_keeps_the_authors_tokens(tokens, golden, keep):
    sel = reduce_visual("divprune", tokens, keep)
    assert sel.keep.tolist() == golden[f"divprune/keep{keep}"]["kept"]


@pytest.mark.parametrize("ratio", [0.1, 0.25])
def test_vidcom2_ranks_and_allocates_as_the_authors(tokens, golden, ratio):
    """The authors round each frame's count (36 and 82 tokens here, not 32 and 80); ours are fitted to the
    exact budget, so per frame the kept sets are nested: equal where the counts agree."""
    theirs = torch.tensor(golden[f"vidcom2/r{ratio}"]["kept"])
    keep = int(ratio * tokens.count)
    ours = reduce_visual("vidcom2", tokens, keep, params={"temperature": 0.01}).keep
    assert len(ours) == keep
    n = tokens.chunk_sizes[0]
    agree = 0
    for f in range(len(tokens.chunk_sizes)):
        a = set(ours[(ours // n) == f].tolist())
        b = set(theirs[(theirs // n) == f].tolist())
        assert a <= b or b <= a, f
        agree += a == b
    assert agree >= len(tokens.chunk_sizes) - abs(len(theirs) - keep)  # only frames whose count moved differ


@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.5])
def test_flashvid_keeps_the_authors_tokens(tokens, golden, ratio):
    """Two segments of 5 and 3 frames (segment_threshold -1, min_segments 2), so ADTS, the temporal trees and
    DPC-kNN all run. The authors' per-frame cluster counts are ceilings (81 tokens at 0.25, 35 at 0.1); ours
    trims the overshoot from the frames that overshot most, which drops the lowest-scoring cluster centres:
    every token we keep is one the authors keep, and the sets are equal where the counts agree."""
    want = golden[f"flashvid/r{ratio}/min_segments2"]
    keep = int(round(ratio * tokens.count))
    sel = reduce_visual("flashvid", tokens, keep, params={"min_segments": 2, "segment_threshold": -1.0})
    theirs = want["kept"]
    assert len(set(theirs)) == len(theirs) == want["visual_token_length"] >= keep
    assert len(sel.keep) == keep and set(sel.keep.tolist()) <= set(theirs)


@pytest.mark.parametrize("per_chunk", [4, 10])
def test_tome_merges_the_groups_the_authors_merge(tokens, golden, per_chunk):
    sel = reduce_visual("tome", tokens, per_chunk * len(tokens.chunk_sizes), params={"metric": "keys", "round_share": 0.2})
    assert groups(sel) == golden[f"tome/keep_per_chunk{per_chunk}"]["groups"]


@pytest.mark.parametrize("quota", [4, 10])
def test_visionzip_groups_and_added_contextual_features_equal_the_authors(tokens, golden, quota):
    want = golden[f"visionzip/quota{quota}"]
    sel = reduce_visual("visionzip", tokens, quota * len(tokens.chunk_sizes), params={"contextual_share": 0.15})
    assert groups(sel) == want["groups"]
    carried = sel.gather(tokens.features)
    for j, index in enumerate(sel.keep.tolist()):
        assert torch.allclose(carried[j], torch.tensor(want["features"][str(index)]), atol=1e-5), index


def test_pyramiddrop_trace_on_a_hand_made_example():
    """Written trace of the authors' `pdrop_rank_drop` schedule (layer_list [8,16,24] of 32, lambda 0.5) and
    its selection (the top-k of the last instruction token's head-mean attention row over the image tokens).

    32 layers, 576 image tokens (LLaVA-1.5): stage layers 8, 16, 24; the authors keep int(576·0.5)=288,
    144 and 72. Under our budget (mean over layers >= 8 equal to the budget) a budget of 168 gives the
    same schedule: (8·288 + 8·144 + 8·72) / 24 = 168.
    """
    assert stage_layers(32, (0.25, 0.5, 0.75)) == [8, 16, 24]
    assert pyramid_schedule(32, 576, 168, {}) == ((8, 288), (16, 144), (24, 72))
    # a 28-layer Qwen2.5-VL-7B: stages at round(7), 14, 21; the floor of the mean over layers 7.. is the budget
    sched = pyramid_schedule(28, 1000, 100, {})
    assert [layer for layer, _ in sched] == [7, 14, 21]
    assert sum(7 * k for _, k in sched) // 21 == 100
    # selection: row over 6 image tokens, keep 3 -> the three largest, in sequence order (ties: earlier token)
    row = torch.tensor([0.05, 0.30, 0.10, 0.30, 0.02, 0.20])
    assert top_scores(row, 3).keep.tolist() == [1, 3, 5]
    assert top_scores(torch.tensor([0.1, 0.2, 0.2, 0.0]), 1).keep.tolist() == [1]


def test_fastv_trace_on_a_hand_made_example():
    """FastV's official code (`inplace` / HF `FastVLlamaModel`): at layer K the attention of the last token,
    mean over heads, over the image tokens; keep the top round((1-R)·N) (R the drop ratio). With N=8,
    R=0.75 -> 2 tokens: the two largest entries of the row."""
    heads = torch.tensor([[0.1, 0.0, 0.3, 0.1, 0.2, 0.1, 0.1, 0.1],
                          [0.1, 0.2, 0.1, 0.1, 0.0, 0.3, 0.1, 0.1]])
    row = heads.mean(dim=0)  # [0.1, 0.1, 0.2, 0.1, 0.1, 0.2, 0.1, 0.1]
    assert top_scores(row, 2).keep.tolist() == [2, 5]
