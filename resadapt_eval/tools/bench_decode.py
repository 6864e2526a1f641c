"""Decode throughput: the harness's frame loading against decord's own `get_batch`, side by side.

A 10-minute 1280x720 H.264 mp4 is generated once (cached), then every method decodes the same
uniformly sampled frames, interleaved round by round in one process, so machine noise hits them
alike. Figures are medians over the rounds. Nothing here is a timed test: `python -m
resadapt_eval.tools.bench_decode` (or `resadapt-eval bench`) prints them.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from resadapt_eval.pipeline.media import load_video, uniform_indices, have_torchcodec

#: the generated video: 10 minutes of 1280x720 at 24 fps, a keyframe at least every 250 frames
WIDTH, HEIGHT, FPS, MINUTES, GOP = 1280, 720, 24, 10, 250


def pan_frames(n_frames: int, height: int = HEIGHT, width: int = WIDTH, seed: int = 0) -> Iterator[np.ndarray]:
    """yuv420p frames (H * 3/2, W): a blocky random texture panning 3 px a frame (so P-frames carry real
    motion and residual, not just skips), with a cut every ~18 s where the pan wraps, plus three moving boxes."""
    rng = np.random.default_rng(seed)
    block, span = 16, 2 * width
    luma = np.repeat(np.repeat(rng.integers(16, 236, (height // block + 1, span // block + 1), np.uint8),
                               block, 0), block, 1)
    chroma = np.repeat(np.repeat(rng.integers(64, 192, (2, height // block + 1, span // block + 1), np.uint8),
                                 block // 2, 1), block // 2, 2)
    h2, w2 = height // 2, width // 2
    for i in range(n_frames):
        x, y = (3 * i) % (span - width), 0
        frame = np.empty((height * 3 // 2, width), np.uint8)
        frame[:height] = luma[y:y + height, x:x + width]
        frame[height:height + h2 // 2] = chroma[0, y // 2:y // 2 + h2, x // 2:x // 2 + w2].reshape(h2 // 2, width)
        frame[height + h2 // 2:] = chroma[1, y // 2:y // 2 + h2, x // 2:x // 2 + w2].reshape(h2 // 2, width)
        for k in range(3):
            by, bx = (k * height // 3 + i * 3) % (height - 64), (i * (k + 2) * 4) % (width - 64)
            frame[by:by + 64, bx:bx + 64] = 40 + 70 * k
        yield frame


def bench_video(cache_dir: Path = Path(".cache/bench"), minutes: float = MINUTES, fps: int = FPS,
                gop: int = GOP) -> tuple[Path, float | None]:
    """(path, seconds it took to generate, or None when it was cached)."""
    from resadapt_eval.probes.synth import encode_video

    path = cache_dir / f"pan-{WIDTH}x{HEIGHT}-{fps}fps-{minutes:g}min-g{gop}.mp4"
    if path.is_file() and path.stat().st_size > 0:
        return path, None
    tmp = path.with_suffix(".part.mp4")
    start = time.perf_counter()
    encode_video(tmp, pan_frames(int(round(minutes * 60 * fps))), fps, crf=28, preset="ultrafast",
                 options={"g": str(gop)}, frame_format="yuv420p")
    tmp.rename(path)  # only a finished file is ever cached
    return path, time.perf_counter() - start


@dataclass
class DecodeBench:
    """Throughput of each method on the same frames of one video (medians over `repeats` rounds)."""

    video: str
    duration_s: float
    width: int
    height: int
    fps: float
    total_frames: int
    keyframes: int
    size_mb: float
    frames: int
    repeats: int
    generate_s: float | None  # None: the video was already there
    seconds: dict[str, list[float]] = field(default_factory=dict)  # method -> wall time of each round
    backend: str = ""  # what load_video picked
    identical: bool = True  # every method returned the same pixels

    def median_s(self, method: str) -> float:
        return statistics.median(self.seconds[method])

    def fps_of(self, method: str) -> float:
        return self.frames / self.median_s(method)

    def ratio(self, method: str, reference: str = "decord") -> float:
        """Throughput of `method` relative to `reference` (>1: faster)."""
        return self.median_s(reference) / self.median_s(method)

    def lines(self) -> list[str]:
        gen = "cached" if self.generate_s is None else f"generated in {self.generate_s:.0f} s"
        out = [f"decode bench: {self.video} ({self.width}x{self.height}, {self.duration_s / 60:.1f} min, "
               f"{self.fps:g} fps, {self.total_frames} frames, {self.keyframes} keyframes, {self.size_mb:.0f} MB; {gen})",
               f"{self.frames} uniformly sampled frames, median of {self.repeats} interleaved rounds; "
               f"same pixels from every method: {'yes' if self.identical else 'NO'}"]
        for method in self.seconds:
            ratio = "" if method == "decord" else f"  {self.ratio(method):.2f}x decord"
            label = f"{method} ({self.backend})" if method == "load_video" else method
            lo, hi = min(self.seconds[method]), max(self.seconds[method])
            out.append(f"  {label:<28} {self.fps_of(method):8.1f} frames/s  {self.median_s(method):7.2f} s"
                       f" (rounds {lo:.2f}-{hi:.2f} s){ratio}")
        return out

    def format(self) -> str:
        return "\n".join(self.lines())


def _methods(path: str, frames: int, total: int, full_decode: bool) -> dict[str, Callable[[], np.ndarray]]:
    import decord

    idx = uniform_indices(total, frames)
    methods: dict[str, Callable[[], np.ndarray]] = {
        "decord": lambda: decord.VideoReader(path).get_batch(idx).asnumpy(),
        "load_video": lambda: load_video(path, frames).pixels,
        "pyav-seek": lambda: load_video(path, frames, backend="pyav").pixels,
    }
    if have_torchcodec():
        methods["torchcodec"] = lambda: load_video(path, frames, backend="torchcodec").pixels
    if full_decode:
        methods["pyav-full-decode"] = lambda: load_video(path, frames, backend="pyav-scan").pixels
    return methods


def decode_benchmark(video: Path | None = None, frames: int = 32, repeats: int = 3,
                     cache_dir: Path = Path(".cache/bench"), full_decode: bool = False,
                     extra: dict[str, Callable[[], np.ndarray]] | None = None) -> DecodeBench:
    """Time decord's get_batch, the harness's load_video and its forced PyAV seek path (and, with
    `full_decode`, the old decode-everything PyAV path) on the same `frames` indices of `video`
    (default: the generated 10-minute 720p video), interleaved over `repeats` rounds."""
    import av

    generate_s = None
    if video is None:
        video, generate_s = bench_video(cache_dir)
    path = str(video)
    with av.open(path) as c:
        s = c.streams.video[0]
        total, fps = int(s.frames), float(s.average_rate)
        keyframes = sum(1 for e in s.index_entries if e.is_keyframe)
        width, height = s.codec_context.width, s.codec_context.height
        duration = float(s.duration * s.time_base) if s.duration else total / fps
    if total <= 0:
        total = load_video(path, 1, backend="pyav").total_frames
    methods = _methods(path, frames, total, full_decode)
    methods.update(extra or {})
    result = DecodeBench(video=path, duration_s=duration, width=width, height=height, fps=fps, total_frames=total,
                         keyframes=keyframes, size_mb=Path(path).stat().st_size / 1e6, frames=min(frames, total),
                         repeats=repeats, generate_s=generate_s, seconds={m: [] for m in methods},
                         backend=load_video(path, 1).backend)
    reference = None
    for r in range(repeats):
        order = list(methods) if r % 2 == 0 else list(methods)[::-1]  # alternate, so no method always goes first
        for name in order:
            start = time.perf_counter()
            pixels = methods[name]()
            result.seconds[name].append(time.perf_counter() - start)
            if reference is None:
                reference = pixels
            result.identical &= pixels.shape == reference.shape and bool((pixels == reference).all())
    return result


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m resadapt_eval.tools.bench_decode", description=__doc__.splitlines()[0])
    ap.add_argument("--video", type=Path, help="a video to time (default: the generated 10-minute 720p mp4)")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cache-dir", type=Path, default=Path(".cache/bench"))
    ap.add_argument("--full-decode", action="store_true", help="also time the old decode-everything PyAV path (slow)")
    args = ap.parse_args(argv)
    print(decode_benchmark(args.video, args.frames, args.repeats, args.cache_dir, args.full_decode).format())


if __name__ == "__main__":
    main()
