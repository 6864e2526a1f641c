"""The evaluation loop: samples -> frames -> plan -> backbone -> score -> record, resumable.

A rerun with the same config skips the samples already in `samples.jsonl`; a different config
is refused instead of mixing into the directory. Bad samples become error records; the run goes on.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from resadapt_eval.pipeline import store as rec
from resadapt_eval.adapters import ADAPTERS
from resadapt_eval.adapters.base import TaskCard
from resadapt_eval.probes import provision
from resadapt_eval.pipeline.shares import window_token_share
from resadapt_eval.backbones import backbone_name, load_backbone, resolve_alias
from resadapt_eval.core.budget import parse_budget
from resadapt_eval.pipeline.distributed import current_world
from resadapt_eval.pipeline.grid import StrategySpec, expand
from resadapt_eval.pipeline.media import FrameCache, load_frames
from resadapt_eval.pipeline.prefetch import Prefetcher
from resadapt_eval.strategies import STRATEGIES
from resadapt_eval.core import protocol as protocols
from resadapt_eval.core.protocol import InputProtocol
from resadapt_eval.core.strategy import Context
from resadapt_eval.core.record import Manifest, Record
from resadapt_eval.core.types import Frames, Output, Plan, Sample, SampleError, UserError

# 2: FLOPs checked against torch (dense attention, real windows, Qwen3-VL MLP and deepstack mergers),
# decode FLOPs, window_share on temporal grounding: records of schema 1 must not mix into a schema-2 run.
HARNESS_SCHEMA = 2
NOT_HASHED = ("limit", "out", "progress", "data_root", "prefetch")


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; all but `limit`, `out`, `data_root`, `progress` and `prefetch` (which
    change where and how fast, never what) go into the config hash."""

    task: str
    backbone: str = "tiny-bundled"
    strategy: str = "vanilla"
    budget: str = "1.0"
    budget_ref_frames: int | None = None
    frames: int | None = None
    limit: int | None = None
    seed: int = 0
    out: str = "results"
    data_root: str | None = None
    max_new_tokens: int | None = None
    device: str | None = None
    dtype: str | None = None
    attn: str | None = None
    text_resume: str | None = None  # None: the protocol's choice ("max+1" for all but lmms-eval's "hf")
    protocol: str | None = None     # None: the task card's (`fixed` unless the card says otherwise)
    trust_remote_code: bool = False
    strategy_options: dict[str, Any] = field(default_factory=dict)
    task_options: dict[str, Any] = field(default_factory=dict)
    progress: bool = True
    prefetch: int | None = None   # samples prepared ahead; None: 2 on a CUDA backbone, 0 on the CPU


@dataclass
class RunResult:
    directory: Path
    summary: dict[str, Any]
    new_records: int


def protocol_default_frames(name: str) -> int | None:
    """The frame count (or cap) a protocol implies when --frames is not given (None: the card's)."""
    return protocols.resolve(name, "qwen2_5_vl").default_frames


def load_card(task: str, data_root: str | None = None, overrides: dict[str, Any] | None = None) -> TaskCard:
    """Read a task card, then provision its generated data if it is a probe (the explicit step)."""
    card = TaskCard.load(task, data_root, overrides)
    provision(card)
    return card


def load_backbone_for(config: RunConfig) -> Any:
    """The backbone a config names, with its loading options, on this rank's device (the one place
    `run`, `sweep` and `recheck` load one)."""
    return load_backbone(config.backbone, device=current_world().device(config.device), dtype=config.dtype,
                         attn=config.attn, text_resume=config.text_resume or "max+1",
                         trust_remote_code=config.trust_remote_code)


def backbone_key(config: RunConfig) -> tuple:
    """Configs with equal keys can share one loaded backbone."""
    return (config.backbone, config.device, config.dtype, config.attn, config.text_resume, config.trust_remote_code)


