"""Thumbnails for the sample pages: each sample's decoded frames, one sprite sheet per sample.

A sample's frames are decoded once (pipeline.media, the harness's own decoding, so frame positions in
the records index them) and pasted at one tile size, the largest chunk size any run planned for the
sample but never above the decoded frame's own size. The page then draws each planned frame into a canvas of its chunk's exact (h, w): what the
backbone received, resized in the browser. One JPEG per sample keeps the site to a few hundred files
however many runs compare the sample.
"""

from __future__ import annotations

import math
import os
import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from PIL import Image

from resadapt_eval.core.types import SampleError
from resadapt_eval.pipeline.media import load_frames, usable_cores

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
    # never above the decoded size: an upscaled chunk is drawn larger by the page, from the same pixels
    th, tw = min(job.tile[0], frames.height), min(job.tile[1], frames.width)
    cols = min(frames.count, COLUMNS)
    rows = math.ceil(frames.count / cols)
    sheet = Image.new("RGB", (cols * tw, rows * th))
    for i in range(frames.count):
        tile = Image.fromarray(frames.pixels[i]).resize((tw, th), Image.Resampling.BICUBIC)
        sheet.paste(tile, ((i % cols) * tw, (i // cols) * th))
    sheet.save(job.path, quality=QUALITY)
    return {"cols": cols, "tile": [th, tw], "native": [frames.height, frames.width],
            "indices": [int(i) for i in frames.indices], "times": [round(float(t), 4) for t in frames.timestamps]}


def _one_thread_each() -> None:
    """Each worker computes on one thread: the workers already fill the cores, and their libraries'
    own thread pools on top of them made the site 2.6x slower (58 s against 22 s wall on the demo)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def _make_batch(jobs: list[SpriteJob]) -> list[dict[str, Any]]:
    return [make_sprite(job) for job in jobs]


class SpriteMaker:
    """Sheets made in worker processes while the caller writes the other pages: `submit` a task's jobs
    now, `results` them later (in order). With one worker everything runs in this process, on demand."""

    def __init__(self, workers: int | None = None):
        self.workers = workers or usable_cores()
        # spawn, not fork: a forked child inherits the parent's decoder and torch thread pools mid-state
        # (torchcodec/FFmpeg workers then hang in the child)
        ctx = multiprocessing.get_context("spawn")
        self.pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx, initializer=_one_thread_each) \
            if self.workers > 1 else None
        self.pending: dict[str, tuple[list[SpriteJob], list[Future]]] = {}

    def submit(self, key: str, jobs: list[SpriteJob]) -> None:
        futures: list[Future] = []
        if self.pool is not None:
            size = max(1, min(16, len(jobs) // (self.workers * 4) or 1))
            futures = [self.pool.submit(_make_batch, jobs[i:i + size]) for i in range(0, len(jobs), size)]
        self.pending[key] = (jobs, futures)

    def results(self, key: str) -> list[dict[str, Any]]:
        jobs, futures = self.pending.pop(key, ([], []))
        if self.pool is None:
            return _make_batch(jobs)
        return [made for future in futures for made in future.result()]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def __enter__(self) -> "SpriteMaker":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
