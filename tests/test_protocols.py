"""Reference protocols against their oracle, qwen-vl-utils 0.0.14's `fetch_video`.

Two layers: (1) 600 generated cases per backbone family (1 s to 2 h, 10 to 60 fps, 64 px to 4K,
portrait and landscape, clips of a few frames) drive `fetch_video` itself with a decoder that
reports each case's metadata instead of pixels and a resize that keeps only the shape, so the
oracle's own frame-count, index and pixel-cap code decides; (2) real encoded videos go through
`fetch_video` with its real decoder and through our `load_video`, and the frame numbers and sizes
must agree there too.
"""

from __future__ import annotations

import json
import zlib
import math
import random

import pytest
import torch

from resadapt_eval.core import protocol as P
from resadapt_eval.core.types import SampleError

vp = pytest.importorskip("qwen_vl_utils.vision_process")

FAMILIES = {"qwen2_5_vl": 14, "qwen3_vl": 16}  # patch size; the factor is twice it


def _lmms_ele(proto: P.InputProtocol) -> dict:
    """The video entry lmms-eval 0.7.3's chat wrappers hand to qwen-vl-utils (fps unset)."""
    return {"min_pixels": proto.min_pixels, "max_pixels": proto.max_pixels}


def _ele(proto: P.InputProtocol, total: int) -> dict:
    """The fetch_video arguments a protocol stands for (what the reference passes)."""
    if proto.name == "qwen":
        return {} if proto.max_frames in (None, P.FPS_MAX_FRAMES) else {"max_frames": proto.max_frames}
    if proto.name == "resadapt-paper":
        return {"max_pixels": proto.max_pixels, "min_pixels": proto.min_pixels, "max_frames": proto.max_frames,
                "total_pixels": proto.total_pixels}
    if proto.name == "lmms-eval":
        # the wrapper's own frame-count choice is checked against its code in test_lmms_nframes_golden
        return {**_lmms_ele(proto), "nframes": proto.frame_count(total, 30.0)}
    raise AssertionError(proto.name)


@pytest.fixture
def metadata_oracle(monkeypatch):
    """fetch_video on a stated (total, fps, h, w): its decoders' index rule on the metadata, no pixels."""
    case = {}

    def meta_reader(ele):
        total, fps, h, w = case["v"]
        start, end, total = vp.calculate_video_frame_range(ele, total, fps)  # as the decord/torchcodec readers
        try:
            n = vp.smart_nframes(ele, total_frames=total, video_fps=fps)
        except ValueError as e:  # fetch_video would retry with torchvision: refuse there too
            case["refused"] = e
            raise
        idx = torch.linspace(start, end, n).round().long().tolist()
        return torch.empty((n, 3, h, w), device="meta"), {"frames_indices": idx}, n / total * fps

    def shape_only_resize(video, size, **_):
        return torch.empty((video.shape[0], video.shape[1], *size), device="meta")

    def refuse_again(ele):
        raise case["refused"]

    monkeypatch.setitem(vp.VIDEO_READER_BACKENDS, "meta", meta_reader)
    monkeypatch.setitem(vp.VIDEO_READER_BACKENDS, "torchvision", refuse_again)
    monkeypatch.setattr(vp, "get_video_reader_backend", lambda: "meta")
    monkeypatch.setattr(vp.transforms.functional, "resize", shape_only_resize)

    def run(ele, patch, total, fps, h, w):
        case["v"] = (total, fps, h, w)
        video, meta = vp.fetch_video({"video": "case", **ele}, image_patch_size=patch, return_video_metadata=True)
        return list(meta["frames_indices"]), tuple(video.shape[2:])
    return run


def _cases(n: int, seed: int):
    rng = random.Random(seed)
    fps_choices = [10, 12, 15, 23.976, 24, 25, 29.97, 30, 48, 50, 59.94, 60]
    for k in range(n):
        fps = rng.choice(fps_choices) if k % 3 else rng.uniform(10, 60)  # a third are odd (VFR averages)
        if k % 10 == 0:
            total = rng.randint(1, 9)                                       # a few frames
        else:
            total = max(1, round(math.exp(rng.uniform(0, math.log(7200))) * fps))  # 1 s .. 2 h
        short = rng.randint(64, 2160)
        long = min(3840, int(short * rng.uniform(1.0, 2.4)))
        h, w = (long, short) if k % 4 == 1 else (short, long)                 # a quarter portrait
        yield total, fps, h, w


