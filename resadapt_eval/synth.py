"""Synthetic data in the official layouts: real encoded videos and tiny benchmark datasets.

Used by the tests, `make demo` and the probe tasks; nothing here downloads anything.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pandas as pd


def write_video(path: Path, n_frames: int = 24, height: int = 120, width: int = 160, fps: int = 8,
                seed: int = 0) -> Path:
    """An H.264 mp4 of moving coloured boxes (every frame differs, so frame mix-ups show)."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, size=(3, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(n_frames):
            img = np.full((height, width, 3), (i * 9) % 200 + 20, np.uint8)
            for k, c in enumerate(colours):
                y = (k * height // 3 + i * 3) % (height - 16)
                x = (i * (k + 2) * 4) % (width - 16)
                img[y:y + 16, x:x + 16] = c
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


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
