"""Decode the vanilla visual input of a sample: N uniformly sampled video frames, or one image.

Uniform sampling follows qwen-vl-utils (used by lmms-eval's Qwen2.5-VL models):
indices = round(linspace(0, total - 1, N)). decord is tried first, PyAV second; both failing
turns into a `SampleError`, which the runner records as a per-sample error.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .types import Frames, SampleError


def uniform_indices(total_frames: int, n_frames: int) -> list[int]:
    """min(N, total) frame numbers spread evenly from the first to the last frame."""
    if total_frames < 1:
        raise SampleError("video has no frames")
    n = max(1, min(n_frames, total_frames))
    return [int(round(x)) for x in np.linspace(0, total_frames - 1, n)]


def _decode_decord(path: str, n_frames: int) -> tuple[np.ndarray, list[int], float, int]:
    import decord

    reader = decord.VideoReader(path, num_threads=1)
    total = len(reader)
    fps = float(reader.get_avg_fps())
    idx = uniform_indices(total, n_frames)
    pixels = reader.get_batch(idx).asnumpy()
    return pixels, idx, fps, total


def _decode_pyav(path: str, n_frames: int) -> tuple[np.ndarray, list[int], float, int]:
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 1.0
        total = int(stream.frames or 0)
        if total <= 0:  # some containers do not store a frame count: count by demuxing
            total = sum(1 for p in container.demux(stream) if p.size)
            container.seek(0)
        idx = uniform_indices(total, n_frames)
        wanted = {i: k for k, i in enumerate(idx)}
        out: list[np.ndarray | None] = [None] * len(idx)
        last = max(idx)
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                arr = frame.to_ndarray(format="rgb24")
                for k, j in enumerate(idx):  # repeated indices (N > total) share a frame
                    if j == i:
                        out[k] = arr
            if i >= last:
                break
    if any(o is None for o in out):
        raise SampleError(f"only {sum(o is not None for o in out)} of {len(idx)} frames decodable")
    return np.stack(out), idx, fps, total


# decord prefixes its messages with the wall-clock time and its source location
# ("[20:05:15] /github/workspace/src/video/ffmpeg/threaded_decoder.cc:292: "), which would make the
# error records of one corrupt file differ from run to run (and from a resumed run).
_DECORD_PREFIX = re.compile(r"\[\d{1,2}:\d{2}:\d{2}\] [^\s:]+:\d+: ")


def _decoder_message(e: Exception) -> str:
    """The first line of a decoder's message, without decord's time and source-location prefixes."""
    text = str(e).splitlines()[0] if str(e) else ""
    return _DECORD_PREFIX.sub("", text).strip()


def load_video(path: str | os.PathLike, n_frames: int, backend: str = "auto") -> Frames:
    """Decode `n_frames` uniformly sampled frames (decord, then PyAV) with their timestamps."""
    path = str(path)
    if not os.path.isfile(path):
        raise SampleError(f"video not found: {path}")
    if os.path.getsize(path) == 0:
        raise SampleError(f"video is an empty file: {path}")
    backends = ["decord", "pyav"] if backend == "auto" else [backend]
    errors = []
    start = time.perf_counter()
    for name in backends:
        try:
            pixels, idx, fps, total = (_decode_decord if name == "decord" else _decode_pyav)(path, n_frames)
        except SampleError as e:
            errors.append(f"{name}: {e}")
            continue
        except Exception as e:  # decoders raise their own error types on corrupt files
            errors.append(f"{name}: {type(e).__name__}: {_decoder_message(e)}")
            continue
        return Frames(kind="video", pixels=np.ascontiguousarray(pixels), indices=idx,
                      timestamps=[i / fps for i in idx], fps=fps, total_frames=total,
                      decode_s=time.perf_counter() - start, backend=name)
    raise SampleError(f"cannot decode video {path} ({'; '.join(errors)})")


def load_image(image: Any) -> Frames:
    """An image file path or an in-memory PIL image, as RGB Frames of one frame."""
    start = time.perf_counter()
    try:
        if isinstance(image, Image.Image):
            img = image
        else:
            if not Path(image).is_file():
                raise SampleError(f"image not found: {image}")
            img = Image.open(image)
        pixels = np.asarray(img.convert("RGB"))[None]
    except SampleError:
        raise
    except Exception as e:
        raise SampleError(f"cannot read image {image!r}: {type(e).__name__}: {e}") from e
    return Frames(kind="image", pixels=pixels, indices=[0], timestamps=[0.0], fps=1.0, total_frames=1,
                  decode_s=time.perf_counter() - start, backend="pil")


def load_frames(kind: str, media: Any, n_frames: int) -> Frames:
    """The vanilla visual input of a sample."""
    if kind == "video":
        return load_video(media, n_frames)
    return load_image(media)


class FrameCache:
    """Decoded frames kept across the configurations of a sweep (LRU, bounded in bytes).

    Hits return the same Frames object (never mutated downstream) and keep its original
    `decode_s`, so records still report what decoding that sample costs.
    """

    def __init__(self, max_bytes: int = 2 << 30):
        from collections import OrderedDict

        self.max_bytes = max_bytes
        self.items: "OrderedDict[tuple, Frames]" = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = 0

    def load(self, kind: str, media: Any, n_frames: int) -> tuple[Frames, bool]:
        """(frames, whether they came from the cache)."""
        if not isinstance(media, (str, os.PathLike)):
            return load_frames(kind, media, n_frames), False
        key = (kind, str(media), n_frames)
        if key in self.items:
            self.items.move_to_end(key)
            self.hits += 1
            return self.items[key], True
        self.misses += 1
        frames = load_frames(kind, media, n_frames)
        size = frames.pixels.nbytes
        if size <= self.max_bytes:
            self.items[key] = frames
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, old = self.items.popitem(last=False)
                self.bytes -= old.pixels.nbytes
        return frames, False
