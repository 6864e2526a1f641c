"""Geometry, exact visual-token accounting, budget parsing and budget solving.

Everything here is pure arithmetic on sizes: no model is needed to know how many visual tokens a
plan costs, so budgets are solved exactly before anything runs. The resize rules are the
processors' own (`smart_resize` from transformers), so our counts equal the processors' `grid_thw`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as _resize_per_frame
from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize as _resize_per_clip

from resadapt_eval.core.types import MediaKind, UserError

Family = Literal["qwen2_5_vl", "qwen3_vl"]


@dataclass(frozen=True)
class Geometry:
    """How a backbone turns pixels into visual tokens, read from its processor (never hard-coded).

    Qwen2.5-VL bounds video pixels per frame; Qwen3-VL bounds them over the whole clip (T·H·W).
    `floor_tokens` is the smallest chunk a strategy may plan (2x2 merged tokens, i.e. the
    processors' classic 56x56 minimum on Qwen2.5-VL).
    """

    family: Family
    patch_size: int
    merge_size: int
    temporal_patch_size: int
    image_min_pixels: int
    image_max_pixels: int
    video_min_pixels: int
    video_max_pixels: int
    cap_pixels_per_frame: bool = False
    max_video_tokens: int = 128000
    tokens_per_second: float = 2.0
    floor_tokens: int = 4

    @property
    def factor(self) -> int:
        """Pixels per side of one merged visual token: 28 on Qwen2.5-VL, 32 on Qwen3-VL."""
        return self.patch_size * self.merge_size

    @classmethod
    def from_processor(cls, processor: Any, config: Any = None, **overrides: Any) -> "Geometry":
        """Read the geometry from a transformers Qwen-VL processor (and the model config if given)."""
        ip, vp = processor.image_processor, processor.video_processor
        name = type(vp).__name__.lower()
        family: Family = "qwen3_vl" if "qwen3" in name else "qwen2_5_vl"
        tps = 2.0
        if config is not None:
            vc = getattr(config, "vision_config", None)
            tps = float(getattr(vc, "tokens_per_second", tps) or tps)
        values = dict(
            family=family,
            patch_size=int(vp.patch_size),
            merge_size=int(vp.merge_size),
            temporal_patch_size=int(vp.temporal_patch_size),
            image_min_pixels=int(ip.size["shortest_edge"]),
            image_max_pixels=int(ip.size["longest_edge"]),
            video_min_pixels=int(vp.size["shortest_edge"]),
            video_max_pixels=int(vp.size["longest_edge"]),
            cap_pixels_per_frame=bool(getattr(vp, "cap_pixels_per_frame", False) or False),
            max_video_tokens=int(getattr(vp, "max_video_tokens", 128000) or 128000),
            tokens_per_second=tps,
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    # -- sizes -------------------------------------------------------------------------------

    def _video_max_pixels(self, n_frames: int) -> int:
        """The effective pixel bound the video processor applies for a clip of n_frames."""
        f = self.factor
        if self.family == "qwen3_vl":
            if not self.cap_pixels_per_frame:
                return self.video_max_pixels
            per_frame = max(min(self.max_video_tokens * f * f, self.video_max_pixels // n_frames),
                            int(self.video_min_pixels * 1.05))
            return per_frame * n_frames
        if not self.cap_pixels_per_frame:
            return self.video_max_pixels
        total = int(self.max_video_tokens * f * f * 0.9)
        return max(min(self.video_max_pixels, total * self.temporal_patch_size // n_frames),
                   int(self.video_min_pixels * 1.05))

    def vanilla_size(self, kind: MediaKind, height: int, width: int, n_frames: int = 1) -> tuple[int, int]:
        """The (h, w) the backbone's own processor gives a native frame (or image): the reference."""
        f = self.factor
        if kind == "image":
            return _resize_per_frame(height, width, factor=f, min_pixels=self.image_min_pixels,
                                     max_pixels=self.image_max_pixels)
        max_px = self._video_max_pixels(n_frames)
        if self.family == "qwen3_vl":
            return _resize_per_clip(max(n_frames, self.temporal_patch_size), height, width,
                                    temporal_factor=self.temporal_patch_size, factor=f,
                                    min_pixels=self.video_min_pixels, max_pixels=max_px)
        return _resize_per_frame(height, width, factor=f, min_pixels=self.video_min_pixels, max_pixels=max_px)

    def scaled_size(self, kind: MediaKind, vanilla_hw: tuple[int, int], scale: float,
                    cap_pixels: int | None = None) -> tuple[int, int]:
        """Resize each side of the vanilla size by `scale` and snap to the geometry (ResAdapt's operator).

        Sides are floored to the patch size, rounded to multiples of the factor, kept at least
        `floor_tokens` and at most `cap_pixels` (default: the vanilla area when scale <= 1, the
        backbone's per-frame maximum otherwise).
        """
        vh, vw = vanilla_hw
        f = self.factor
        h = max(self.patch_size, int(vh * scale))
        w = max(self.patch_size, int(vw * scale))
        if cap_pixels is None:
            cap_pixels = vh * vw if scale <= 1 else max(vh * vw, self.chunk_cap_pixels(kind))
        return _resize_per_frame(h, w, factor=f, min_pixels=self.floor_tokens * f * f,
                                 max_pixels=max(cap_pixels, self.floor_tokens * f * f))

    def chunk_cap_pixels(self, kind: MediaKind) -> int:
        """The largest (h·w) one chunk (or image) may have when a strategy upscales."""
        if kind == "image":
            return self.image_max_pixels
        if self.family == "qwen3_vl":
            return self.video_max_pixels // self.temporal_patch_size
        return self.video_max_pixels

    # -- tokens ------------------------------------------------------------------------------

    def tokens_per_chunk(self, height: int, width: int) -> int:
        """Merged visual tokens of one chunk (or image) of size (height, width)."""
        f = self.factor
        if height % f or width % f:
            raise ValueError(f"chunk size {height}x{width} is not a multiple of {f}")
        return (height // f) * (width // f)

    def encoder_patches(self, height: int, width: int) -> int:
        """Vision-encoder patches of one chunk (each patch spans temporal_patch_size frames)."""
        return (height // self.patch_size) * (width // self.patch_size)

    def n_chunks(self, n_frames: int) -> int:
        return -(-n_frames // self.temporal_patch_size)

    def vanilla_tokens(self, kind: MediaKind, height: int, width: int, n_frames: int = 1) -> int:
        """Exact visual tokens of the vanilla input: N frames (or one image) at processor resolution."""
        h, w = self.vanilla_size(kind, height, width, n_frames)
        chunks = 1 if kind == "image" else self.n_chunks(n_frames)
        return chunks * self.tokens_per_chunk(h, w)


# -- budgets ---------------------------------------------------------------------------------

_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"


@dataclass(frozen=True)
class Budget:
    """A visual-token budget for one sample.

    Either a fraction of a reference (vanilla at the sampled frame count, or vanilla at
    `ref_frames` frames) or an absolute token count.
    """

    fraction: float | None = None
    tokens: int | None = None
    ref_frames: int | None = None

    @property
    def label(self) -> str:
        """The budget part of a results directory name: b0.25, bt4096, b1r8."""
        if self.tokens is not None:
            return f"t{self.tokens}"
        text = f"{self.fraction:g}"
        return text + (f"r{self.ref_frames}" if self.ref_frames else "")

    def limit(self, vanilla_tokens: int, reference_tokens: int | None = None) -> int:
        """The most visual tokens a plan may use, given vanilla (and reference) tokens of the sample."""
        if self.tokens is not None:
            return self.tokens
        ref = vanilla_tokens if reference_tokens is None else reference_tokens
        return int(math.floor(self.fraction * ref + 1e-9))

    def to_dict(self) -> dict[str, Any]:
        return {"fraction": self.fraction, "tokens": self.tokens, "ref_frames": self.ref_frames}


def parse_budget(text: str | float, ref_frames: int | None = None) -> Budget:
    """Parse `0.25`, `25%` or `tokens=4096` (optionally relative to vanilla at `ref_frames`)."""
    raw = str(text).strip().lower().replace(" ", "")
    if ref_frames is not None and ref_frames < 1:
        raise UserError(f"--budget-at-frames must be a positive frame count, got {ref_frames}")
    m = re.fullmatch(r"tokens=(\d+)", raw)
    if m:
        tokens = int(m.group(1))
        if tokens < 1:
            raise UserError("budget tokens=N needs N >= 1")
        if ref_frames is not None:
            raise UserError("--budget-at-frames applies to fractional budgets, not tokens=N")
        return Budget(tokens=tokens)
    m = re.fullmatch(_NUMBER + r"(%?)", raw)
    if not m:
        raise UserError(f"cannot read budget {text!r}: use a fraction like 0.25, a percentage like 25%, "
                        "or an absolute count like tokens=4096")
    value = float(m.group(1)) / (100.0 if m.group(2) else 1.0)
    if not 0.0 < value <= 1.0:
        raise UserError(f"budget {text!r} is outside (0, 1]: give the share of vanilla tokens a plan may use")
    return Budget(fraction=value, ref_frames=ref_frames)


# -- solvers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScaleSolution:
    scale: float
    height: int
    width: int
    tokens: int
    feasible: bool


def solve_uniform_scale(geometry: Geometry, kind: MediaKind, vanilla_hw: tuple[int, int], n_chunks: int,
                        limit: int) -> ScaleSolution:
    """The largest per-side scale s <= 1 whose exact token count fits `limit` (ResAdapt's FixedScale).

    Token count is a step function of s that changes only where a rounded side changes, so trying
    every breakpoint of both sides finds the exact optimum.
    """
    vh, vw = vanilla_hw
    f = geometry.factor
    candidates = {1.0}
    for side in (vh, vw):
        for k in range(1, side // f + 1):
            # the floored side m = int(side * s) where round(m / f) can step up to k (ties round to even)
            for m in (math.ceil((k - 0.5) * f), math.ceil((k - 0.5) * f) + 1):
                if m < side:
                    candidates.add((m + 0.5) / side)
    best: ScaleSolution | None = None
    smallest: ScaleSolution | None = None
    for s in sorted(candidates):
        h, w = geometry.scaled_size(kind, vanilla_hw, s)
        tokens = n_chunks * geometry.tokens_per_chunk(h, w)
        sol = ScaleSolution(s, h, w, tokens, tokens <= limit)
        if smallest is None or tokens < smallest.tokens:
            smallest = sol
        if tokens <= limit:
            best = sol
    if best is not None:
        return best
    assert smallest is not None
    return ScaleSolution(smallest.scale, smallest.height, smallest.width, smallest.tokens, False)


def solve_frame_count(tokens_per_chunk: int, n_frames: int, temporal_patch_size: int, limit: int) -> tuple[int, bool]:
    """The most frames (whole chunks, at most n_frames) whose tokens fit `limit`; at least one chunk."""
    max_chunks = -(-n_frames // temporal_patch_size)
    chunks = min(max_chunks, limit // max(tokens_per_chunk, 1))
    if chunks >= max_chunks:
        return n_frames, True
    if chunks < 1:
        return min(temporal_patch_size, n_frames), False
    return chunks * temporal_patch_size, True
