"""Probe tasks: deterministic, in the mirrored layouts, and the ideal answer scores perfectly there."""

from __future__ import annotations

import numpy as np
import pytest

from resadapt_eval import probes
from resadapt_eval.adapters import ADAPTERS
from resadapt_eval.adapters.base import TaskCard
from resadapt_eval.pipeline.media import load_frames

MAIN = {"probe-videoqa": "accuracy", "probe-longvideo": "accuracy", "probe-grounding": "iou", "probe-math": "accuracy",
        "probe-which": "accuracy"}


@pytest.mark.parametrize("task", list(probes.GENERATORS))
def test_probe_layout_and_ideal_answers(task, tmp_path):
    root = probes.build(task, tmp_path / task, seed=3, n=10)
    card = TaskCard.load(task, data_root=str(root))
    adapter = ADAPTERS.get(card.adapter)()
    samples = adapter.load(card)
    assert len(samples) == 10 and len({s.id for s in samples}) == 10
    for i, sample in enumerate(samples):
        item = probes.GENERATORS[task](3, i)
        assert sample.id.endswith(item.id.split("-", 1)[1]) or item.id in sample.id or i == sample.meta.get("row")
        assert sample.meta["evidence"] == item.evidence
        scores, _ = adapter.score(sample, item.target_text)
        assert scores[MAIN[task]] == 1.0, (task, item.target_text, sample.target)
        frames = load_frames(sample.media_kind, sample.media, card.frames)
        assert frames.count == min(card.frames, item.pixels.shape[0])
        # the written media decode back to the generated pixels (lossless image, near-lossless video)
        ref = item.pixels[frames.indices] if frames.kind == "video" else item.pixels
        assert np.abs(frames.pixels.astype(int) - ref).mean() < 3.0


def test_probes_are_deterministic_and_seeds_are_separate():
    for task, gen in probes.GENERATORS.items():
        a, b = gen(0, 5), gen(0, 5)
        assert np.array_equal(a.pixels, b.pixels) and a.row == b.row
        c = gen(probes.TRAIN_SEED_BASE, 5)
        assert not np.array_equal(a.pixels, c.pixels)
    with pytest.raises(ValueError):
        probes.build("probe-math", "/tmp/never", seed=probes.TRAIN_SEED_BASE, n=1)


def test_textures_need_resolution():
    """Every texture averages to the same grey: downscaled below its period, kinds cannot be told apart."""
    import torch
    from torchvision.transforms.v2 import functional as tvF

    rng = np.random.default_rng(0)
    means = []
    for kind in range(5):
        tile = probes.texture(kind, 32, 32, 4, rng)
        small = tvF.resize(torch.from_numpy(tile)[None].float(), [8, 8], antialias=True)
        means.append(float(small.mean()))
        assert float(small.std()) < 12  # near-flat grey at 1/4 scale
    assert max(means) - min(means) < 12


def test_a_split_from_an_older_generator_is_rebuilt(tmp_path):
    import json

    root = probes.build("probe-math", tmp_path / "m", seed=3, n=2)
    marker = root / "PROBE.json"
    meta = json.loads(marker.read_text())
    assert meta["version"] == probes.GENERATOR_VERSION
    marker.write_text(json.dumps({**meta, "version": probes.GENERATOR_VERSION - 1}))
    probes.ensure_built("probe-math", root, seed=3, n=2)
    assert json.loads(marker.read_text())["version"] == probes.GENERATOR_VERSION


def test_longvideo_mixes_a_fine_and_a_coarse_look():
    """About a third of probe-longvideo's tiles carry probe-videoqa's fine texture (lost at the 2x2
    floor of a 112 px frame), the rest the coarse one; the evidence row says which."""
    periods = [probes.make_longvideo(0, i).evidence["period"] for i in range(200)]
    assert set(periods) == {4, 8} and 0.25 < periods.count(4) / len(periods) < 0.45
    fine = next(probes.make_longvideo(0, i) for i in range(200) if probes.make_longvideo(0, i).evidence["period"] == 4)
    assert 26 <= fine.evidence["size"] <= 36 and fine.pixels.shape == (64, 112, 112, 3)


