"""Frame loading: uniform indices, decord and PyAV agree frame-exactly, bad files become SampleErrors."""

from __future__ import annotations

import numpy as np
import pytest

from fixtures import write_video
from resadapt_eval.media import load_image, load_video, uniform_indices
from resadapt_eval.types import SampleError


def test_uniform_indices():
    assert uniform_indices(100, 5) == [0, 25, 50, 74, 99]
    assert uniform_indices(3, 8) == [0, 1, 2]
    assert uniform_indices(1, 4) == [0]
    with pytest.raises(SampleError):
        uniform_indices(0, 4)


def test_decord_and_pyav_agree(tmp_path):
    path = write_video(tmp_path / "a.mp4", n_frames=30, height=96, width=128, fps=10)
    a = load_video(path, 7, backend="decord")
    b = load_video(path, 7, backend="pyav")
    assert a.indices == b.indices == uniform_indices(30, 7)
    assert a.total_frames == b.total_frames == 30 and a.fps == b.fps == 10
    assert a.pixels.shape == (7, 96, 128, 3)
    assert np.abs(a.pixels.astype(int) - b.pixels.astype(int)).mean() < 1.0
    assert a.timestamps == [i / 10 for i in a.indices]
    # consecutive sampled frames really differ (the right frames, not one frame repeated)
    assert all(np.abs(a.pixels[i].astype(int) - a.pixels[i + 1]).mean() > 1 for i in range(6))


def test_bad_files_raise_sample_errors(tmp_path):
    with pytest.raises(SampleError, match="not found"):
        load_video(tmp_path / "missing.mp4", 4)
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(SampleError, match="empty"):
        load_video(tmp_path / "empty.mp4", 4)
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 50)
    with pytest.raises(SampleError, match="cannot decode"):
        load_video(tmp_path / "text.mp4", 4)
    good = write_video(tmp_path / "good.mp4", n_frames=30).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(good[: len(good) // 3])
    with pytest.raises(SampleError):
        load_video(tmp_path / "cut.mp4", 4)
    with pytest.raises(SampleError, match="image not found"):
        load_image(tmp_path / "missing.png")
