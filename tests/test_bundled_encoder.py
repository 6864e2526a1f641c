"""The bundled encoder (`tiny-encoder`): resadapt's own small model, whose tower sees border colour.

Its labels, that the shipped folder is what `make bundled-encoder` trains, and that its frozen
features carry what probe-which asks about (the tile's border colour) where the backbone's do not."""

from __future__ import annotations

import json
import os
from dataclasses import asdict

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from resadapt_eval import probes  # noqa: E402
from resadapt_eval.backbones import ALIASES, ENCODER_NAME, load_backbone  # noqa: E402
from resadapt_eval.training.bundled_encoder import (BORDER_ID, CLASSES, EncoderRecipe, EncoderTrainer,  # noqa: E402
                                                    labelled_boxes)
from resadapt_eval.training.bundled_model import token_labels  # noqa: E402


def test_border_labels_mark_each_tiles_tokens_with_its_colour():
    item = probes.make_which(0, 3)
    H, W = item.pixels.shape[1:3]
    for tile in (item.evidence, item.evidence["distractor"]):
        frame = tile["frames"][0]
        labels = token_labels(labelled_boxes(item), (frame,), (H, W), (112, 112), item.evidence, classes=CLASSES)
        colour = BORDER_ID[f"border:{tile['colour']}"]
        marked = labels[:, colour].nonzero().flatten().tolist()
        y0, x0, y1, x1 = tile["outer_box"]
        centre = int((y0 + y1) / 2 * 112 / H) // 28 * 4 + int((x0 + x1) / 2 * 112 / W) // 28
        assert centre in marked and len(marked) <= 4  # the tile's tokens, not the frame
        others = [i for name, i in BORDER_ID.items() if i != colour]
        assert labels[:, others].sum() == 0  # the other tile sits in other frames: no second colour here


def test_the_shipped_encoder_is_what_the_recipe_trains():
    folder = ALIASES[ENCODER_NAME]
    assert json.loads((folder / "recipe.json").read_text())["encoder_recipe"] == asdict(EncoderRecipe())
    encoder, base = load_backbone(ENCODER_NAME), load_backbone(EncoderRecipe().base)
    enc, ref = encoder.model.state_dict(), base.model.state_dict()
    language = [k for k in ref if ".visual." not in k and not k.startswith("model.visual")]
    assert language and all(torch.equal(enc[k], ref[k]) for k in language)  # the question states are the base's
    assert any(not torch.equal(enc[k], ref[k]) for k in ref if "visual" in k)


def _tile_token_features(encoder, n: int):
    feats, colours = [], []
    for i in range(n):
        item = probes.make_which(0, i)  # the dev split
        frames, _ = encoder.encode_frames(item.pixels, 112)
        for tile in (item.evidence, item.evidence["distractor"]):
            y0, x0, y1, x1 = tile["outer_box"]
            r, c = int((y0 + y1) / 2 * 112 / 196) // 28, int((x0 + x1) / 2 * 112 / 196) // 28
            feats.append(frames[tile["frames"][0], r * 4 + c])
            colours.append(tile["colour"])
    return torch.stack(feats), colours


def _nearest_centroid_accuracy(feats, colours, train: int) -> float:
    names = sorted(set(colours))
    centroids = torch.stack([feats[:train][[c == n for c in colours[:train]]].mean(0) for n in names])
    guess = torch.cdist(feats[train:], centroids).argmin(1)
    return sum(names[int(g)] == c for g, c in zip(guess, colours[train:])) / (len(colours) - train)


def test_the_encoder_sees_border_colour_where_the_backbone_does_not():
    """Nearest class mean of the tile's token, fitted on 40 tiles and read on 40 others (chance 1/3)."""
    encoder = _nearest_centroid_accuracy(*_tile_token_features(load_backbone(ENCODER_NAME), 40), 40)
    backbone = _nearest_centroid_accuracy(*_tile_token_features(load_backbone("tiny-bundled"), 40), 40)
    assert encoder >= 0.75 and encoder > backbone + 0.3, (encoder, backbone)


@pytest.mark.slow
def test_a_short_run_trains_the_tower_and_saves_a_loadable_folder(tmp_path):
    trainer = EncoderTrainer(EncoderRecipe(steps=2, batch=2), threads=1)
    before = {k: v.clone() for k, v in trainer.model.model.visual.state_dict().items()}
    trainer.train()
    trainer.save(tmp_path / "enc")
    saved = load_backbone(str(tmp_path / "enc"))
    after = saved.model.model.visual.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert (tmp_path / "enc" / "tokenizer.json").is_file()
    assert json.loads((tmp_path / "enc" / "recipe.json").read_text())["encoder_recipe"]["steps"] == 2