def run(config: RunConfig, backbone: Any = None, cache: FrameCache | None = None,
        outputs: dict | None = None, loaded: dict | None = None) -> RunResult:
    """Evaluate one (task, backbone, strategy, budget, frames) configuration; returns its summary.

    `backbone`, `cache`, `outputs` and `loaded` let a sweep share one loaded model, the decoded
    frames, the model outputs of identical inputs and the task's samples across runs.
    """
    strategy = STRATEGIES.get(config.strategy)(**config.strategy_options)
    if backbone is None:  # before probe data is built and the model loads
        check_backbone([strategy], config.backbone)
    card = load_card(config.task, config.data_root, config.task_options)
    adapter = ADAPTERS.get(card.adapter)()
    budget = parse_budget(config.budget, config.budget_ref_frames)
    protocol_name = config.protocol or card.protocol
    frames_n = config.frames or protocol_default_frames(protocol_name) or card.frames
    if frames_n < 1:
        raise UserError(f"--frames must be at least 1, got {frames_n}")
    max_new = config.max_new_tokens or card.max_new_tokens
    card_key = json.dumps(card.to_dict(), sort_keys=True, default=str)
    samples = loaded.get(card_key) if loaded is not None else None
    if samples is None:
        samples = adapter.load(card)
        if loaded is not None:
            loaded[card_key] = samples
    if config.limit is not None:
        samples = samples[: config.limit]
    world = current_world()
    text_resume = config.text_resume or protocols.resolve(protocol_name, "qwen2_5_vl").text_resume
    if backbone is None:
        backbone = load_backbone_for(replace(config, text_resume=text_resume))
    if getattr(backbone, "text_resume", text_resume) != text_resume:
        raise UserError(f"the {protocol_name} protocol resumes text positions with {text_resume!r}, but the loaded "
                        f"backbone uses {backbone.text_resume!r}; pass --text-resume or run it separately")
    protocol = protocols.resolve(protocol_name, backbone.geometry.family, frames_n)
    torch.manual_seed(config.seed)

    hashed = {k: v for k, v in asdict(config).items() if k not in NOT_HASHED + ("protocol",)}
    hashed["text_resume"] = text_resume
    if protocol.name != "fixed":  # runs made before protocols existed (all `fixed`) keep their hash
        hashed["protocol"] = protocol.to_dict()
    # A card given by path (--task path/to/card.yaml) hashes as its name: its content is in `card`.
    hashed.update(task=card.name, card=card.to_dict(), backbone=backbone.describe(), frames=frames_n,
                  max_new_tokens=max_new, budget=budget.to_dict(), schema=HARNESS_SCHEMA,
                  adapter_version=adapter_version(adapter))
    if hasattr(strategy, "describe"):  # learned strategies: their weights are part of the configuration
        hashed.update(strategy=strategy.describe(backbone))
    chash = rec.config_hash(hashed)
    label = rec.strategy_label(config.strategy, config.strategy_options)
    directory = rec.run_dir(config.out, card.name, backbone.name, label, budget.label, frames_n)
    head = {"task": card.name, "backbone": backbone.name, "strategy": label, "budget": budget.label,
            "budget_spec": budget.to_dict(), "frames": frames_n, "protocol": protocol.name, "config_hash": chash}
    rerun = {k: v for k, v in asdict(config).items() if k not in ("out", "progress", "limit", "prefetch")}
    rerun.update(protocol=protocol.name, text_resume=text_resume)  # as resolved, for `check-baseline`
    manifest = Manifest.build(head, config=hashed, run_config=rerun, seed=config.seed, environment=rec.environment(),
                              backbone_description=backbone.describe(), backbone_fingerprint=backbone.fingerprint,
                              created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    # Under torchrun every rank runs this with its own shard of the samples; the store gives rank 0
    # the manifest, the merge and the summary (see resadapt_eval.pipeline.distributed).
    store = rec.RunStore(directory, world)
    with store.open(manifest):
        done = store.done_ids()
        pending = [s for s in world.shard(samples) if s.id not in done]
        where = f" rank {world.rank}/{world.size}" if world.size > 1 else ""

        # The next samples are decoded, planned and preprocessed in a background thread while
        # the model runs this one (depth 0: all in this thread).
        def stage(sample: Sample) -> Staged:
            return stage_sample(sample, strategy, backbone, budget, frames_n, max_new, config.seed, cache,
                                outputs, task=card.name, protocol=protocol)

        depth = prefetch_depth(config.prefetch, backbone)
        with store.writer() as write, Prefetcher(stage, pending, depth, setup=_prefetch_setup(backbone)) as staged:
            bar = tqdm(staged, total=len(pending), desc=f"{card.name} {label} b{budget.label} f{frames_n}{where}",
                       unit="sample", disable=not config.progress, dynamic_ncols=True)
            for item in bar:
                write(finish_sample(item, adapter, backbone, max_new, outputs))
        summary = store.finish([s.id for s in samples],
                               lambda records: rec.summarize(records, head, adapter.metrics, adapter.main_metric,
                                                             adapter.breakdown_keys, config.seed))
    return RunResult(directory, summary, len(pending))


def adapter_version(adapter: Any) -> str | None:
    """The task adapter's declared version of its prompt and scoring rules (None if it declares none),
    hashed with the config so a scoring change never mixes into an old run directory on resume."""
    version = getattr(adapter, "version", None)
    return None if version is None else str(version)


def _on_cpu(backbone: Any) -> bool:
    device = getattr(backbone, "device", None)
    return device is None or getattr(device, "type", "cpu") == "cpu"


def prefetch_depth(requested: int | None, backbone: Any) -> int:
    """How many samples to prepare ahead. By default 2 when the model runs on a GPU (the CPU is free
    to decode and preprocess meanwhile) and none on the CPU, where the model's own threads already
    fill the cores: on 2 cores a sweep took 8-14% longer with prefetch (`resadapt-eval bench overlap`)."""
    if requested is not None:
        return requested
    return 0 if _on_cpu(backbone) else 2


def _prefetch_setup(backbone: Any):
    """On a CPU backbone the prefetch thread runs its torch ops on one core: the model's own
    intra-op threads already fill the machine (two thread teams competing made a sweep 13% slower,
    one core for the thread 3-8%). On CUDA the CPU is otherwise idle."""
    return (lambda: torch.set_num_threads(1)) if _on_cpu(backbone) else None


@dataclass
class Staged:
    """One sample made ready for the model (in the prefetch thread): decoded, planned, preprocessed.

    `error` is set when its media could not be loaded; `reused` holds a sweep's earlier output for
    an identical model input, in which case nothing was prepared.
    """

    sample: Sample
    load_s: float
    frames: Frames | None = None
    cached: bool = False
    error: str | None = None
    plan: Plan | None = None
    plan_s: float = 0.0
    key: tuple | None = None
    prepared: Any = None
    reused: Output | None = None


def stage_sample(sample: Sample, strategy, backbone, budget, frames_n: int, max_new: int, seed: int,
                 cache: FrameCache | None = None, outputs: dict | None = None, task: str = "",
                 protocol: InputProtocol | None = None) -> Staged:
    """Everything before the model runs: decode (or the frame cache), the strategy's plan (a learned
    planner's forward passes included), and the backbone's preprocessing of that plan."""
    start = time.perf_counter()
    cached = False
    try:
        if sample.media is None:
            raise SampleError(sample.meta.get("media_error", "sample has no media"))
        if cache is not None:
            frames, cached = cache.load(sample.media_kind, sample.media, frames_n, protocol)
        else:
            frames = load_frames(sample.media_kind, sample.media, frames_n, protocol)
    except SampleError as e:
        return Staged(sample, time.perf_counter() - start, error=str(e))
    t_plan = time.perf_counter()
    ctx = Context.build(sample, frames, backbone.geometry, budget, seed, backbone, task, protocol)
    plan = strategy.plan(ctx)
    plan_s = time.perf_counter() - t_plan
    key = (sample.id, frames_n, protocol.name if protocol else "fixed", sample.prompt, max_new, plan.input_key())
    reused = outputs.get(key) if outputs is not None else None
    prepared = None
    if reused is None:  # every Backbone prepares (core.protocols): here, so it may run in the prefetch thread
        prepared = backbone.prepare(plan, frames, sample.prompt)
    return Staged(sample, frames.decode_s, frames, cached, None, plan, plan_s, key, prepared, reused)


def finish_sample(staged: Staged, adapter, backbone, max_new: int, outputs: dict | None = None) -> Record:
    """The model's part and the record: execute the prepared plan (or reuse a sweep's output), score."""
    sample = staged.sample
    if staged.error is not None:
        return Record(id=sample.id, target=sample.target, meta=sample.meta, timings={"load": staged.load_s},
                      error=staged.error)
    plan, frames = staged.plan, staged.frames
    out = staged.reused
    if out is None:
        out = backbone.execute(plan, frames, sample.prompt, max_new, prepared=staged.prepared)
        if outputs is not None:
            outputs[staged.key] = out
    if out.visual_tokens != plan.tokens:
        raise RuntimeError(f"{sample.id}: plan promised {plan.tokens} visual tokens but the model got "
                           f"{out.visual_tokens}; token accounting is broken")
    # No adapter: somebody else scores (the lmms-eval plugin); the record still has every cost.
    t_score = time.perf_counter()
    score, parsed = adapter.score(sample, out.text) if adapter is not None else (None, None)
    score_s = time.perf_counter() - t_score
    flops = dict(out.flops)
    if plan.planner_flops:  # a learned planner's own cost belongs to the sample's total
        flops.update(planner=plan.planner_flops, total=flops["total"] + plan.planner_flops)
    timings = {"load": frames.decode_s, "plan": staged.plan_s, **out.timings, "score": score_s}
    timings["e2e"] = frames.decode_s + staged.plan_s + out.timings["backbone_total"] + score_s
    window = getattr(adapter, "evidence_window", lambda _s: None)(staged.sample)
    extra = {} if window is None else {"window_share": window_token_share(plan, frames, window)}  # grounding
    return Record(id=sample.id, target=sample.target, meta=sample.meta, prediction=out.text, parsed=parsed,
                  score=score, vanilla_tokens=plan.vanilla_tokens, tokens=out.visual_tokens,
                  retention=out.visual_tokens / plan.vanilla_tokens, llm_visual_tokens=out.llm_visual_tokens,
                  llm_visual_tokens_input=out.llm_visual_tokens_input, limit=plan.limit,
                  patches=out.encoder_patches, prompt_tokens=out.prompt_tokens,
                  generated_tokens=out.generated_tokens, flops=flops, plan=plan.to_record(),
                  **plan_layout(plan, frames, backbone),
                  frames_decoded=frames.count, decoder=frames.backend, frames_cached=staged.cached,
                  output_reused=staged.reused is not None, timings=timings, error=None, extra=extra)


def plan_layout(plan: Plan, frames: Frames, backbone) -> dict[str, Any]:
    """Where the plan sits in the source, for the report (`resadapt-eval view`): each planned frame's
    number and time in the source video, and each chunk's tokens before any token reduction."""
    positions = plan.frame_positions
    return {"frame_indices": [int(frames.indices[p]) for p in positions],
            "frame_times": [round(float(frames.timestamps[p]), 4) for p in positions],
            "chunk_tokens": [backbone.geometry.tokens_per_chunk(c.height, c.width) for c in plan.chunks]}


def evaluate_sample(sample, adapter, strategy, backbone, budget, frames_n: int, max_new: int,
                    seed: int, cache: FrameCache | None = None, outputs: dict | None = None,
                    task: str = "") -> Record:
    """One record: the full chain for one sample, or an error record naming the cause.

    Timings are each stage's own (`e2e` is their sum), so latencies compare as if each configuration
    ran alone: with a frame cache, `load` and `e2e` still count the sample's original decode time;
    with an output memo (a sweep), a plan whose model input equals one already run for this sample
    (vanilla under every budget label, any strategy at budget 1.0) reuses that output, marked
    `output_reused`, with the timings measured when it ran.
    """
    staged = stage_sample(sample, strategy, backbone, budget, frames_n, max_new, seed, cache, outputs, task)
    return finish_sample(staged, adapter, backbone, max_new, outputs)


def check_backbone(strategies: list[Any], source: str) -> None:
    """Before the backbone loads: every strategy that needs something for this backbone (resadapt:
    an allocator) says so now, in one line, rather than after minutes of loading or half-way
    through a sweep."""
    checks = [s.check_backbone for s in strategies if hasattr(s, "check_backbone")]
    if not checks:
        return
    folder = Path(resolve_alias(source)).expanduser()
    for check in checks:
        check(backbone_name(source), folder if folder.is_dir() else None)


def sweep(base: RunConfig, tasks: list[str], strategies: list[str | StrategySpec], budgets: list[str],
          frames: list[int | None] | None = None, on_result: Any = None) -> list[RunResult]:
    """Every task x strategy x budget (x frames) with one backbone load, shared decoded frames and
    one model call per distinct model input (see `evaluate_sample`).

    `strategies` are names or `name+key=value` specs (see `grid`); `base.strategy_options` are
    not used (settle options with `grid.expand`). Everything that can be checked without the model
    (task cards, budgets, frame counts, strategy options, each strategy's needs for this backbone)
    is checked before the backbone loads, so a bad grid fails before its first configuration.
    """
    specs = expand(strategies)
    for task in tasks:
        TaskCard.load(task, base.data_root, base.task_options)
    for budget in budgets:
        parse_budget(budget, base.budget_ref_frames)
    for n in frames or []:
        if n is not None and n < 1:
            raise UserError(f"--frames must be at least 1, got {n}")
    check_backbone([STRATEGIES.get(s.name)(**s.options) for s in specs], base.backbone)
    text_resume = base.text_resume or protocols.resolve(base.protocol or "fixed", "qwen2_5_vl").text_resume
    backbone = load_backbone_for(replace(base, text_resume=text_resume))
    results = []
    for task in tasks:
        cache, outputs, loaded = FrameCache(), {}, {}
        for n in frames or [base.frames]:
            for spec in specs:
                for budget in budgets:
                    cfg = replace(base, task=task, strategy=spec.name, strategy_options=dict(spec.options),
                                  budget=budget, frames=n)
                    result = run(cfg, backbone=backbone, cache=cache, outputs=outputs, loaded=loaded)
                    results.append(result)
                    if on_result is not None:
                        on_result(result)
    return results
