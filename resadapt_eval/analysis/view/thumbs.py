"""Thumbnails for the sample pages: each sample's decoded frames, one sprite sheet per sample.

A sample's frames are decoded once (pipeline.media, the harness's own decoding, so frame positions in
the records index them) and pasted at one tile size, the largest chunk size any run planned for the
sample. The page then draws each planned frame into a canvas of its chunk's exact (h, w): what the
backbone received, resized in the browser. One JPEG per sample keeps the site to a few hundred files
however many runs compare the sample.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from PIL import Image

from resadapt_eval.core.types import SampleError
from resadapt_eval.pipeline.media import load_frames

COLUMNS = 8
QUALITY = 90


@dataclass(frozen=True)
class SpriteJob:
    """One sample's sheet: decode `frames` frames of `media`, paste them at `tile` (h, w) into `path`."""

    path: str
    kind: str
    media: Any
    frames: int
    tile: tuple[int, int]


def make_sprite(job: SpriteJob) -> dict[str, Any]:
    """Write the sheet; returns its layout and the decoded frames' source numbers and times, or the
    one-line reason it could not be made (a missing or corrupt video)."""
    try:
        frames = load_frames(job.kind, job.media, job.frames)
    except SampleError as e:
        return {"error": str(e)}
    th, tw = job.tile
    cols = min(frames.count, COLUMNS)
    rows = math.ceil(frames.count / cols)
    sheet = Image.new("RGB", (cols * tw, rows * th))
    for i in range(frames.count):
        tile = Image.fromarray(frames.pixels[i]).resize((tw, th), Image.Resampling.BICUBIC)
        sheet.paste(tile, ((i % cols) * tw, (i // cols) * th))
    sheet.save(job.path, quality=QUALITY)
    return {"cols": cols, "tile": [th, tw], "native": [frames.height, frames.width],
            "indices": [int(i) for i in frames.indices], "times": [round(float(t), 4) for t in frames.timestamps]}


def make_sprites(jobs: list[SpriteJob], workers: int | None = None) -> list[dict[str, Any]]:
    """Every sheet, on all usable cores (decoding and JPEG encoding are the site's only heavy work)."""
    workers = workers or len(os.sched_getaffinity(0))
    if workers <= 1 or len(jobs) < 4:
        return [make_sprite(job) for job in jobs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(make_sprite, jobs, chunksize=max(1, len(jobs) // (workers * 8))))
