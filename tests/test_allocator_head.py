"""The allocator head: a uniform start, seeded sampling, explicit evaluation actions, a file round trip."""

from __future__ import annotations

import pytest
import torch

from resadapt_eval.allocator.model import AllocatorConfig, AllocatorHead


def head(**kw) -> AllocatorHead:
    torch.manual_seed(0)
    return AllocatorHead(AllocatorConfig(feature_dim=12, text_dim=8, hidden=16, heads=2, layers=1, **kw))


def inputs(k: int = 5):
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, k, 12, generator=g), torch.randn(2, 8, generator=g), torch.ones(2, k, dtype=torch.bool)


def test_starts_uniform_and_acts_at_the_midpoint():
    h = head()
    alpha, beta = h(*inputs())
    assert torch.allclose(alpha, torch.full_like(alpha, 1.0067), atol=1e-3) and torch.allclose(alpha, beta)
    assert torch.allclose(h.act(alpha, beta), torch.full_like(alpha, 0.6), atol=1e-3)  # (0.2 + 1.0) / 2


def test_sampling_is_seeded_and_log_probs_agree():
    h = head()
    alpha, beta = torch.full((2, 5), 2.0), torch.full((2, 5), 5.0)
    s1, lp1 = h.sample(alpha, beta, torch.Generator().manual_seed(3))
    s2, lp2 = h.sample(alpha, beta, torch.Generator().manual_seed(3))
    assert torch.equal(s1, s2) and torch.allclose(lp1, h.log_prob(alpha, beta, s1), atol=1e-5)
    assert ((s1 >= 0.2) & (s1 <= 1.0)).all()
    assert not torch.equal(s1, h.sample(alpha, beta, torch.Generator().manual_seed(4))[0])


def test_mode_and_mean_differ_for_a_skewed_beta():
    alpha, beta = torch.tensor([[2.0]]), torch.tensor([[5.0]])
    assert head(eval_action="mean").act(alpha, beta).item() == pytest.approx(0.2 + 0.8 * 2 / 7)
    assert head(eval_action="mode").act(alpha, beta).item() == pytest.approx(0.2 + 0.8 * 1 / 5)
    with pytest.raises(ValueError):
        head(eval_action="median")


def test_padding_does_not_change_the_valid_chunks_and_files_round_trip(tmp_path):
    h = head()
    with torch.no_grad():
        for p in h.out.parameters():
            p.normal_()
    chunks, text, mask = inputs(5)
    a, b = h(chunks, text, mask)
    padded = torch.cat([chunks, torch.randn(2, 3, 12)], 1)
    a2, b2 = h(padded, text, torch.cat([mask, torch.zeros(2, 3, dtype=torch.bool)], 1))
    assert torch.allclose(a, a2[:, :5], atol=1e-5) and torch.allclose(b, b2[:, :5], atol=1e-5)
    loaded = AllocatorHead.load(h.save(tmp_path / "alloc"))
    assert torch.allclose(loaded(chunks, text, mask)[0], a)
    assert (tmp_path / "alloc" / "allocator.safetensors").stat().st_size < 200_000


def test_backbone_gives_planners_chunk_features_and_their_cost(backbone25):
    """Thumbnails of every chunk through the frozen vision tower: one feature row per merged token."""
    import numpy as np

    from resadapt_eval.core.budget import Budget
    from resadapt_eval.core.strategy import Context, even_plan
    from resadapt_eval.core.types import Frames, Sample

    pixels = np.random.default_rng(0).integers(0, 255, (8, 112, 112, 3), dtype=np.uint8)
    frames = Frames("video", pixels, list(range(8)), [i / 4 for i in range(8)], 4.0, 8)
    sample = Sample("s", "What is shown?", "video", None, "A")
    ctx = Context.build(sample, frames, backbone25.geometry, Budget(fraction=1.0), 0)
    thumbs = even_plan(ctx, list(range(8)), (56, 56))
    feats, flops = backbone25.encode_chunks(thumbs, frames)
    assert len(feats) == 4 and all(f.shape == (4, backbone25.config.text_config.hidden_size) for f in feats)
    full, flops_full = backbone25.encode_chunks(even_plan(ctx, list(range(8)), (112, 112)), frames)
    assert full[0].shape[0] == 16 and 0 < flops < flops_full
    text = backbone25.embed_text("What is shown?")
    assert text.ndim == 2 and text.shape[1] == backbone25.config.text_config.hidden_size
