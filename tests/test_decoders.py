"""Every decoder returns the same pixels: torchcodec, decord and PyAV on each codec and container the
test videos cover (H.264, HEVC, VP9, AV1; mp4, mkv, webm, MPEG-TS; variable frame rate; rotation
metadata), checked against a full PyAV decode of the same file."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from fixtures import encode_box_video, full_decode
from resadapt_eval.pipeline import media
from resadapt_eval.pipeline.media import load_video, uniform_indices

needs_torchcodec = pytest.mark.skipif(not media.have_torchcodec(),
                                      reason="torchcodec needs the system FFmpeg (apt-get install ffmpeg)")

CODECS = {  # name: (encoder, container suffix, encoder options)
    "h264-mp4": ("libx264", ".mp4", {"crf": "18", "preset": "veryfast", "g": "12"}),
    "hevc-mp4": ("libx265", ".mp4", {"crf": "18", "preset": "veryfast", "x265-params": "keyint=12:log-level=none"}),
    "vp9-webm": ("libvpx-vp9", ".webm", {"crf": "30", "b": "0", "g": "12", "deadline": "realtime", "cpu-used": "8"}),
    "av1-mkv": ("libsvtav1", ".mkv", {"crf": "35", "preset": "12", "g": "12"}),
    "h264-mkv": ("libx264", ".mkv", {"crf": "18", "preset": "veryfast", "g": "12"}),
    "h264-ts": ("libx264", ".ts", {"crf": "18", "preset": "veryfast", "g": "12"}),
}


@needs_torchcodec
@pytest.mark.parametrize("name", CODECS)
def test_torchcodec_and_auto_equal_afull_decode(tmp_path, name):
    """torchcodec is exact on every codec and container here but MPEG-TS, where it (and decord) land on
    wrong frames; `auto` reads TS with PyAV first, so `auto` is exact everywhere."""
    codec, suffix, options = CODECS[name]
    path = encode_box_video(tmp_path / f"v{suffix}", codec, options)
    full = full_decode(path)
    assert len(full) == 48
    for n in (1, 5, 16, 48):
        auto = load_video(path, n)
        assert auto.indices == uniform_indices(48, n) and auto.total_frames == 48
        assert np.array_equal(auto.pixels, full[auto.indices]), (name, n)
        assert auto.backend == ("pyav" if suffix == ".ts" else "torchcodec")
        if suffix == ".ts":  # torchcodec lands on wrong frames here, or runs out of frames
            continue
        codec_frames = load_video(path, n, backend="torchcodec")
        assert np.array_equal(codec_frames.pixels, full[codec_frames.indices]), (name, n)
        assert codec_frames.fps == pytest.approx(10, rel=0.02)


@needs_torchcodec
@pytest.mark.parametrize("name", ["h264-mp4", "hevc-mp4", "vp9-webm", "h264-mkv"])
def test_all_backends_agree(tmp_path, name):
    """Pixel-identical, except decord on HEVC with B-frames: it lands a frame off on some samples."""
    codec, suffix, options = CODECS[name]
    path = encode_box_video(tmp_path / f"v{suffix}", codec, options)
    frames = {b: load_video(path, 7, backend=b) for b in ("torchcodec", "decord", "pyav")}
    ref = frames["torchcodec"]
    for b, f in frames.items():
        assert f.indices == ref.indices, b
        same = np.array_equal(f.pixels, ref.pixels)
        assert same or (b == "decord" and name == "hevc-mp4"), b


@needs_torchcodec
def test_variable_frame_rate_is_exact_by_decode_order(tmp_path):
    """VFR: torchcodec numbers frames in decode order, like a full decode (PyAV's seek path may land a
    frame or two off there; see test_media)."""
    path = encode_box_video(tmp_path / "vfr.mp4", "libx264", CODECS["h264-mp4"][2], vfr=True)
    full = full_decode(path)
    for n in (4, 16, 48):
        got = load_video(path, n, backend="torchcodec")
        assert np.array_equal(got.pixels, full[got.indices])


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command to tag rotation")
@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_rotation_metadata_is_applied_by_every_backend(tmp_path, degrees):
    src = encode_box_video(tmp_path / "src.mp4", "libx264", CODECS["h264-mp4"][2])
    path = tmp_path / f"rot{degrees}.mp4"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(src), "-c", "copy",
                    "-metadata:s:v:0", f"rotate={degrees}", str(path)], check=True)
    backends = (["torchcodec"] if media.have_torchcodec() else []) + ["decord", "pyav", "pyav-scan"]
    frames = [load_video(path, 5, backend=b).pixels for b in backends]
    upright = load_video(src, 5, backend="pyav").pixels
    assert np.array_equal(frames[0], np.rot90(upright, degrees // 90, axes=(1, 2)))
    assert all(np.array_equal(frames[0], f) for f in frames[1:])


@needs_torchcodec
def test_auto_tries_torchcodec_first(tmp_path):
    path = encode_box_video(tmp_path / "v.mp4", "libx264", CODECS["h264-mp4"][2])
    assert load_video(path, 4).backend == "torchcodec"
    assert media.auto_backends("x.ts")[:2] == ["pyav", "torchcodec"]


NO_B_FRAMES = {"crf": "18", "preset": "veryfast", "g": "12", "bf": "0"}


@needs_torchcodec
@pytest.mark.parametrize("vfr", [False, True])
def test_container_index_stands_in_for_the_scan_without_b_frames(tmp_path, vfr):
    """Without B-frames torchcodec seeks by the mp4's own index (no scan of the file): same pixels as a full
    decode, constant and variable frame rate."""
    path = encode_box_video(tmp_path / "nob.mp4", "libx264", NO_B_FRAMES, vfr=vfr)
    mappings = media.container_frame_mappings(str(path))
    assert mappings is not None and mappings.count('"pts"') == 48
    full = full_decode(path)
    for n in (1, 5, 16, 48):
        got = load_video(path, n, backend="torchcodec")
        assert got.total_frames == 48 and np.array_equal(got.pixels, full[got.indices]), (vfr, n)


@pytest.mark.parametrize("name", ["h264-mp4", "hevc-mp4", "h264-mkv", "h264-ts"])
def test_container_index_is_not_used_where_it_is_not_display_order(tmp_path, name):
    """B-frames (index order is decode order), Matroska cues and MPEG-TS (no per-frame index): torchcodec scans."""
    codec, suffix, options = CODECS[name]
    path = encode_box_video(tmp_path / f"v{suffix}", codec, options)
    assert media.container_frame_mappings(str(path)) is None


@needs_torchcodec
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command to tag rotation")
def test_container_index_path_applies_rotation(tmp_path):
    src = encode_box_video(tmp_path / "src.mp4", "libx264", NO_B_FRAMES)
    path = tmp_path / "rot90.mp4"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(src), "-c", "copy",
                    "-metadata:s:v:0", "rotate=90", str(path)], check=True)
    assert media.container_frame_mappings(str(path)) is not None
    got = load_video(path, 5, backend="torchcodec").pixels
    assert np.array_equal(got, np.rot90(load_video(src, 5, backend="pyav").pixels, 1, axes=(1, 2)))
