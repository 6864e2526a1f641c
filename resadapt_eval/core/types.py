"""The small typed objects that travel between the stages of an evaluation.

task adapter --Sample--> media loader --Frames--> strategy --Plan--> backbone --Output--> scorer

Each stage knows only its neighbours' types; nothing reaches back up the chain.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

MediaKind = Literal["video", "image"]


class UserError(Exception):
    """Bad input from the user (CLI argument, config, data location): one line, exit code 2."""


class DiskFull(Exception):
    """The disk filled up while results were written (ENOSPC, EDQUOT): one line naming the path and how
    to resume, exit code 1. Everything written before is intact; a rerun resumes from it."""

    def __init__(self, path: Any):
        self.path = path
        super().__init__(f"no space left on the device while writing {path}; the records written so far are "
                         f"kept: free space there, or move the results root to a larger disk and pass it as --out, "
                         f"then rerun the same command to resume")


class SampleError(Exception):
    """One sample cannot be evaluated (missing or corrupt media, bad row): becomes an error record."""


@dataclass(frozen=True)
class Sample:
    """One benchmark question, as the task adapter reads it; no media decoded yet.

    `media` is a video file path, an image file path, or an in-memory PIL image (MathVista parquet).
    `meta` holds the fields that breakdowns group by (duration, domain, ...) and anything the
    scorer needs besides `target`.
    """

    id: str
    prompt: str
    media_kind: MediaKind
    media: Any
    target: Any
    meta: dict[str, Any] = field(default_factory=dict)
    question: str = ""  # the question alone (no template, options or media): what a question-aware planner reads


@dataclass
class Frames:
    """Decoded visual input at native resolution: N uniformly sampled video frames, or one image.

    `pixels` is uint8 (N, H, W, 3). `indices` are frame numbers in the source video and
    `timestamps` their times in seconds (both [0] and [0.0] for an image).
    """

    kind: MediaKind
    pixels: np.ndarray
    indices: list[int]
    timestamps: list[float]
    fps: float
    total_frames: int
    decode_s: float = 0.0
    backend: str = ""

    @property
    def height(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[2])

    @property
    def count(self) -> int:
        return int(self.pixels.shape[0])


@dataclass(frozen=True)
class Chunk:
    """`temporal_patch_size` consecutive planned frames (one for an image) sharing one resolution.

    `frames` are positions into `Frames.pixels`; `height`/`width` are multiples of the geometry
    factor; `start_s` is the chunk's time offset from the first planned chunk, which drives the
    temporal M-RoPE position.
    """

    frames: tuple[int, ...]
    height: int
    width: int
    start_s: float = 0.0


@dataclass(frozen=True)
class Reduction:
    """An optional token-reduction step applied to merged visual tokens.

    `layer` 0 means before the first LLM layer (FastV: after layer K-1). `keep` is the exact number
    of visual tokens kept; for a staged in-LLM method (pyramiddrop) it is the mean over the layers
    that prune, and `params` holds its schedule. Which methods run inside the LLM is
    `backbones.reduction.IN_LLM_METHODS`.
    """

    method: str
    keep: int
    layer: int = 0
    seed: int = 0
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """What a strategy decides for one sample: the only thing a backbone receives.

    Token accounting is a pure function of the plan and the geometry (`budget.plan_tokens`), so
    `tokens` is known before any model runs; the backbone reports the count it actually fed.
    """

    kind: MediaKind
    chunks: tuple[Chunk, ...]
    tokens: int
    vanilla_tokens: int
    limit: int
    feasible: bool = True
    reduction: Reduction | None = None
    scales: tuple[float, ...] = ()
    interval_s: float | None = None
    note: str = ""
    planner_flops: float = 0.0   # what deciding this plan cost (a learned allocator's forward passes)

    @property
    def frame_positions(self) -> list[int]:
        return [i for c in self.chunks for i in c.frames]

    def input_key(self) -> tuple:
        """Everything of the plan a backbone reads: equal keys mean identical model inputs."""
        chunks = tuple((c.frames, c.height, c.width, c.start_s) for c in self.chunks)
        reduction = None
        if self.reduction is not None:
            reduction = (self.reduction.method, self.reduction.keep, self.reduction.layer, self.reduction.seed,
                         repr(sorted(self.reduction.params.items())))
        return (self.kind, chunks, self.interval_s, reduction)

    def to_record(self) -> dict[str, Any]:
        """A JSON-friendly summary for the per-sample record."""
        return {
            "frames": self.frame_positions,
            "chunks": [[c.height, c.width] for c in self.chunks],
            "scales": [round(s, 6) for s in self.scales],
            "starts_s": [round(c.start_s, 4) for c in self.chunks],
            "limit": self.limit,
            "feasible": self.feasible,
            "reduction": asdict(self.reduction) if self.reduction else None,
            "note": self.note,
            "planner_flops": self.planner_flops,
        }


@dataclass
class Output:
    """What a backbone returns for one executed plan.

    `visual_tokens` counts the visual tokens the LLM's last layer sees (after layer K for in-LLM
    pruning); `llm_visual_tokens_input` those entering layer 0 and `llm_visual_tokens` their mean
    over layers (the honest cost of in-LLM pruning). `flops` is the prefill estimate (`vision`,
    `llm_prefill`, `total`) computed from each layer's real length.
    """

    text: str
    visual_tokens: int
    encoder_patches: int
    prompt_tokens: int
    generated_tokens: int
    timings: dict[str, float]
    flops: dict[str, float]
    llm_visual_tokens: float | None = None
    llm_visual_tokens_input: int | None = None
