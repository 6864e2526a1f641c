"""Decode the vanilla visual input of a sample: the protocol's video frames, or one image.

Which frames are sampled is the run's protocol's rule (`core/protocol.py`): by default N frames at
round(linspace(0, total - 1, N)); Qwen's, lmms-eval's and the ResAdapt paper's protocols sample by
fps or frame count exactly as qwen-vl-utils does. torchcodec (when installed) is tried first, then
decord, then PyAV; all failing turns into a `SampleError`, which the runner records as a per-sample
error. None of them decodes the whole video: each seeks to the keyframe before a sampled frame and
decodes on to it.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from resadapt_eval.core.protocol import InputProtocol, uniform_positions
from resadapt_eval.core.types import Frames, SampleError

#: picks frame numbers from (total frames, average fps)
Chooser = Callable[[int, float], list[int]]


def uniform_indices(total_frames: int, n_frames: int) -> list[int]:
    """min(N, total) frame numbers spread evenly from the first to the last frame."""
    if total_frames < 1:
        raise SampleError("video has no frames")
    return uniform_positions(total_frames, n_frames)


#: frames up to this many pixels decode fastest on one FFmpeg thread (measured on the probes' 112 and 196 px
#: videos: 2-3x faster than two); larger ones on one thread per core (see docs/protocols.md)
_ONE_THREAD_PIXELS = 256 * 256


def container_frame_mappings(path: str) -> str | None:
    """torchcodec's `custom_frame_mappings` (JSON: pts, duration, key_frame per frame) read from the
    container's own index (mp4/mov keep one entry per frame in the moov atom), or None where that index
    cannot stand in for a scan.

    With it torchcodec seeks exactly without first demuxing the whole file (its `exact` mode reads
    every packet: 0.3 s warm, 1.3 s cold on a 10-minute 720p video). It is only used where index
    order is display order: no B-frames (`has_b_frames` false, so pts = dts), one entry per frame,
    timestamps strictly increasing from the stream's start. Elsewhere (B-frames, Matroska cues, MPEG-TS)
    the scan stays.
    """
    return _probe_container(path)[0]


def _probe_container(path: str) -> tuple[str | None, int]:
    """(frame mappings or None, pixels per frame or 0 when unknown), from one PyAV open."""
    try:
        import av
    except ImportError:
        return None, 0
    pixels = 0
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            pixels = int(stream.codec_context.width or 0) * int(stream.codec_context.height or 0)
            if stream.codec_context.has_b_frames:
                return None, pixels
            entries = stream.index_entries
            total = int(stream.frames or 0)
            if total < 1 or len(entries) != total:
                return None, pixels
            pts = [int(e.timestamp) for e in entries]
            keys = [bool(e.is_keyframe) for e in entries]
            if any(e.is_discard for e in entries) or any(b <= a for a, b in zip(pts, pts[1:])):
                return None, pixels
            if pts[0] != int(stream.start_time or 0) or not keys[0]:
                return None, pixels
            last = int(stream.duration) - (pts[-1] - pts[0]) if stream.duration else 0
            durations = [b - a for a, b in zip(pts, pts[1:])] + [last if last > 0 else (pts[-1] - pts[-2] if total > 1 else 1)]
    except (OSError, ValueError, IndexError, av.error.FFmpegError):
        return None, pixels
    frames = ",".join(f'{{"pts":{p},"duration":{d},"key_frame":{int(k)}}}' for p, d, k in zip(pts, durations, keys))
    return '{"frames":[' + frames + "]}", pixels


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity where the OS reports one)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def _ffmpeg_threads(pixels: int) -> int:
    """FFmpeg decoding threads for frames of this size: one for small frames, else one per usable core
    (FFmpeg's own choice, cores + 1, measured 1.2x slower than one per core on 2 cores at 720p)."""
    return 1 if 0 < pixels <= _ONE_THREAD_PIXELS else usable_cores()


def _decode_torchcodec(path: str, choose: Chooser) -> tuple[np.ndarray, list[int], float, int]:
    from torchcodec.decoders import VideoDecoder

    mappings, pixels = _probe_container(path)
    seek = {"custom_frame_mappings": mappings} if mappings else {"seek_mode": "exact"}
    decoder = VideoDecoder(path, dimension_order="NHWC", num_ffmpeg_threads=_ffmpeg_threads(pixels), **seek)
    meta = decoder.metadata
    total = int(meta.num_frames or 0)
    fps = float(meta.average_fps or 0) or 1.0
    idx = choose(total, fps)
    pixels_out = decoder.get_frames_at(indices=idx).data.numpy()
    return pixels_out, idx, fps, total


def _decode_decord(path: str, choose: Chooser) -> tuple[np.ndarray, list[int], float, int]:
    import decord

    reader = decord.VideoReader(path)  # num_threads=0: FFmpeg picks (1 thread measured ~1.3x slower at 720p)
    total = len(reader)
    fps = float(reader.get_avg_fps())
    idx = choose(total, fps)
    pixels = reader.get_batch(idx).asnumpy()
    return pixels, idx, fps, total


def _pyav_open(path: str):
    """(container, stream, fps, total): total from the container, or by demuxing packets when it stores none."""
    import av

    container = av.open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame + slice threads; the frames decoded are the same
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 1.0
        total = int(stream.frames or 0)
        if total <= 0:  # some containers do not store a frame count: count by demuxing (reads packets, no decode)
            total = sum(1 for p in container.demux(stream) if p.size)
            container.seek(0)
    except BaseException:
        container.close()
        raise
    return container, stream, fps, total


def _rgb(frame) -> np.ndarray:
    """A PyAV frame as RGB, turned by its display rotation as torchcodec and decord turn it."""
    pixels = frame.to_ndarray(format="rgb24")
    turns = (int(getattr(frame, "rotation", 0) or 0) // 90) % 4
    return np.ascontiguousarray(np.rot90(pixels, turns)) if turns else pixels


def _scan_frames(container, stream, wanted: set[int]) -> dict[int, np.ndarray]:
    """Full decode from the start: frame k is the k-th frame the decoder returns."""
    got: dict[int, np.ndarray] = {}
    last = max(wanted)
    for i, frame in enumerate(container.decode(stream)):
        if i in wanted:
            got[i] = _rgb(frame)
        if i >= last:
            break
    return got


#: without a keyframe index, a wanted frame at most this many frames ahead is decoded to, not sought
_SEEK_MIN_GAP = 16
#: wanted frames at most this many past the last frame's number (VFR) get the last frame
_END_SLACK = 2


class _NoSeek(Exception):
    """This file cannot be decoded by seeking (no timestamps, or seeks that miss)."""


def _keyframe_indices(stream, total: int) -> list[int] | None:
    """Frame numbers of the keyframes, from the demuxer's index (mp4/mov keep one per frame), else None.

    The k-th index entry (decode order) is frame k for a keyframe of a closed GOP (x264's default).
    Only used to decide between seeking and decoding on; exactness never depends on it.
    """
    try:
        entries = stream.index_entries
        if len(entries) != total:  # e.g. Matroska cues list only some keyframes
            return None
        keys = [k for k, e in enumerate(entries) if e.is_keyframe and not e.is_discard]
    except Exception:
        return None
    return keys if keys and keys[0] == 0 else None


def _seek_frames(container, stream, targets: list[int], total: int) -> dict[int, np.ndarray]:
    """Decode only around the wanted frames (sorted, distinct): seek to the keyframe at or before each,
    decode on to it; a wanted frame in the same GOP, or a few frames on, is decoded to without seeking.

    A frame's number is its pts, measured from the stream's start, in frames of the average rate
    (exact for constant frame rate; approximate for VFR, where the first frame at or after the wanted
    time is taken).
    """
    import bisect
    import itertools
    from fractions import Fraction

    rate = Fraction(stream.average_rate or stream.guessed_rate)
    tb = Fraction(stream.time_base)
    frames_per_tick = tb * rate
    start = stream.start_time
    if start is None:  # no start time stored: take the first frame's
        container.seek(0)
        first = next(container.decode(stream), None)
        if first is None or first.pts is None:
            raise _NoSeek("no timestamps")
        start = first.pts

    def index_of(pts: int | None) -> int:
        if pts is None:
            raise _NoSeek("frame without a timestamp")
        return round((pts - start) * frames_per_tick)

    def pts_at(i: float) -> int:
        return start + int(Fraction(i) / frames_per_tick)

    keys = _keyframe_indices(stream, total)
    got: dict[int, np.ndarray] = {}
    frames = None  # the decoder's frames from the current position on
    cur = -1  # number of the last frame taken from `frames`
    held: tuple[int, Any] | None = None  # that frame, when it lies past what was asked (VFR, gaps)
    seen_key, gop = None, None  # keyframes met while decoding on, when there is no index
    last = None  # the last frame decoded

    def seek(t: int):
        """Frames from a keyframe at or before frame t. Demuxers may land past t (mp4 compares a keyframe's
        decode time with the presentation time asked for; MPEG-TS searches loosely): then seek earlier."""
        target, back, floor = pts_at(t + 0.5), 1, min(start, 0)
        while True:
            container.seek(target, stream=stream, backward=True, any_frame=False)
            it = container.decode(stream)
            first = next(it, None)
            if first is not None and first.key_frame and index_of(first.pts) <= t:
                return itertools.chain([first], it)
            if target <= floor:
                raise _NoSeek(f"seeking does not reach frame {t}")
            if first is not None:
                target = min(target, first.pts)
            target = max(floor, target - max(1, pts_at(back) - start))
            back *= 4

    for t in targets:
        if held is not None and held[0] >= t:
            got[t] = held[1]
            continue
        if frames is None:
            go = True
        elif keys is not None:
            go = keys[bisect.bisect_right(keys, t) - 1] > cur + 1
        elif seen_key is not None and gop is not None and t < seen_key + gop:
            go = False
        else:
            go = t - cur > _SEEK_MIN_GAP
        if go:
            frames, seen_key = seek(t), None
        held = None
        for frame in frames:
            last = frame
            i = index_of(frame.pts)
            if frame.key_frame:
                if seen_key is not None and i > seen_key:
                    gop = i - seen_key
                seen_key = i
            cur = i
            if i >= t:
                held = (i, _rgb(frame))
                got[t] = held[1]
                break
        else:  # the stream ended before t: a VFR stream's last frame may count a little short of total - 1
            if last is None or t - cur > _END_SLACK:
                break  # the rest are missing (a cut file)
            held = (t, _rgb(last))
            got[t] = held[1]
    return got


def _decode_pyav(path: str, choose: Chooser, seek: bool = True) -> tuple[np.ndarray, list[int], float, int]:
    """PyAV: seek to the sampled frames (or, with seek=False or without timestamps, decode all up to the last)."""
    container, stream, fps, total = _pyav_open(path)
    with container:
        idx = choose(total, fps)
        got = None
        if seek and (stream.average_rate or stream.guessed_rate) and stream.time_base:
            try:
                got = _seek_frames(container, stream, sorted(set(idx)), total)
            except _NoSeek:  # no usable timestamps, or seeking misses: decode from the start instead
                got = None
        if got is None:
            container.seek(0)
            got = _scan_frames(container, stream, set(idx))
    missing = [i for i in idx if i not in got]
    if missing:
        raise SampleError(f"only {len(idx) - len(missing)} of {len(idx)} frames decodable")
    return np.stack([got[i] for i in idx]), idx, fps, total


def _decode_pyav_scan(path: str, choose: Chooser) -> tuple[np.ndarray, list[int], float, int]:
    return _decode_pyav(path, choose, seek=False)


_BACKENDS = {"torchcodec": _decode_torchcodec, "decord": _decode_decord, "pyav": _decode_pyav,
             "pyav-scan": _decode_pyav_scan}


@functools.lru_cache(maxsize=1)
def have_torchcodec() -> bool:
    """torchcodec is optional: it needs the torch it was built for and the system's FFmpeg libraries
    (`apt-get install ffmpeg`); without them `auto` goes on with decord and PyAV."""
    if importlib.util.find_spec("torchcodec") is None:
        return False
    try:
        from torchcodec._core import ops  # fails beside a torch it was not built for
    except Exception:
        return False
    return bool(getattr(ops, "_FFMPEG_AVAILABLE", True))


def auto_backends(path: str) -> list[str]:
    """The decoders `auto` tries, in order: torchcodec (when installed), decord, PyAV.

    MPEG transport streams go to PyAV first: torchcodec and decord both land on wrong frames there
    (measured, tests/test_decoders.py). torchcodec comes before decord elsewhere because decord lands
    a frame off on HEVC with B-frames (same test file).
    """
    codec = ["torchcodec"] if have_torchcodec() else []
    if path.lower().endswith(PYAV_FIRST):
        return ["pyav", *codec, "decord"]
    return [*codec, "decord", "pyav"]


# decord prefixes its messages with the wall-clock time and its source location
# ("[20:05:15] /github/workspace/src/video/ffmpeg/threaded_decoder.cc:292: "), which would make the
# error records of one corrupt file differ from run to run (and from a resumed run).
_DECORD_PREFIX = re.compile(r"\[\d{1,2}:\d{2}:\d{2}\] [^\s:]+:\d+: ")


def _decoder_message(e: Exception) -> str:
    """The first line of a decoder's message, without decord's time and source-location prefixes."""
    text = str(e).splitlines()[0] if str(e) else ""
    return _DECORD_PREFIX.sub("", text).strip()


PYAV_FIRST = (".ts", ".m2ts", ".mts")  # containers where decord's and torchcodec's seeking land on wrong frames


def load_video(path: str | os.PathLike, n_frames: int, backend: str = "auto",
               protocol: InputProtocol | None = None) -> Frames:
    """Decode the frames a protocol samples (default: `n_frames` uniformly) with their timestamps.

    Every backend decodes only around the sampled frames (seek to the keyframe before each, decode on);
    `backend="pyav-scan"` is the plain PyAV decode of every frame up to the last one, for comparison.
    `auto` tries torchcodec (when installed), then decord, then PyAV; MPEG transport streams go to PyAV
    before decord, which returns wrong frames on them (measured).
    """
    path = str(path)
    if not os.path.isfile(path):
        raise SampleError(f"video not found: {path}")
    if os.path.getsize(path) == 0:
        raise SampleError(f"video is an empty file: {path}")
    backends = auto_backends(path) if backend == "auto" else [backend]
    if any(b not in _BACKENDS for b in backends):
        raise ValueError(f"unknown video backend {backend!r}; use auto, {', '.join(_BACKENDS)}")
    if protocol is not None and protocol.sampling != "fixed":
        choose: Chooser = protocol.frame_indices
    else:
        def choose(total: int, _fps: float) -> list[int]:
            return uniform_indices(total, n_frames)
    errors = []
    start = time.perf_counter()
    for name in backends:
        try:
            pixels, idx, fps, total = _BACKENDS[name](path, choose)
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


def load_frames(kind: str, media: Any, n_frames: int, protocol: InputProtocol | None = None) -> Frames:
    """The vanilla visual input of a sample."""
    if kind == "video":
        return load_video(media, n_frames, protocol=protocol)
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

    def load(self, kind: str, media: Any, n_frames: int,
             protocol: InputProtocol | None = None) -> tuple[Frames, bool]:
        """(frames, whether they came from the cache)."""
        if not isinstance(media, (str, os.PathLike)):
            return load_frames(kind, media, n_frames, protocol), False
        key = (kind, str(media), n_frames, protocol)
        if key in self.items:
            self.items.move_to_end(key)
            self.hits += 1
            return self.items[key], True
        self.misses += 1
        frames = load_frames(kind, media, n_frames, protocol)
        size = frames.pixels.nbytes
        if size <= self.max_bytes:
            self.items[key] = frames
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, old = self.items.popitem(last=False)
                self.bytes -= old.pixels.nbytes
        return frames, False