PROTOCOL_SETUPS = [("qwen", None), ("resadapt-paper", 32), ("resadapt-paper", 128), ("lmms-eval", 32),
                   ("lmms-eval", 16)]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name,frames", PROTOCOL_SETUPS)
def test_indices_sizes_and_tokens_equal_fetch_video(metadata_oracle, family, name, frames):
    proto = P.resolve(name, family, frames)
    patch = FAMILIES[family]
    factor = 2 * patch
    compared = refused = 0
    for total, fps, h, w in _cases(600, seed=zlib.crc32(f"{family}{name}{frames}".encode())):
        try:
            ours = proto.frame_indices(total, fps)
            ours_hw = proto.frame_size(factor, h, w, len(ours))
        except SampleError:
            ours = None
        try:
            ele = _ele(proto, total)
            theirs, their_hw = metadata_oracle(ele, patch, total, fps, h, w)
        except (ValueError, SampleError):
            theirs = None
        if ours is None or theirs is None:
            assert ours is None and theirs is None, (total, fps, h, w, ours, theirs)
            refused += 1
            continue
        assert ours == theirs, (total, fps)
        assert ours_hw == their_hw, (total, fps, h, w)
        chunks = -(-len(ours) // 2)
        assert chunks * (ours_hw[0] // factor) * (ours_hw[1] // factor) == \
            chunks * (their_hw[0] // factor) * (their_hw[1] // factor)
        compared += 1
    assert compared >= 500, (compared, refused)


def test_paper_protocol_caps_chunks_and_videos():
    """At 128 frames the paper's layout gives at most 768 tokens per chunk and 16,384 per video."""
    for family, patch in FAMILIES.items():
        factor = 2 * patch
        proto = P.resolve("resadapt-paper", family, 128)
        for total, fps, h, w in _cases(300, seed=7):
            try:
                n = proto.frame_count(total, fps)
            except SampleError:
                continue
            hh, ww = proto.frame_size(factor, h, w, n)
            per_chunk = (hh // factor) * (ww // factor)
            assert per_chunk <= 768
            assert n <= 128 and -(-n // 2) * per_chunk <= 16384


def test_lmms_nframes_golden():
    """lmms-eval 0.7.3's chat wrappers' frame-count choice, against goldens made from its own code
    (tests/data/lmms_eval_nframes.json; provenance in tests/data/README.md)."""
    from pathlib import Path

    golden = json.loads((Path(__file__).parent / "data" / "lmms_eval_nframes.json").read_text())
    for row in golden["cases"]:
        proto = P.resolve("lmms-eval", row["family"], row["max_num_frames"])
        try:
            got = proto.frame_count(row["total_frames"], 30.0)
        except SampleError:
            got = None
        want = row["nframes"]
        if want is not None and not (2 <= want <= row["total_frames"]):
            want = None  # qwen-vl-utils refuses what the wrapper asked for
        assert got == want, row
        assert (row["min_pixels"], row["max_pixels"]) == (proto.min_pixels, proto.max_pixels)
        assert row["fps"] is None and proto.sampling == "nframes"


def test_fixed_protocol_is_todays_rule():
    proto = P.resolve("fixed", "qwen2_5_vl", 8)
    assert proto.frame_indices(100, 30.0) == [round(x) for x in [0, 14.142857, 28.285714, 42.428571, 56.571429,
                                                                 70.714286, 84.857143, 99]]
    assert proto.frame_indices(3, 30.0) == [0, 1, 2]
    with pytest.raises(SampleError):
        proto.frame_indices(0, 30.0)


def test_unknown_protocol_is_a_one_line_user_error():
    from resadapt_eval.core.types import UserError

    with pytest.raises(UserError, match="known: fixed, qwen, lmms-eval, resadapt-paper"):
        P.resolve("qwen3", "qwen2_5_vl")
