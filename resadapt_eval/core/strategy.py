"""What every strategy sees, and the helpers that turn frame choices and sizes into plans."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

from resadapt_eval.core.budget import Budget, Geometry
from resadapt_eval.core.protocols import BackboneView
from resadapt_eval.core.protocol import InputProtocol
from resadapt_eval.core.protocol import uniform_positions as uniform_subset  # the frame-sampling rule
from resadapt_eval.core.types import Chunk, Frames, Plan, Reduction, Sample, UserError


@dataclass(frozen=True)
class Context:
    """One sample's inputs to a strategy, with its vanilla size and token limit already solved."""

    sample: Sample
    frames: Frames
    geometry: Geometry
    budget: Budget
    seed: int
    vanilla_hw: tuple[int, int]
    vanilla_tokens: int
    limit: int
    backbone: BackboneView | None = None  # the loaded backbone's view, for planners that look through its frozen parts
    task: str = ""        # the task card's name, for planners whose settings were learned per task

    @classmethod
    def build(cls, sample: Sample, frames: Frames, geometry: Geometry, budget: Budget, seed: int,
              backbone: BackboneView | None = None, task: str = "", protocol: InputProtocol | None = None) -> "Context":
        kind, n = frames.kind, frames.count
        vanilla_hw = vanilla_size(geometry, protocol, kind, frames.height, frames.width, n)
        vanilla = _chunks(geometry, kind, n) * geometry.tokens_per_chunk(*vanilla_hw)
        reference = None
        if budget.ref_frames is not None and kind == "video":
            ref_n = min(budget.ref_frames, frames.total_frames)
            ref_hw = vanilla_size(geometry, protocol, kind, frames.height, frames.width, ref_n)
            reference = _chunks(geometry, kind, ref_n) * geometry.tokens_per_chunk(*ref_hw)
        return cls(sample, frames, geometry, budget, seed, vanilla_hw, vanilla, budget.limit(vanilla, reference),
                   backbone, task)


def vanilla_size(geometry: Geometry, protocol: InputProtocol | None, kind: str, height: int, width: int,
                 n_frames: int) -> tuple[int, int]:
    """The (h, w) of vanilla's frames: the protocol's sizing (qwen-vl-utils) or the processor's caps."""
    if kind == "video" and protocol is not None and protocol.sizing == "qwen-vl-utils":
        return protocol.frame_size(geometry.factor, height, width, n_frames)
    return geometry.vanilla_size(kind, height, width, n_frames)


def _chunks(geometry: Geometry, kind: str, n_frames: int) -> int:
    return 1 if kind == "image" else geometry.n_chunks(n_frames)


@runtime_checkable
class Strategy(Protocol):
    """Decides, for one sample, which frames go in at which sizes (and any token reduction).

    A strategy is built as `cls(**options)` from `--strategy-option KEY=VALUE` and sees only its
    Context. A learned strategy may also define `describe(backbone) -> dict`: what of its weights
    goes into the run's config hash.
    """

    name: str

    def plan(self, ctx: Context) -> Plan:
        """The plan for one sample; `plan.tokens` must not exceed `ctx.limit` unless marked infeasible."""
        ...


def even_plan(ctx: Context, positions: list[int], sizes: list[tuple[int, int]] | tuple[int, int],
              scales: list[float] | None = None, reduction: Reduction | None = None,
              evenly_spaced: bool = True, note: str = "") -> Plan:
    """A plan over the chosen frame positions, grouped into chunks of temporal_patch_size.

    `sizes` is one (h, w) for every chunk or one per chunk. When the positions are an even sample
    of the video, chunk times use the same interval transformers derives for a video of that many
    frames; otherwise each chunk starts at its first frame's timestamp.
    """
    g, frames = ctx.geometry, ctx.frames
    step = 1 if frames.kind == "image" else g.temporal_patch_size
    groups = [tuple(positions[i:i + step]) for i in range(0, len(positions), step)]
    if isinstance(sizes, tuple):
        sizes = [sizes] * len(groups)
    interval = None
    if frames.kind == "video":
        t0 = frames.timestamps[groups[0][0]]
        if evenly_spaced:
            sampled_fps = len(positions) / frames.total_frames * frames.fps
            interval = g.temporal_patch_size / sampled_fps
            starts = [k * interval for k in range(len(groups))]
        else:
            starts = [frames.timestamps[grp[0]] - t0 for grp in groups]
    else:
        starts = [0.0]
    chunks = tuple(Chunk(grp, h, w, s) for grp, (h, w), s in zip(groups, sizes, starts))
    tokens = sum(g.tokens_per_chunk(c.height, c.width) for c in chunks)
    if reduction is not None:
        tokens = min(tokens, reduction.keep)
    return Plan(kind=frames.kind, chunks=chunks, tokens=tokens, vanilla_tokens=ctx.vanilla_tokens, limit=ctx.limit,
                feasible=tokens <= ctx.limit, reduction=reduction,
                scales=tuple(scales) if scales is not None else (), interval_s=interval, note=note)


def vanilla_plan(ctx: Context, note: str = "") -> Plan:
    """Every decoded frame at vanilla resolution."""
    return even_plan(ctx, list(range(ctx.frames.count)), ctx.vanilla_hw, note=note)


def frame_subset(ctx: Context, frame_share: float) -> list[int]:
    """Evenly spaced whole chunks covering `frame_share` of the decoded frames (at least one chunk); all of an image."""
    n = ctx.frames.count
    if ctx.frames.kind == "image" or frame_share >= 1.0:
        return list(range(n))
    tp = ctx.geometry.temporal_patch_size
    chunks = max(1, round(frame_share * ctx.geometry.n_chunks(n)))
    return uniform_subset(n, min(n, chunks * tp))


def reduced_plan(ctx: Context, method: str, layer: int = 0, frame_share: float = 1.0,
                 params: dict | None = None, seed: int = 0) -> Plan:
    """Vanilla-resolution frames (optionally a uniform share of them first), then a token reduction
    to exactly the budget: keep = max(1, min(N, floor(b · vanilla))), N the tokens before reduction."""
    plan = even_plan(ctx, frame_subset(ctx, frame_share), ctx.vanilla_hw)
    keep = max(1, min(plan.tokens, ctx.limit))
    reduction = Reduction(method=method, keep=keep, layer=layer, seed=seed, params=dict(params or {}))
    return replace(plan, reduction=reduction, tokens=keep, feasible=keep <= ctx.limit)


def check_share(name: str, value: float) -> float:
    """A share option in (0, 1], or a one-line error naming it."""
    try:
        share = float(value)
    except (TypeError, ValueError):
        share = float("nan")
    if not 0.0 < share <= 1.0:
        raise UserError(f"strategy option {name} must be in (0, 1], got {value!r}")
    return share


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """One of `choices`, or a one-line error naming the option."""
    if str(value) not in choices:
        raise UserError(f"strategy option {name} must be one of {', '.join(choices)}, got {value!r}")
    return str(value)


def check_range(name: str, value: Any, low: float, high: float) -> float:
    """A number in [low, high], or a one-line error naming the option."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not low <= number <= high:
        raise UserError(f"strategy option {name} must be a number in [{low:g}, {high:g}], got {value!r}")
    return number