def test_the_bundled_backbone_training_data_is_unchanged():
    """The bundled backbone was trained on generator version 4 of probe-longvideo (coarse look only):
    its training generator must keep producing exactly those clips, so `make bundled-model` still
    reproduces the shipped weights (digests recorded from version 4)."""
    import hashlib

    gen = probes.BUNDLED_TRAINING_GENERATORS["probe-longvideo"]
    expected = {0: ("7204b82ddee793b0", "D", 30), 1: ("92978ffb9f847fec", "D", 0), 2: ("8286e1dec9ad8db5", "E", 23)}
    for i, (digest, answer, chunk) in expected.items():
        item = gen(probes.TRAIN_SEED_BASE, i)
        assert (hashlib.sha256(item.pixels.tobytes()).hexdigest()[:16], item.target_text, item.evidence["chunk"]) \
            == (digest, answer, chunk)
        assert item.evidence["period"] == 8
    for task in ("probe-videoqa", "probe-grounding", "probe-math"):
        assert probes.BUNDLED_TRAINING_GENERATORS[task] is probes.GENERATORS[task]


# -- dev and test splits -------------------------------------------------------------------------

@pytest.mark.parametrize("task", list(probes.GENERATORS))
def test_every_probe_card_has_a_dev_and_a_held_out_test_split(task, tmp_path, monkeypatch):
    from resadapt_eval.core.types import UserError

    monkeypatch.setenv("RESADAPT_HOME", str(tmp_path))
    test = TaskCard.load(task)  # the default: what the demo, the docs and the committed runs report
    dev = TaskCard.load(task, overrides={"split": "dev"})
    assert (test.split, test.probe["seed"], dev.split, dev.probe["seed"]) == ("test", 1, "dev", 0)
    assert test.data_root == tmp_path / "probes" / task / "test" and dev.data_root == test.data_root.parent / "dev"
    assert test.to_dict() != dev.to_dict()  # a different split is a different configuration (hash)
    given = TaskCard.load(task, data_root=str(tmp_path / "mine"), overrides={"split": "dev"})
    assert given.data_root == tmp_path / "mine" and given.probe["seed"] == 0
    with pytest.raises(UserError, match="no split 'val'"):
        TaskCard.load(task, overrides={"split": "val"})


def test_a_real_benchmark_has_no_splits_to_choose():
    from resadapt_eval.core.types import UserError

    with pytest.raises(UserError, match="no dev/test splits"):
        TaskCard.load("videomme", overrides={"split": "dev"})


def test_load_card_provisions_the_chosen_split(tmp_path, monkeypatch):
    from resadapt_eval.pipeline.runner import load_card

    monkeypatch.setenv("RESADAPT_HOME", str(tmp_path))
    small = {"n": 3, "splits": {"dev": 0, "test": 1}}
    for split, seed in (("test", 1), ("dev", 0)):
        card = load_card("probe-math", overrides={"probe": small, "split": split})
        samples = ADAPTERS.get(card.adapter)().load(card)
        assert [s.id.rsplit("-", 2)[-2] for s in samples] == [str(seed)] * 3, [s.id for s in samples]
        assert card.data_root == tmp_path / "probes" / "probe-math" / split


def test_training_splits_build_under_resadapt_home_apart_from_dev_and_test(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("RESADAPT_HOME", str(tmp_path))
    root = probes.ensure_built_train("probe-math", n=1, seed=2)
    assert root == tmp_path / "probes-train" / "probe-math-2-n1"
    assert json.loads((root / "PROBE.json").read_text())["seed"] == probes.TRAIN_SEED_BASE + 2


def test_a_training_split_of_another_size_leaves_a_built_one_alone(tmp_path, monkeypatch):
    """Trainings of different sizes once shared one folder and rebuilt it under each other."""
    monkeypatch.setenv("RESADAPT_HOME", str(tmp_path))
    small = probes.ensure_built_train("probe-math", n=1)
    before = {p: p.stat().st_mtime_ns for p in small.rglob("*") if p.is_file()}
    large = probes.ensure_built_train("probe-math", n=2)
    assert large != small and {p: p.stat().st_mtime_ns for p in small.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in large.parent.iterdir()) == ["probe-math-0-n1", "probe-math-0-n2"]  # no leftovers


def test_a_stale_split_is_replaced_whole(tmp_path):
    import json

    root = tmp_path / "split"
    probes.ensure_built("probe-math", root, seed=0, n=2)
    probes.ensure_built("probe-math", root, seed=0, n=1)
    assert json.loads((root / "PROBE.json").read_text())["n"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["split"]
