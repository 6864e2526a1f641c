"""Reference input protocols: which frames vanilla samples, at which sizes, and where text resumes.

"Vanilla" is what every budget is a fraction of, so it must be the input a published number was
measured on. Each named protocol fixes all of it at once:

- `fixed`: N frames, `round(linspace(0, total-1, min(N, total)))`, sized by the backbone's own
  processor caps (the harness's default; N from --frames or the task card).
- `qwen`: qwen-vl-utils' `fetch_video` defaults, as Qwen's own evaluation uses them: 2 fps with
  4..768 frames, rounded to the temporal patch, and a per-frame pixel cap derived from a total
  pixel budget for the whole video (per backbone family: the factor is 28 or 32).
- `lmms-eval`: lmms-eval 0.7.3's Qwen chat wrappers, quirks included (see `docs/protocols.md`).
- `resadapt-paper`: the ResAdapt paper's evaluation: `fetch_video` at 2 fps capped at
  `max_frame_num` (--frames, 32 or 128), 602,112 px per frame (768 tokens per chunk on Qwen2.5-VL)
  and at most 16,384 video tokens.

The frame count and size rules below are qwen-vl-utils 0.0.14's (`smart_nframes`,
`smart_resize`, and the pixel clamp inside `fetch_video`), ported because the clamp has no
function of its own; tests hold them equal to the library on generated cases.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch

from resadapt_eval.core.types import SampleError, UserError

# qwen-vl-utils 0.0.14 constants (vision_process.py)
FRAME_FACTOR = 2
FPS = 2.0
FPS_MIN_FRAMES = 4
FPS_MAX_FRAMES = 768
VIDEO_MIN_TOKEN_NUM = 128
VIDEO_MAX_TOKEN_NUM = 768
MODEL_SEQ_LEN = 128000
MAX_RATIO = 200

Sampling = Literal["fixed", "fps", "nframes"]
Sizing = Literal["processor", "qwen-vl-utils"]


@dataclass(frozen=True)
class InputProtocol:
    """One reference protocol, resolved for a backbone family (all sizes in pixels)."""

    name: str
    sampling: Sampling
    sizing: Sizing
    text_resume: str = "max+1"
    fps: float = FPS
    min_frames: int = FPS_MIN_FRAMES
    max_frames: int | None = None       # fps sampling: cap (None: min(768, total)); from --frames
    nframes: int | None = None          # nframes sampling: the frame count asked for; from --frames
    nframes_cap_to_video: bool = True   # lmms-eval's Qwen2.5-VL wrapper caps nframes to the video
    min_pixels: int | None = None       # per-frame floor (None: 128 tokens' worth)
    max_pixels: int | None = None       # requested per-frame cap (clamped as fetch_video clamps it)
    total_pixels: int | None = None     # per-video budget (None: qwen-vl-utils' MODEL_SEQ_LEN default)
    default_frames: int | None = None   # the frame cap when neither --frames nor the card sets one

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    # -- frames ------------------------------------------------------------------------------

    def frame_count(self, total_frames: int, video_fps: float) -> int:
        """How many frames the protocol samples from a video of `total_frames` at `video_fps`."""
        if total_frames < 1:
            raise SampleError("video has no frames")
        if self.sampling == "fixed":
            return max(1, min(self.nframes or 1, total_frames))
        if self.sampling == "nframes":
            asked = int(self.nframes or 32)
            if self.nframes_cap_to_video:  # lmms-eval: min(max_num_frames, len(vr)), floored even, >= 2
                asked = max(2, min(asked, total_frames) // 2 * 2)
            n = round_by_factor(asked, FRAME_FACTOR)
        else:
            n = smart_nframes_fps(total_frames, video_fps, self.fps, self.min_frames, self.max_frames)
        if not (FRAME_FACTOR <= n <= total_frames):
            raise SampleError(f"{self.name} protocol: {n} frames asked of a video with {total_frames} "
                              f"(qwen-vl-utils needs {FRAME_FACTOR} <= frames <= total)")
        return n

    def frame_indices(self, total_frames: int, video_fps: float) -> list[int]:
        """Frame numbers to decode, spread evenly from the first to the last frame."""
        n = self.frame_count(total_frames, video_fps)
        if self.sampling == "fixed":
            return uniform_positions(total_frames, n)
        # qwen-vl-utils: torch.linspace (float32) rounded half to even
        return torch.linspace(0, total_frames - 1, n).round().long().tolist()

    # -- sizes -------------------------------------------------------------------------------

    def frame_size(self, factor: int, height: int, width: int, n_frames: int) -> tuple[int, int]:
        """The (h, w) fetch_video resizes every frame of an n-frame video to (qwen-vl-utils sizing)."""
        min_pixels = self.min_pixels if self.min_pixels is not None else VIDEO_MIN_TOKEN_NUM * factor * factor
        total = self.total_pixels if self.total_pixels is not None else MODEL_SEQ_LEN * factor * factor * 0.9
        max_pixels = max(min(VIDEO_MAX_TOKEN_NUM * factor * factor, total / n_frames * FRAME_FACTOR),
                         int(min_pixels * 1.05))
        if self.max_pixels is not None:
            max_pixels = min(self.max_pixels, max_pixels)
        return qwen_smart_resize(height, width, factor, min_pixels, max_pixels)


def uniform_positions(n_total: int, n_keep: int) -> list[int]:
    """n_keep positions spread evenly over range(n_total), first and last included (`fixed`'s rule).

    The same rule picks a video's frames and a strategy's frame subset.
    """
    n_keep = max(1, min(n_keep, n_total))
    return [int(round(x)) for x in np.linspace(0, n_total - 1, n_keep)]


def round_by_factor(number: float, factor: int) -> int:
    return round(number / factor) * factor


def ceil_by_factor(number: float, factor: int) -> int:
    return math.ceil(number / factor) * factor


def floor_by_factor(number: float, factor: int) -> int:
    return math.floor(number / factor) * factor


def smart_nframes_fps(total_frames: int, video_fps: float, fps: float = FPS, min_frames: int = FPS_MIN_FRAMES,
                      max_frames: int | None = None) -> int:
    """qwen-vl-utils' fps path: duration x fps, clamped to [min, max] and the video, floored to even."""
    lo = ceil_by_factor(min_frames, FRAME_FACTOR)
    hi = floor_by_factor(max_frames if max_frames is not None else min(FPS_MAX_FRAMES, total_frames), FRAME_FACTOR)
    n = total_frames / video_fps * fps
    n = min(min(max(n, lo), hi), total_frames)
    return floor_by_factor(n, FRAME_FACTOR)


def qwen_smart_resize(height: int, width: int, factor: int, min_pixels: float, max_pixels: float) -> tuple[int, int]:
    """qwen-vl-utils' smart_resize: sides to multiples of factor (at least one), area in [min, max]."""
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise SampleError(f"aspect ratio {max(height, width) / min(height, width):.0f} is over {MAX_RATIO}")
    h_bar = max(factor, round_by_factor(height, factor))
    w_bar = max(factor, round_by_factor(width, factor))
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = floor_by_factor(height / beta, factor)
        w_bar = floor_by_factor(width / beta, factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = ceil_by_factor(height * beta, factor)
        w_bar = ceil_by_factor(width * beta, factor)
    return h_bar, w_bar


# -- the named protocols ---------------------------------------------------------------------

PROTOCOLS = ("fixed", "qwen", "lmms-eval", "resadapt-paper")

# lmms-eval 0.7.3 Qwen wrappers' constructor defaults (models/simple/qwen2_5_vl.py, qwen3_vl.py):
# min_pixels=256*28*28 (also on Qwen3-VL, whose factor is 32), max_pixels=1605632, max_num_frames=32.
LMMS_MIN_PIXELS = 256 * 28 * 28
LMMS_MAX_PIXELS = 1605632
LMMS_MAX_NUM_FRAMES = 32
PAPER_MAX_PIXELS = 768 * 28 * 28        # eval.sh's video_max_pixels (602,112)
PAPER_MAX_VIDEO_TOKENS = 16384          # the paper's video token ceiling
PAPER_FRAMES = 32                       # max_frame_num of the main tables (also 128)


def resolve(name: str, family: str, frames: int | None = None) -> InputProtocol:
    """The protocol `name` for a backbone family ("qwen2_5_vl" or "qwen3_vl"); `frames` is --frames.

    For `fixed` and `lmms-eval`, frames is the frame count; for `qwen` and `resadapt-paper` it caps
    the fps-based count (max_frames / max_frame_num).
    """
    if name == "fixed":
        return InputProtocol("fixed", "fixed", "processor", nframes=frames)
    if name == "qwen":
        return InputProtocol("qwen", "fps", "qwen-vl-utils", max_frames=frames, default_frames=None)
    if name == "lmms-eval":
        # Qwen2.5-VL chat: nframes = min(32, len(vr)) floored even; Qwen3-VL chat asks for 32 whatever
        # the video's length, and transformers 5.x resumes text positions at anchor + max(H, W).
        return InputProtocol("lmms-eval", "nframes", "qwen-vl-utils", text_resume="hf",
                             nframes=frames or LMMS_MAX_NUM_FRAMES, nframes_cap_to_video=family != "qwen3_vl",
                             min_pixels=LMMS_MIN_PIXELS, max_pixels=LMMS_MAX_PIXELS,
                             default_frames=LMMS_MAX_NUM_FRAMES)
    if name == "resadapt-paper":
        # fetch_video(max_pixels=602112, min_pixels=28, max_frames=max_frame_num) at the default 2 fps;
        # the 16,384-token ceiling is a total pixel budget (tokens x factor^2) over the whole video.
        factor = 32 if family == "qwen3_vl" else 28
        return InputProtocol("resadapt-paper", "fps", "qwen-vl-utils", max_frames=frames or PAPER_FRAMES,
                             min_pixels=28, max_pixels=PAPER_MAX_PIXELS,
                             total_pixels=PAPER_MAX_VIDEO_TOKENS * factor * factor, default_frames=PAPER_FRAMES)
    raise UserError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}")
