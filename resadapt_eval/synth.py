"""Synthetic data in the official layouts: real encoded videos and tiny benchmark datasets.

Used by the tests, `make demo` and the probe tasks; nothing here downloads anything.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pandas as pd


def encode_video(path: Path, frames: np.ndarray, fps: float, crf: int = 18) -> Path:
    """Write uint8 (N, H, W, 3) frames as an H.264 mp4 (even sides; low crf keeps fine detail)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames.shape[1:3]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=int(round(fps)) if float(fps).is_integer() else fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_video(path: Path, n_frames: int = 24, height: int = 120, width: int = 160, fps: int = 8,
                seed: int = 0) -> Path:
    """An H.264 mp4 of moving coloured boxes (every frame differs, so frame mix-ups show)."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, size=(3, 3))
    frames = np.empty((n_frames, height, width, 3), np.uint8)
    for i in range(n_frames):
        frames[i] = (i * 9) % 200 + 20
        for k, c in enumerate(colours):
            y = (k * height // 3 + i * 3) % (height - 16)
            x = (i * (k + 2) * 4) % (width - 16)
            frames[i, y:y + 16, x:x + 16] = c
    return encode_video(path, frames, fps, crf=23)


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
