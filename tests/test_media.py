"""Frame loading: uniform indices, decord and PyAV agree frame-exactly, bad files become SampleErrors."""

from __future__ import annotations

import numpy as np
import pytest

from fixtures import encode_box_video, full_decode, write_video
from resadapt_eval.pipeline.media import load_image, load_video, uniform_indices
from resadapt_eval.core.types import SampleError


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


class _Counting:
    """A PyAV container that counts seeks and decoded frames."""

    def __init__(self, container):
        self.container, self.seeks, self.decoded = container, 0, 0

    def seek(self, *args, **kwargs):
        self.seeks += 1
        return self.container.seek(*args, **kwargs)

    def decode(self, *args, **kwargs):
        for frame in self.container.decode(*args, **kwargs):
            self.decoded += 1
            yield frame


def _remux(src, dst, offset=0):
    """The same packets in another container (mkv, MPEG-TS: no stored frame count), pts shifted by `offset`."""
    import av

    with av.open(str(src)) as i, av.open(str(dst), "w") as o:
        s = i.streams.video[0]
        t = o.add_stream_from_template(s)
        for p in i.demux(s):
            if p.dts is None:
                continue
            p.pts, p.dts, p.stream = p.pts + offset, p.dts + offset, t
            o.mux(p)
    return dst


@pytest.mark.parametrize("options", [None, {"g": "12"}, {"g": "12", "bf": "0"}], ids=["default-gop", "g12", "g12-no-b"])
def test_pyav_seeks_to_exactly_the_frames_of_afull_decode(tmp_path, options):
    from resadapt_eval.pipeline import media

    path = write_video(tmp_path / "v.mp4", n_frames=90, height=48, width=64, fps=10, options=options)
    full = full_decode(path)
    assert len(full) == 90 and all(np.abs(full[i].astype(int) - full[i + 1]).mean() > 1 for i in range(89))
    rng = np.random.default_rng(0)
    sets = [list(range(90)), [0], [89], [11, 12, 13], [23, 24, 25], [5, 60], *(
        sorted(set(rng.integers(0, 90, k).tolist())) for k in (2, 3, 5, 8, 20, 40))]
    for targets in sets:
        container, stream, _, total = media._pyav_open(str(path))
        counting = _Counting(container)
        with container:
            got = media._seek_frames(counting, stream, targets, total)
        assert sorted(got) == targets
        assert all((got[t] == full[t]).all() for t in targets), targets
        if options and targets == [5, 60]:  # a keyframe every 12 frames: two seeks, not a decode of 61 frames
            assert counting.seeks == 2 and counting.decoded < 40
    for n in (1, 4, 7, 32, 200):
        seek, scan, dec = (load_video(path, n, backend=b) for b in ("pyav", "pyav-scan", "decord"))
        assert seek.indices == scan.indices == dec.indices == uniform_indices(90, n)
        assert (seek.pixels == full[seek.indices]).all()
        assert (seek.pixels == scan.pixels).all() and (seek.pixels == dec.pixels).all()


@pytest.mark.parametrize("name,offset", [("v.mkv", 0), ("v.ts", 0), ("off.mkv", 30720), ("off.mp4", 30720)])
def test_pyav_seek_without_frame_count_or_with_a_late_start(tmp_path, name, offset):
    src = write_video(tmp_path / "src.mp4", n_frames=60, height=48, width=64, fps=10, options={"g": "12"})
    path = _remux(src, tmp_path / name, offset)
    full = full_decode(path)
    assert (full == full_decode(src)).all()
    for n in (1, 5, 16, 60):
        seek = load_video(path, n, backend="pyav")
        assert seek.total_frames == 60 and seek.indices == uniform_indices(60, n)
        assert (seek.pixels == full[seek.indices]).all()


def test_unknown_backend_is_a_clear_error(tmp_path):
    path = write_video(tmp_path / "a.mp4", n_frames=4)
    with pytest.raises(ValueError, match="unknown video backend"):
        load_video(path, 2, backend="opencv")


def test_pyav_seek_on_variable_frame_rate_takes_nearby_frames(tmp_path):
    """VFR: frame numbers come from timestamps at the average rate, so a frame a little off may be taken."""
    path = str(encode_box_video(tmp_path / "vfr.mp4", "libx264", {"g": "12", "crf": "23"}, n=60, h=48, w=64,
                                vfr=True))
    full = full_decode(path)
    for n in (4, 16, 60):
        got = load_video(path, n, backend="pyav")
        assert got.indices == uniform_indices(60, n)
        where = [next(k for k in range(60) if (full[k] == img).all()) for img in got.pixels]
        assert where == sorted(where) and max(abs(w - i) for w, i in zip(where, got.indices)) <= 2


def test_decode_benchmark_reports_every_method(tmp_path):
    """The figures' plumbing on a tiny video (not a timed test: no figure is checked)."""
    from resadapt_eval.tools.bench_decode import decode_benchmark

    path = write_video(tmp_path / "b.mp4", n_frames=40, height=48, width=64, fps=10, options={"g": "12"})
    bench = decode_benchmark(path, frames=8, repeats=2, full_decode=True)
    from resadapt_eval.pipeline.media import auto_backends, have_torchcodec

    assert bench.identical and bench.total_frames == 40 and bench.frames == 8
    assert bench.backend == auto_backends(str(path))[0]
    extra = {"torchcodec"} if have_torchcodec() else set()
    assert set(bench.seconds) == {"decord", "load_video", "pyav-seek", "pyav-full-decode"} | extra
    assert all(len(v) == 2 for v in bench.seconds.values())
    text = bench.format()
    assert "frames/s" in text and "x decord" in text and len(bench.lines()) == 6 + len(extra)


def test_transport_streams_decode_with_pyav_first_and_exactly(tmp_path):
    """decord and torchcodec land on wrong frames in MPEG-TS (measured), so `auto` reads them with PyAV."""
    from resadapt_eval.pipeline import media
    from resadapt_eval.pipeline.media import load_video

    src = write_video(tmp_path / "v.mp4", n_frames=60, height=48, width=64, fps=10, options={"g": "12"})
    ts = _remux(src, tmp_path / "v.ts")
    auto, scan = load_video(ts, 7), load_video(ts, 7, backend="pyav-scan")
    assert auto.backend == "pyav" and auto.indices == scan.indices
    assert np.array_equal(auto.pixels, scan.pixels)
    assert load_video(src, 7).backend == media.auto_backends(str(src))[0]
