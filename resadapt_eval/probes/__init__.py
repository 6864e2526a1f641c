"""Probe tasks: small procedurally generated benchmarks on which visual budgets matter for real.

Each probe is written in the on-disk layout of the benchmark it mirrors and scored by that
benchmark's adapter, so the whole pipeline is exercised end to end on any machine.

The needle is a small tile of fine black-and-white texture (stripes in four orientations, or a
checkerboard). All five textures are half black, so once a tile is downscaled below its texture
period it turns into the same grey and can no longer be told apart: reading it needs resolution
on the right frames. Clutter is flat-coloured moving rectangles, never black and white.

- probe-videoqa (Video-MME layout): 8 frames, 196 px; the tile shows in one 2-frame chunk.
- probe-longvideo (LongVideoBench layout): 64 frames, 112 px; in 65% of the samples a coarse texture
  (survives a 0.5 scale, not a 0.25 one), in 35% the fine one of probe-videoqa (needs full
  resolution): more frames at lower resolution should beat fewer sharp frames, and a planner that
  gives the evidence chunk full resolution should beat both.
- probe-grounding (Charades-STA layout): 32 frames at 2 fps; a large tile is visible for a span
  of whole seconds; the answer is that span.
- probe-which (Video-MME layout): probe-videoqa's video with two fine tiles in two different chunks,
  each framed by a thick border of a saturated colour (red, green or blue, which clutter never has);
  the question names one border colour, so the question decides which chunk holds the answer: what
  a question-conditioned allocator must exploit. The borders survive a half-size thumbnail, the
  textures need full resolution.
- probe-math (MathVista layout): one 336 px image in DejaVu Sans Bold at a size between 24 and 72 px,
  either one digit (free-form integer: which number is written) or "a op b" (multiple choice: which
  operator). The free-form question once asked for the value of "a + b": the small bundled model
  read both digits but never learned to add them (5% after three training stages, chance 5%), and
  the probe exists to measure reading under a budget, not arithmetic.

Multiple-choice options come in a fixed order per family (the probes measure budget sensitivity,
not option matching). Every row records where its evidence is (frames, chunk, box, size).
Generation is deterministic from a seed; evaluation splits use seeds below TRAIN_SEED_BASE, the
bundled model's training data only seeds from it upwards.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

TRAIN_SEED_BASE = 1_000_000
GENERATOR_VERSION = 5  # bump when any generator's output changes: cached splits are rebuilt on first use
TEXTURES = ("horizontal stripes", "vertical stripes", "checkerboard", "rising diagonal stripes",
            "falling diagonal stripes")
OPERATORS = ("+", "-", "×", "÷")
# Classes of the dense per-token labels used to pretrain a vision tower (see training/bundled_model.py).
CLASSES = (("background",) + tuple(f"texture:{t}" for t in TEXTURES) + ("texture:unreadable",)
           + tuple(f"char:{d}" for d in "0123456789") + tuple(f"char:{o}" for o in OPERATORS)
           + ("char:unreadable",))
CLASS_ID = {name: i for i, name in enumerate(CLASSES)}


@dataclass
class ProbeItem:
    """One generated sample: pixels, its annotation row in the mirrored layout, and its evidence."""

    task: str
    id: str
    pixels: np.ndarray                  # (N, H, W, 3) uint8; N = 1 for an image
    fps: float
    row: dict[str, Any]                 # the official-layout annotation row
    target_text: str                    # the ideal model answer
    evidence: dict[str, Any]
    boxes: list[tuple[int, int, int, int, int, int]] = field(default_factory=list)  # frame, y0, x0, y1, x1, class


# -- drawing -----------------------------------------------------------------------------------

def texture(kind: int, height: int, width: int, period: int, rng: np.random.Generator) -> np.ndarray:
    """A (h, w) uint8 black/white texture tile of the given kind and period (random phase)."""
    y, x = np.mgrid[0:height, 0:width]
    half = period / 2
    py, px = rng.integers(0, period, 2)
    if kind == 0:
        on = ((y + py) // half) % 2
    elif kind == 1:
        on = ((x + px) // half) % 2
    elif kind == 2:
        on = (((x + px) // half) + ((y + py) // half)) % 2
    elif kind == 3:
        on = ((x + y + px) // half) % 2
    else:
        on = ((x - y + px + 4 * period) // half) % 2
    return (on * 255).astype(np.uint8)


class Clutter:
    """Flat-coloured rectangles drifting across the frame (mid-range colours, no black or white)."""

    def __init__(self, rng: np.random.Generator, height: int, width: int, n: int):
        self.h, self.w = height, width
        self.bg = rng.integers(60, 200, 3)
        self.rects = []
        for _ in range(n):
            rh, rw = rng.integers(height // 10, height // 3, 2)
            self.rects.append((rng.integers(40, 216, 3), rh, rw, rng.uniform(0, height), rng.uniform(0, width),
                               rng.uniform(-3, 3), rng.uniform(-3, 3)))

    def frame(self, t: int) -> np.ndarray:
        img = np.empty((self.h, self.w, 3), np.uint8)
        img[:] = self.bg
        for colour, rh, rw, y, x, vy, vx in self.rects:
            yy = int(y + vy * t) % self.h
            xx = int(x + vx * t) % self.w
            img[yy:yy + rh, xx:xx + rw] = colour
        return img


def place(rng: np.random.Generator, height: int, width: int, size: int) -> tuple[int, int]:
    return int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))


def needle_clip(rng: np.random.Generator, kind: int, n_frames: int, side: int, n_rects: tuple[int, int],
                tile: tuple[int, int], period: int) -> tuple[np.ndarray, int, int, int, int]:
    """Cluttered frames with a texture tile in one random 2-frame chunk: (frames, size, y, x, chunk)."""
    clutter = Clutter(rng, side, side, int(rng.integers(*n_rects)))
    frames = np.stack([clutter.frame(t) for t in range(n_frames)])
    size = int(rng.integers(tile[0], tile[1] + 1))
    y, x = place(rng, side, side, size)
    chunk = int(rng.integers(0, n_frames // 2))
    tex = texture(kind, size, size, period, rng)
    for f in (2 * chunk, 2 * chunk + 1):
        frames[f, y:y + size, x:x + size] = tex[..., None]
    return frames, size, y, x, chunk


def _seeded(task: str, seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(task.encode()), seed, index])


# -- the four probes -----------------------------------------------------------------------------

def make_videoqa(seed: int, index: int, n_frames: int = 8, side: int = 196, fps: float = 4.0,
                 tile: tuple[int, int] = (26, 36), period: int = 4) -> ProbeItem:
    rng = _seeded("probe-videoqa", seed, index)
    kind = int(rng.integers(0, 4))
    frames, size, y, x, chunk = needle_clip(rng, kind, n_frames, side, (3, 8), tile, period)
    vid = f"pvqa-{seed}-{index:05d}"
    options = [f"{'ABCD'[i]}. {TEXTURES[i]}" for i in range(4)]
    row = {"video_id": f"{index:05d}", "duration": "short", "domain": "Probe", "sub_category": "Needle texture",
           "url": "", "videoID": vid, "question_id": vid, "task_type": "Texture Recognition",
           "question": "A small textured tile appears briefly in the video. Which texture does it have?",
           "options": options, "answer": "ABCD"[kind]}
    evidence = {"frames": [2 * chunk, 2 * chunk + 1], "chunk": chunk, "box": [y, x, y + size, x + size],
                "size": size, "period": period, "texture": TEXTURES[kind]}
    boxes = [(f, y, x, y + size, x + size, CLASS_ID[f"texture:{TEXTURES[kind]}"]) for f in evidence["frames"]]
    return ProbeItem("probe-videoqa", vid, frames, fps, row, "ABCD"[kind], evidence, boxes)


# probe-longvideo's tile looks: (texture period, tile side range, share of samples). The coarse look
# survives half resolution (the 2x2-token floor of a 112 px frame), the fine one needs the full 4x4,
# so how much resolution a video needs differs between samples, as the text size does on probe-math.
LONGVIDEO_LOOKS: tuple[tuple[int, tuple[int, int], float], ...] = ((4, (26, 36), 0.35), (8, (36, 48), 0.65))
# What the bundled backbone (tiny-bundled) was trained on (generator version 4): the coarse look only.
# Its training data stays this, so `make bundled-model` still reproduces the shipped weights.
LONGVIDEO_V4 = {"looks": ((8, (36, 48), 1.0),)}


def make_longvideo(seed: int, index: int, n_frames: int = 64, side: int = 112,
                   looks: tuple[tuple[int, tuple[int, int], float], ...] = LONGVIDEO_LOOKS) -> ProbeItem:
    rng = _seeded("probe-longvideo", seed, index)
    five = bool(rng.integers(0, 2))
    kind = int(rng.integers(0, 5 if five else 4))
    fps = float(rng.choice([8.0, 2.0]))            # 8 s or 32 s: duration groups 15 and 60
    look = 0 if len(looks) == 1 else int(rng.choice(len(looks), p=[w for _, _, w in looks]))
    period, tile, _ = looks[look]
    frames, size, y, x, chunk = needle_clip(rng, kind, n_frames, side, (2, 6), tile, period)
    vid = f"plvb-{seed}-{index:05d}"
    duration = n_frames / fps
    row = {"video_id": vid, "id": vid, "video_path": f"{vid}.mp4", "subtitle_path": f"{vid}_en.json",
           "question": "One frame of the video shows a textured tile. Which texture is it?",
           "correct_choice": kind, "duration": duration, "duration_group": 15 if duration <= 15 else 60,
           "question_category": "T3O", "topic_category": "Probe", "starting_timestamp_for_subtitles": 0.0}
    for i in range(5):
        row[f"option{i}"] = TEXTURES[i] if (i < 4 or five) else "N/A"
    evidence = {"frames": [2 * chunk, 2 * chunk + 1], "chunk": chunk, "box": [y, x, y + size, x + size],
                "size": size, "period": period, "texture": TEXTURES[kind], "options": 5 if five else 4}
    boxes = [(f, y, x, y + size, x + size, CLASS_ID[f"texture:{TEXTURES[kind]}"]) for f in evidence["frames"]]
    return ProbeItem("probe-longvideo", vid, frames, fps, row, "ABCDE"[kind], evidence, boxes)


def make_grounding(seed: int, index: int, seconds: int = 16, fps: float = 2.0, side: int = 112,
                   tile: tuple[int, int] = (40, 56), period: int = 8) -> ProbeItem:
    rng = _seeded("probe-grounding", seed, index)
    kind = int(rng.integers(0, 5))
    n_frames = int(seconds * fps)
    clutter = Clutter(rng, side, side, int(rng.integers(2, 6)))
    frames = np.stack([clutter.frame(t) for t in range(n_frames)])
    length = int(rng.integers(2, 9))
    start = int(rng.integers(0, seconds - length + 1))
    end = start + length
    size = int(rng.integers(tile[0], tile[1] + 1))
    y, x = place(rng, side, side, size)
    tex = texture(kind, size, size, period, rng)
    shown = list(range(int(start * fps), int(end * fps)))
    for f in shown:
        frames[f, y:y + size, x:x + size] = tex[..., None]
    vid = f"pgnd-{seed}-{index:05d}"
    row = {"video": f"{vid}.mp4", "caption": f"a tile with {TEXTURES[kind]} is visible",
           "timestamp": [float(start), float(end)]}
    evidence = {"frames": shown, "seconds": [start, end], "box": [y, x, y + size, x + size], "size": size,
                "period": period, "texture": TEXTURES[kind]}
    boxes = [(f, y, x, y + size, x + size, CLASS_ID[f"texture:{TEXTURES[kind]}"]) for f in shown]
    target = f"The event happens in {start:.1f} - {end:.1f} seconds."
    return ProbeItem("probe-grounding", vid, frames, fps, row, target, evidence, boxes)


# probe-which's border colours: saturated, so clutter (40..216 per channel) never has them.
BORDER_COLOURS: dict[str, tuple[int, int, int]] = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


def make_which(seed: int, index: int, n_frames: int = 8, side: int = 196, fps: float = 4.0,
               tile: tuple[int, int] = (26, 36), period: int = 4, border: int = 5) -> ProbeItem:
    """Two bordered fine tiles in two different 2-frame chunks; the question's colour picks the one to read."""
    rng = _seeded("probe-which", seed, index)
    kinds = [int(k) for k in rng.choice(4, 2, replace=False)]          # target, distractor: different textures
    names = [str(c) for c in rng.choice(list(BORDER_COLOURS), 2, replace=False)]
    chunks = [int(c) for c in rng.choice(n_frames // 2, 2, replace=False)]
    clutter = Clutter(rng, side, side, int(rng.integers(3, 8)))
    frames = np.stack([clutter.frame(t) for t in range(n_frames)])
    tiles = []
    for kind, name, chunk in zip(kinds, names, chunks):
        size = int(rng.integers(tile[0], tile[1] + 1))
        outer = size + 2 * border
        y, x = place(rng, side, side, outer)
        patch = np.empty((outer, outer, 3), np.uint8)
        patch[:] = BORDER_COLOURS[name]
        patch[border:border + size, border:border + size] = texture(kind, size, size, period, rng)[..., None]
        for f in (2 * chunk, 2 * chunk + 1):
            frames[f, y:y + outer, x:x + outer] = patch
        tiles.append({"chunk": chunk, "frames": [2 * chunk, 2 * chunk + 1], "colour": name, "texture": TEXTURES[kind],
                      "size": size, "box": [y + border, x + border, y + border + size, x + border + size],
                      "outer_box": [y, x, y + outer, x + outer]})
    target, distractor = tiles
    vid = f"pwhich-{seed}-{index:05d}"
    options = [f"{'ABCD'[i]}. {TEXTURES[i]}" for i in range(4)]
    row = {"video_id": f"{index:05d}", "duration": "short", "domain": "Probe", "sub_category": "Which tile",
           "url": "", "videoID": vid, "question_id": vid, "task_type": "Texture Recognition",
           "question": f"Two tiles with coloured borders appear in the video. Which texture does the tile with "
                       f"the {target['colour']} border have?",
           "options": options, "answer": "ABCD"[kinds[0]]}
    evidence = {"frames": target["frames"], "chunk": target["chunk"], "box": target["box"], "size": target["size"],
                "period": period, "texture": target["texture"], "colour": target["colour"],
                "outer_box": target["outer_box"], "border": border,
                "distractor_chunk": distractor["chunk"], "distractor": distractor}
    boxes = [(f, *t["box"], CLASS_ID[f"texture:{t['texture']}"]) for t in tiles for f in t["frames"]]
    return ProbeItem("probe-which", vid, frames, fps, row, "ABCD"[kinds[0]], evidence, boxes)


def _font(size: int):
    """DejaVu Sans Bold, shipped with matplotlib: it has the × and ÷ glyphs (Pillow's default font draws
    them as the same empty box), and bold strokes survive a mild downscale like printed text does."""
    import matplotlib
    from PIL import ImageFont
    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans-Bold.ttf"), size)


def make_math(seed: int, index: int, side: int = 336, sizes: tuple[int, int] = (24, 72)) -> ProbeItem:
    from PIL import Image, ImageDraw

    rng = _seeded("probe-math", seed, index)
    free_form = bool(rng.integers(0, 2))
    a, b = (int(v) for v in rng.integers(0, 10, 2))
    op = 0 if free_form else int(rng.integers(0, 4))
    text = f"{a}" if free_form else f"{a}{OPERATORS[op]}{b}"
    size = int(round(np.exp(rng.uniform(np.log(sizes[0]), np.log(sizes[1])))))
    font = _font(size)
    gap = size // 2
    widths = [font.getlength(ch) for ch in text]
    total_w = int(sum(widths) + gap * (len(text) + 1))
    box_h = int(size * 1.3)
    img = Clutter(rng, side, side, int(rng.integers(4, 10))).frame(0)
    y0, x0 = place(rng, side, side, max(total_w, box_h))
    img[y0:y0 + box_h, x0:x0 + total_w] = 255
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    boxes = []
    cx = x0 + gap
    for ch, w in zip(text, widths):
        draw.text((cx, y0), ch, font=font, fill=(0, 0, 0))
        l, t, r, btm = draw.textbbox((cx, y0), ch, font=font)
        boxes.append((0, int(t), int(l), int(btm), int(r), CLASS_ID[f"char:{ch}"]))
        cx += w + gap
    pid = f"pmath-{seed}-{index:05d}"
    if free_form:
        question = "What number is written in the image?"
        choices, answer, qtype, atype, target = None, str(a), "free_form", "integer", str(a)
    else:
        question = "Which operator appears in the expression in the image?"
        choices, answer, qtype, atype = list(OPERATORS), OPERATORS[op], "multi_choice", "text"
        target = "ABCD"[op]
    row = {"pid": pid, "question": question, "image": f"images/{pid}.png", "choices": choices, "unit": None,
           "precision": None, "answer": answer, "question_type": qtype, "answer_type": atype,
           "metadata": {"split": "testmini", "language": "english", "img_width": side, "img_height": side,
                        "source": "probe", "category": "math-targeted-vqa", "task": "probe arithmetic",
                        "context": "synthetic scene", "grade": "elementary school",
                        "skills": ["arithmetic reasoning"] + ([] if free_form else ["algebraic reasoning"])}}
    evidence = {"frames": [0], "box": [y0, x0, y0 + box_h, x0 + total_w], "text_size": size, "text": text}
    return ProbeItem("probe-math", pid, np.asarray(pil)[None], 1.0, row, target, evidence, boxes)


GENERATORS: dict[str, Callable[[int, int], ProbeItem]] = {
    "probe-videoqa": make_videoqa,
    "probe-longvideo": make_longvideo,
    "probe-grounding": make_grounding,
    "probe-math": make_math,
    "probe-which": make_which,
}
# The generators the bundled backbone (tiny-bundled) was trained with (training/bundled_model.py): the same, except
# probe-longvideo, which gained its fine look (generator version 5) after the backbone was trained
# (probe-which joined in stage 4 of its recipe).
BUNDLED_TRAINING_GENERATORS: dict[str, Callable[[int, int], ProbeItem]] = dict(
    GENERATORS, **{"probe-longvideo": functools.partial(make_longvideo, **LONGVIDEO_V4)})


# -- writing the official layouts ----------------------------------------------------------------

def build(task: str, root: str | Path, seed: int = 0, n: int = 200, crf: int = 8, training: bool = False) -> Path:
    """Write an evaluation split of `task` under `root` in its mirrored benchmark's layout (with
    training=True, a training split: seeds from TRAIN_SEED_BASE up)."""
    from tqdm import tqdm

    from resadapt_eval.probes.synth import encode_video

    if task not in GENERATORS:
        raise ValueError(f"unknown probe {task!r}; known: {', '.join(GENERATORS)}")
    if (seed >= TRAIN_SEED_BASE) != training:
        raise ValueError(f"evaluation seeds must be below {TRAIN_SEED_BASE}, training seeds at or above it")
    root = Path(root)
    rows = []
    for i in tqdm(range(n), desc=f"building {task}", unit="sample", leave=False, disable=None):  # no bar in logs
        item = GENERATORS[task](seed, i)
        row = dict(item.row, evidence=json.dumps(item.evidence))
        if task in ("probe-videoqa", "probe-which"):
            encode_video(root / "data" / f"{item.row['videoID']}.mp4", item.pixels, item.fps, crf)
        elif task == "probe-longvideo":
            encode_video(root / "videos" / item.row["video_path"], item.pixels, item.fps, crf)
        elif task == "probe-grounding":
            encode_video(root / "Charades_v1_480" / item.row["video"], item.pixels, item.fps, crf)
        else:
            from io import BytesIO

            from PIL import Image
            buf = BytesIO()
            Image.fromarray(item.pixels[0]).save(buf, format="PNG")
            row["decoded_image"] = {"bytes": buf.getvalue(), "path": item.row["image"]}
        rows.append(row)
    _write_annotations(task, root, rows)
    (root / "PROBE.json").write_text(json.dumps({"task": task, "seed": seed, "n": n, "crf": crf,
                                                 "version": GENERATOR_VERSION}) + "\n")
    return root


def _write_annotations(task: str, root: Path, rows: list[dict[str, Any]]) -> None:
    import pandas as pd

    frame = pd.DataFrame(rows)
    if task in ("probe-videoqa", "probe-which"):
        (root / "videomme").mkdir(parents=True, exist_ok=True)
        frame.to_parquet(root / "videomme" / "test-00000-of-00001.parquet")
    elif task == "probe-longvideo":
        root.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(root / "validation-00000-of-00001.parquet")
    elif task == "probe-grounding":
        (root / "data").mkdir(parents=True, exist_ok=True)
        frame.to_parquet(root / "data" / "test-00000-of-00001.parquet")
    else:
        (root / "data").mkdir(parents=True, exist_ok=True)
        frame.to_parquet(root / "data" / "testmini-00000-of-00001.parquet")


def ensure_built(task: str, root: Path, seed: int = 0, n: int = 200, training: bool = False) -> Path:
    """Build the evaluation split on first use (deterministic, so every machine gets the same data).

    The split is written beside `root` and moved into place when complete, so a run reading an
    existing split never sees it half rewritten by another process, and two processes building the
    same split at once both end with a whole one."""
    root = Path(root)
    if _is_built(root, seed, n):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = root.with_name(f".{root.name}.building-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    build(task, staging, seed=seed, n=n, training=training)
    if _is_built(root, seed, n):  # another process finished the same split first
        shutil.rmtree(staging, ignore_errors=True)
        return root
    if root.exists():  # a stale split (another n, seed or generator version)
        stale = root.with_name(f".{root.name}.stale-{os.getpid()}")
        root.rename(stale)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        staging.rename(root)
    except OSError:  # another process moved its whole split in between
        shutil.rmtree(staging, ignore_errors=True)
        if not _is_built(root, seed, n):
            raise
    return root


def _is_built(root: Path, seed: int, n: int) -> bool:
    marker = root / "PROBE.json"
    if not marker.exists():
        return False
    meta = json.loads(marker.read_text())
    return meta.get("seed") == seed and meta.get("n") == n and meta.get("version") == GENERATOR_VERSION


def ensure_built_train(task: str, n: int, seed: int = 0) -> Path:
    """A training split (seed TRAIN_SEED_BASE + seed) in the evaluation layout, cached under
    $RESADAPT_HOME/probes-train, one folder per (task, seed, n): what an allocator trains on
    through the evaluation path. Keyed by n, so trainings of different sizes never rebuild each
    other's data under a running one (they did, and runs read videos rewritten beneath them)."""
    from resadapt_eval.adapters.base import _expand

    root = Path(_expand(f"$RESADAPT_HOME/probes-train/{task}-{seed}-n{n}"))
    return ensure_built(task, root, TRAIN_SEED_BASE + seed, n, training=True)


def provision(card) -> None:
    """Build a generated task's split where its card says, if it is missing (deterministic).

    The explicit step that makes a probe card runnable; real benchmarks and user-given data roots
    are left alone.
    """
    spec = card.probe
    if spec and not card.root_given:
        ensure_built(card.name, card.data_root, seed=int(spec.get("seed", 0)), n=int(spec.get("n", 200)))
