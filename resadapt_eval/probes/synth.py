"""Synthetic data in the official layouts: real encoded videos and tiny benchmark datasets.

Used by the tests, `make demo` and the probe tasks; nothing here downloads anything.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd


def encode_video(path: Path, frames: np.ndarray | Iterable[np.ndarray], fps: float | Fraction, crf: int = 18,
                 preset: str = "veryfast", options: dict[str, str] | None = None,
                 frame_format: str = "rgb24") -> Path:
    """Write uint8 (N, H, W, 3) frames as an H.264 mp4 (even sides; low crf keeps fine detail).

    `frames` may be any iterable of (H, W, 3) frames, so long videos never sit in memory whole.
    `options` go to libx264 as they are, e.g. {"g": "12"} for a keyframe every 12 frames.
    `frame_format="yuv420p"` takes (H * 3/2, W) planar frames instead, skipping the RGB conversion
    (the slowest step at 720p).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise ValueError(f"no frames to encode into {path}")
    height, width = first.shape[:2] if frame_format != "yuv420p" else (first.shape[0] * 2 // 3, first.shape[1])
    with av.open(str(path), "w") as container:
        rate = int(fps) if float(fps).is_integer() else Fraction(fps).limit_denominator(1001)  # 29.97 -> 30000/1001
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf), "preset": preset, **(options or {})}
        for img in itertools.chain([first], frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format=frame_format)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def box_frames(n_frames: int, height: int, width: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Moving coloured boxes on a flat background whose grey level steps every frame (every frame differs)."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, size=(3, 3))
    for i in range(n_frames):
        frame = np.empty((height, width, 3), np.uint8)
        frame[:] = (i * 9) % 200 + 20
        for k, c in enumerate(colours):
            y = (k * height // 3 + i * 3) % (height - 16)
            x = (i * (k + 2) * 4) % (width - 16)
            frame[y:y + 16, x:x + 16] = c
        yield frame


def write_video(path: Path, n_frames: int = 24, height: int = 120, width: int = 160, fps: int = 8,
                seed: int = 0, options: dict[str, str] | None = None) -> Path:
    """An H.264 mp4 of moving coloured boxes (every frame differs, so frame mix-ups show)."""
    return encode_video(path, box_frames(n_frames, height, width, seed), fps, crf=23, options=options)


def make_videomme(root: Path, n_videos: int = 3, questions_per_video: int = 2, missing: int = 1,
                  sizes: tuple[tuple[int, int], ...] = ((120, 160), (96, 96), (144, 200))) -> Path:
    """<root>/videomme/test-00000-of-00001.parquet and <root>/data/<videoID>.mp4, as lmms-eval lays it out.

    The last `missing` videos are listed in the annotations but not written.
    """
    rows = []
    durations = ["short", "medium", "long"]
    for v in range(n_videos):
        vid = f"vid{v:03d}"
        if v < n_videos - missing:
            h, w = sizes[v % len(sizes)]
            write_video(root / "data" / f"{vid}.mp4", n_frames=16 + 4 * v, height=h, width=w, seed=v)
        for q in range(questions_per_video):
            rows.append({
                "video_id": f"{v + 1:03d}", "duration": durations[v % 3], "domain": ["Knowledge", "Sports"][v % 2],
                "sub_category": "Humanity & History", "url": f"https://example.invalid/{vid}", "videoID": vid,
                "question_id": f"{v + 1:03d}-{q + 1}", "task_type": ["Counting Problem", "Object Recognition"][q % 2],
                "question": f"Which colour box moves fastest in clip {v}?",
                "options": [f"A. red {q}", "B. green", "C. blue", "D. none of them"],
                "answer": "ABCD"[(v + q) % 4],
            })
    (root / "videomme").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(root / "videomme" / "test-00000-of-00001.parquet")
    return root


def make_longvideobench(root: Path, n_videos: int = 2, sizes: tuple[tuple[int, int], ...] = ((96, 128), (64, 96))) -> Path:
    """<root>/validation-00000-of-00001.parquet and <root>/videos/<video_path>, as the HF dataset repo
    longvideobench/LongVideoBench unpacks (five-option rows, the fifth `N/A` where a question has four)."""
    rows = []
    for v in range(n_videos):
        vid = f"lvb{v:03d}"
        h, w = sizes[v % len(sizes)]
        write_video(root / "videos" / f"{vid}.mp4", n_frames=20 + 4 * v, height=h, width=w, fps=8, seed=10 + v)
        rows.append({"video_id": vid, "id": f"{vid}_0", "video_path": f"{vid}.mp4", "subtitle_path": f"{vid}_en.json",
                     "correct_choice": v % 4, "question": f"Which colour box appears first in clip {v}?",
                     "option0": "red", "option1": "green", "option2": "blue", "option3": "grey",
                     "option4": "N/A" if v % 2 else "white", "duration": 3.0, "duration_group": 15,
                     "question_category": "S2E", "topic_category": "NP-News-Programs",
                     "starting_timestamp_for_subtitles": 0.0})
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(root / "validation-00000-of-00001.parquet")
    return root
