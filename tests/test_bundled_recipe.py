"""The bundled model's recipe feeds the model exactly what the processor and the backbone would."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from resadapt_eval import probes
from resadapt_eval.backbones.qwen_vl import chunked_mrope_positions
from resadapt_eval.training.bundled_model import InputBuilder, Recipe, Trainer, answer_loss, resize_chunk, token_labels


def test_fast_inputs_equal_processor(backbone25):
    """Training inputs (pixels, ids) equal the processor's for the same chunks."""
    proc = backbone25.processor
    builder = InputBuilder(proc)
    item = probes.make_videoqa(probes.TRAIN_SEED_BASE, 0)
    sizes = [(196, 196), (112, 140), (56, 84), (196, 168)]
    chunks = [resize_chunk(item.pixels[2 * j:2 * j + 2], sz) for j, sz in enumerate(sizes)]
    pix, grids = builder.pixels(chunks)
    ref = proc.video_processor(videos=chunks, do_sample_frames=False, cap_pixels_per_frame=False,
                               size={"shortest_edge": 28 * 28, "longest_edge": 196 * 196 * 2}, return_tensors="pt")
    assert torch.equal(grids, ref["video_grid_thw"])
    assert torch.allclose(pix, ref["pixel_values_videos"], atol=1e-6)
    n_vis = sum((h // 28) * (w // 28) for h, w in sizes)
    ids, plen = builder.ids("What?", "video", n_vis, None)
    text = proc.apply_chat_template([{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What?"}]}],
                                    add_generation_prompt=True, tokenize=False)
    text = text.replace("<|video_pad|>", "<|video_pad|>" * len(sizes))
    from transformers.video_utils import VideoMetadata
    meta = [VideoMetadata(total_num_frames=8, fps=4.0, frames_indices=[2 * j, 2 * j + 1]) for j in range(4)]
    full = proc(text=[text], videos=chunks, video_metadata=meta, do_sample_frames=False, cap_pixels_per_frame=False,
                size={"shortest_edge": 28 * 28, "longest_edge": 196 * 196 * 2}, return_tensors="pt")
    assert ids == full["input_ids"][0].tolist() and plen == len(ids)


def test_token_labels_mark_the_needle():
    item = probes.make_videoqa(probes.TRAIN_SEED_BASE, 3)
    f0 = item.evidence["frames"][0]
    labels = token_labels(item.boxes, (f0, f0 + 1), (196, 196), (196, 196), item.evidence)
    cls = probes.CLASS_ID[f"texture:{item.evidence['texture']}"]
    assert labels.shape == (49, len(probes.CLASSES)) and labels[:, cls].sum() >= 1
    assert labels.sum(0)[cls] == labels.sum()  # nothing else is marked
    y0, x0, y1, x1 = item.evidence["box"]
    assert labels[(y0 + y1) // 2 // 28 * 7 + (x0 + x1) // 2 // 28, cls] == 1
    small = token_labels(item.boxes, (f0, f0 + 1), (196, 196), (56, 56), item.evidence)  # period 4 -> 1.1 px
    assert small[:, probes.CLASS_ID["texture:unreadable"]].sum() >= 1 and small[:, cls].sum() == 0
    other = token_labels(item.boxes, (99,), (196, 196), (196, 196), item.evidence)
    assert other.sum() == 0


def test_training_batch_positions_and_loss(tmp_path):
    recipe = Recipe(stage1_steps=0, stage2_steps=0)
    recipe.text = dict(recipe.text, num_hidden_layers=1)
    recipe.vision = dict(recipe.vision, depth=1, fullatt_block_indexes=[0])
    trainer = Trainer(recipe, tmp_path, threads=1)
    items = [(t, probes.GENERATORS[t](probes.TRAIN_SEED_BASE, 1)) for t in probes.GENERATORS]
    ids, labels, mask, pos, pix, grids = trainer.batch(items, plan=False)
    for b, (task, item) in enumerate(items):
        n = int(mask[b].sum())
        target = trainer.tok(item.target_text + "<|im_end|>", add_special_tokens=False)["input_ids"]
        assert labels[b, n - len(target):n].tolist() == target and (labels[b, : n - len(target)] == -100).all()
    # vanilla video positions equal the inference path's (max+1 text resume, chunk offsets of 2 tps x seconds)
    t = ids[0, : int(mask[0].sum())]
    n_chunks = 4
    offsets = (torch.arange(n_chunks) * (2.0 * torch.tensor(0.5, dtype=torch.float32))).long()
    ref = chunked_mrope_positions(t, {trainer.builder.pad["video"]}, grids[:n_chunks], offsets, 2, "max+1")
    assert torch.equal(pos[:, 0, : len(t)], ref)
    logits = trainer.forward(ids, mask, pos, pix, grids, False)
    loss = answer_loss(logits, labels)
    assert torch.isfinite(loss) and 0 < loss.item() < 20


def test_every_stage_runs_and_each_seeds_itself(tmp_path):
    """Stages 1-3 end to end for a few steps each; stage 3 after --init-from equals stage 3 of a full run."""
    from resadapt_eval.training.bundled_model import Trainer as T

    def tiny(**kw) -> Recipe:
        r = Recipe(stage1_steps=2, stage2_steps=2, stage3_steps=2, stage1_batch=2, stage2_batch=2, **kw)
        r.text = dict(r.text, num_hidden_layers=1)
        r.vision = dict(r.vision, depth=1, fullatt_block_indexes=[0])
        return r
    full = T(tiny(), tmp_path / "full", threads=1)
    full.stage1()
    full.stage2()
    after2 = {k: v.clone() for k, v in full.model.state_dict().items()}
    full.stage3()
    again = T(tiny(), tmp_path / "again", threads=1)
    again.model.load_state_dict(after2)
    again.stage3()
    changed = [k for k, v in full.model.state_dict().items() if not torch.equal(v, after2[k])]
    # stage 3 tunes the language side throughout and the tower after its frozen share (0.3 of 2 steps)
    assert any(k.startswith("model.visual.") for k in changed)
    assert any(k.startswith("model.language_model.") for k in changed)
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, again.model.state_dict()[k]), k


def test_stage4_keeps_the_shipped_tokenizer_and_trains_on_probe_which(tmp_path):
    """Stage 4 adds probe-which without touching the tokenizer corpus: the rebuilt tokenizer is the shipped
    one byte for byte (the stage 1-3 embeddings index it), and stage-4 steps train the model."""
    from resadapt_eval.backbones import resolve_alias

    BUNDLED_DIR = Path(resolve_alias("tiny-bundled"))
    r = Recipe(stage1_steps=0, stage2_steps=0, stage3_steps=0, stage4_steps=2, stage2_batch=2)
    assert "probe-which" in r.stage4_mix and "probe-which" not in r.mix
    r.text = dict(r.text, num_hidden_layers=1)
    r.vision = dict(r.vision, depth=1, fullatt_block_indexes=[0])
    trainer = Trainer(r, tmp_path, threads=1)
    trainer.tok.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").read_bytes() == (BUNDLED_DIR / "tokenizer.json").read_bytes()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.stage4()
    assert any(not torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())
    # off by default: the shipped weights went through stages 1-3 only, and `make bundled-model` repeats them
    assert Recipe().stage4_steps == 0 and "stage4_steps" not in json.loads((BUNDLED_DIR / "recipe.json").read_text())
