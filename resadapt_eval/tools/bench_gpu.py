"""`resadapt-eval bench gpu`: the harness at the shapes its users run, on whatever device is there.

Qwen2.5-VL-7B and Qwen3-VL-8B are built from their published configurations (`assets/gpu_bench/*.json`,
each naming where its values come from) with random weights: bf16 on CUDA, float32 on the CPU. Their
answers mean nothing; their compute, memory and kernels are the real ones. The tokenizer is the
offline byte-level BPE of `backbones/tiny.py` with the Qwen-VL special tokens (the model keeps the
published vocabulary size, so embedding and LM head cost what they cost), and the processors are built
from the published processor settings. `--tiny` shrinks widths and depths (not patch, merge or
temporal sizes) so that the same code runs in the CPU test suite in seconds.

For each backbone and frame count, one generated 720p video is decoded (timed apart: the decoders the
machine has, decord or PyAV through the harness, else OpenCV), then every strategy runs at every
budget through the runner's own staging (`stage_sample`) and the backbone's `execute`, and each
stage is timed: decoding, preprocessing, planning, vision encoding, (token reduction), prefill,
and generation of a fixed number of new tokens (end-of-sequence is ignored). Per configuration it
also gives peak GPU memory, the prefill's model-FLOPs utilisation (the harness's own FLOPs formula,
`backbones/flops.py`, over the prefill time and the GPU's dense bf16 peak), the token counts next to
the same counts computed on the CPU from the plan alone (`core/budget.py`, no model), and for
`resadapt-budget` the planner's share of the backbone's time. A stream of samples through the runner's
prefetch pipeline, with prefetch and without, gives the share of wall time spent outside the model.

`resadapt-budget` runs with a freshly initialised allocator head for the backbone (no trained allocator for
the 7B exists here): its cost is the real cost, its choices are not the trained ones.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from resadapt_eval.backbones.qwen_vl import QwenVLBackbone, pick_attention
from resadapt_eval.core.budget import Geometry, parse_budget
from resadapt_eval.core.types import Frames, Plan, Sample, SampleError, UserError

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "gpu_bench"
BACKBONES = ("qwen2.5-vl-7b", "qwen3-vl-8b")
STRATEGIES = ("vanilla", "uniform-scale", "visionzip", "fastv", "resadapt-budget")
BUDGETS = ("1.0", "0.25", "0.1")
FRAMES = (32, 128)

#: dense bf16 peak FLOP/s by GPU name (first match wins; tensor cores, no sparsity): the vendors' data sheets
BF16_PEAKS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),      # SXM
    ("H200", 989e12),
    ("GH200", 989e12),
    ("A100", 312e12),
)

#: the issue's goals, carried into the JSON so a reader sees each figure next to its bar
GOALS = {"outside_share_with_prefetch_max": 0.02, "planner_over_backbone_max": 0.10,
         "vanilla_prefill_mfu_min": {"backbone": "qwen2.5-vl-7b", "frames": 32, "value": 0.35}}

PROMPT = ("Select the best answer to the following multiple-choice question based on the video. "
          "Respond with only the letter (A, B, C, or D) of the correct option.\n"
          "What does the person in the video do right after entering the room?\n"
          "A. Sits down at the desk.\nB. Opens the window.\nC. Picks up a book.\nD. Turns on the light.\n"
          "The best answer is:")

#: widths and depths of the --tiny variant (patch, merge and temporal sizes stay as published)
TINY_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2)
TINY_VISION = {"qwen2_5_vl": dict(depth=4, hidden_size=32, intermediate_size=64, num_heads=2,
                                  fullatt_block_indexes=[1, 3]),
               "qwen3_vl": dict(depth=4, hidden_size=32, intermediate_size=64, num_heads=2,
                                deepstack_visual_indexes=[0, 2], num_position_embeddings=256)}


@dataclass
class GpuBenchSettings:
    """What one bench run does; `--tiny` with small frames and video is the CPU test's setting."""

    backbones: tuple[str, ...] = BACKBONES
    strategies: tuple[str, ...] = STRATEGIES
    budgets: tuple[str, ...] = BUDGETS
    frames: tuple[int, ...] = FRAMES
    repeats: int = 2
    new_tokens: int = 16
    video_height: int = 720
    video_width: int = 1280
    video_seconds: float = 20.0
    video_fps: int = 24
    overhead_strategy: str = "uniform-scale"
    overhead_budget: str = "0.25"
    overhead_samples: int = 4
    prefetch: tuple[int, ...] = (2, 0)
    device: str | None = None
    attn: str | None = None
    tiny: bool = False
    seed: int = 0
    deadline_s: float | None = None   # stop starting new measurements after this many seconds
    workdir: str | None = None


# -- backbones ------------------------------------------------------------------------------------


def load_spec(name: str) -> dict[str, Any]:
    """A published configuration shipped under assets/gpu_bench/ (config, processor settings, source)."""
    path = ASSETS / f"{name}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in ASSETS.glob("*.json")))
        raise UserError(f"no published configuration {name!r} for the GPU bench; known: {known}")
    return json.loads(path.read_text())


def _shrink(config: dict[str, Any], family: str) -> dict[str, Any]:
    """The --tiny variant: small widths and depths, a vocabulary the size of the offline tokenizer."""
    cfg = json.loads(json.dumps(config))
    text = cfg["text_config"] if "text_config" in cfg else cfg
    text.update(TINY_TEXT)
    text.pop("head_dim", None)
    if family == "qwen3_vl":
        text["head_dim"] = TINY_TEXT["hidden_size"] // TINY_TEXT["num_attention_heads"]
    text_rope = "rope_scaling" if "rope_scaling" in text else None
    if text_rope:  # mrope sections must add up to head_dim / 2
        text[text_rope] = {**text[text_rope], "mrope_section": [2, 3, 3]}
    cfg["vision_config"].update(TINY_VISION[family], out_hidden_size=TINY_TEXT["hidden_size"])
    return cfg


def _with_token_ids(config: dict[str, Any], tok, tiny: bool) -> dict[str, Any]:
    """The published config with the offline tokenizer's special-token ids (the vocabulary size stays
    the published one unless --tiny, so the embedding and LM head keep their real cost)."""
    from resadapt_eval.backbones.tiny import SPECIAL_TOKENS

    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    cfg = json.loads(json.dumps(config))
    cfg.update(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
               vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    cfg.pop("vision_token_id", None)
    text = cfg.get("text_config", cfg)  # Qwen2.5-VL's published config keeps the LLM's fields at the top
    text.update(bos_token_id=ids["<|im_start|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=tok.pad_token_id)
    text["vocab_size"] = len(tok) + 16 if tiny else max(int(text["vocab_size"]), len(tok))
    return cfg


def build_processor(spec: dict[str, Any], tok):
    """The processor of the published settings around the offline tokenizer."""
    from transformers import Qwen2VLImageProcessor

    from resadapt_eval.backbones.tiny import CHAT_TEMPLATE

    family = spec["config"]["model_type"]
    image = Qwen2VLImageProcessor(**spec["image_processor"])
    if family == "qwen3_vl":
        from transformers import Qwen3VLProcessor, Qwen3VLVideoProcessor
        video, proc_cls = Qwen3VLVideoProcessor(**spec["video_processor"]), Qwen3VLProcessor
    else:
        from transformers import Qwen2_5_VLProcessor, Qwen2VLVideoProcessor
        video, proc_cls = Qwen2VLVideoProcessor(**spec["video_processor"]), Qwen2_5_VLProcessor
    return proc_cls(image_processor=image, video_processor=video, tokenizer=tok, chat_template=CHAT_TEMPLATE)


@dataclass
class Built:
    backbone: QwenVLBackbone
    info: dict[str, Any]
    cpu_geometry: Geometry     # from a separately built processor: the model-free token arithmetic


def build_backbone(name: str, settings: GpuBenchSettings, tok) -> Built:
    """The published configuration with random weights, built directly on the device."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    spec = load_spec(name)
    family = spec["config"]["model_type"]
    raw = _shrink(spec["config"], family) if settings.tiny else spec["config"]
    raw = _with_token_ids(raw, tok, settings.tiny)
    config = AutoConfig.for_model(**raw)
    device = torch.device(settings.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    attn = pick_attention(device, settings.attn)
    start = time.perf_counter()
    torch.manual_seed(settings.seed)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype, attn_implementation=attn)
    model.eval()
    _sync(device)
    build_s = time.perf_counter() - start
    processor = build_processor(spec, tok)
    digest = hashlib.sha256(json.dumps(raw, sort_keys=True).encode() + str(settings.seed).encode()).hexdigest()
    backbone = QwenVLBackbone.from_model(model, processor, name + ("-tiny" if settings.tiny else ""), attn,
                                         fingerprint_sha256=digest)
    backbone.eos_ids = set()  # generation runs the fixed number of new tokens
    params = sum(p.numel() for p in model.parameters())
    text = config.text_config
    info = {"name": backbone.name, "hub_id": spec["hub_id"], "family": family, "source": spec["source"],
            "video_processor_source": spec.get("video_processor_source"), "tiny": settings.tiny,
            "parameters": params, "dtype": str(dtype).replace("torch.", ""), "device": str(device),
            "attention": getattr(model.config, "_attn_implementation", attn),
            "llm": {"layers": text.num_hidden_layers, "hidden": text.hidden_size, "vocab": text.vocab_size},
            "vision": {"depth": config.vision_config.depth, "hidden": config.vision_config.hidden_size},
            "geometry": {k: getattr(backbone.geometry, k) for k in ("patch_size", "merge_size", "temporal_patch_size",
                                                                     "video_min_pixels", "video_max_pixels",
                                                                     "cap_pixels_per_frame", "max_video_tokens")},
            "weights_random": True,
            "token_ids": "special-token ids are the offline tokenizer's, not the published ones (costs unchanged)",
            "build_s": build_s, "memory_after_build_mib": _gpu_mib(device)}
    return Built(backbone, info, Geometry.from_processor(build_processor(spec, tok), config))


def fresh_allocator(backbone, folder: Path, seed: int) -> dict[str, Any]:
    """Save a freshly initialised allocator head for this backbone into `folder` (what `resadapt-budget` loads)."""
    from resadapt_eval.allocator.policy import Policy

    torch.manual_seed(seed)
    policy = Policy.create(backbone)
    policy.head.save(folder)
    return {"folder": str(folder), "freshly_initialised": True,
            "parameters": sum(p.numel() for p in policy.head.parameters()),
            "note": "untrained head (about uniform scales): its cost is real, its choices are not the trained ones"}


# -- media ----------------------------------------------------------------------------------------


def video_frames(n: int, height: int, width: int, seed: int = 0):
    """RGB frames with texture, motion and a cut: enough content for decoders to do real work."""
    rng = np.random.default_rng(seed)
    block = 16
    tex = np.repeat(np.repeat(rng.integers(16, 236, (height // block + 1, 2 * width // block + 1, 3), np.uint8),
                              block, 0), block, 1)
    for i in range(n):
        x = (4 * i) % width
        frame = np.ascontiguousarray(tex[:height, x:x + width])
        for k in range(3):
            by = (k * height // 3 + 3 * i) % max(1, height - height // 8)
            bx = (i * (k + 2) * 4) % max(1, width - width // 8)
            frame[by:by + height // 8, bx:bx + width // 8] = (40 + 70 * k, 200 - 60 * k, 90)
        yield frame


def write_video(path: Path, n: int, height: int, width: int, fps: int, seed: int = 0) -> str:
    """Encode the generated video: H.264 through PyAV where it is installed, else MPEG-4 through OpenCV."""
    if _importable("av"):
        from resadapt_eval.probes.synth import encode_video
        encode_video(path, video_frames(n, height, width, seed), fps, crf=23, preset="veryfast")
        return "pyav-h264"
    cv2 = _cv2()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
    if not writer.isOpened():
        raise UserError(f"OpenCV cannot write {path}; install PyAV (pip install av)")
    for frame in video_frames(n, height, width, seed):
        writer.write(frame[:, :, ::-1])
    writer.release()
    return "opencv-mp4v"


def _cv2():
    try:
        import cv2
    except ImportError:
        raise UserError("the GPU bench needs a video library: decord or PyAV (the harness's decoders) or "
                        "OpenCV (pip install opencv-python-headless)") from None
    return cv2


def _importable(name: str) -> bool:
    """Whether `name` imports here (a carried wheel may be found and still fail to load)."""
    try:
        importlib.import_module(name)
    except Exception:
        return False
    return True


def harness_decoders() -> bool:
    return _importable("decord") or _importable("av")


def decode_video(path: str, n: int) -> Frames:
    """N uniformly sampled frames: the harness's own decoders where installed, else OpenCV (in order,
    keeping the sampled frames; the same `uniform_indices` rule)."""
    from resadapt_eval.pipeline.media import load_video, uniform_indices

    if harness_decoders():
        try:
            return load_video(path, n)
        except SampleError:
            if not _importable("cv2"):
                raise
    cv2 = _cv2()
    start = time.perf_counter()
    cap = cv2.VideoCapture(path)
    total, fps = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), float(cap.get(cv2.CAP_PROP_FPS) or 1.0)
    idx = uniform_indices(total, n)
    wanted, got, i = set(idx), {}, 0
    while i <= idx[-1] and cap.grab():
        if i in wanted:
            ok, bgr = cap.retrieve()
            if ok:
                got[i] = bgr[:, :, ::-1]
        i += 1
    cap.release()
    if len(got) != len(set(idx)):
        raise UserError(f"OpenCV decoded {len(got)} of {len(set(idx))} sampled frames of {path}")
    pixels = np.ascontiguousarray(np.stack([got[k] for k in idx]))
    return Frames(kind="video", pixels=pixels, indices=idx, timestamps=[k / fps for k in idx], fps=fps,
                  total_frames=total, decode_s=time.perf_counter() - start, backend="opencv")


class _Preloaded:
    """A frame source for `stage_sample` that hands out frames decoded before (timed apart)."""

    def __init__(self, frames: Frames):
        self.frames = frames

    def load(self, kind: str, media: Any, n_frames: int, protocol: Any = None) -> tuple[Frames, bool]:
        return self.frames, True


class _Decoding:
    """A frame source that decodes every sample afresh (the overhead streams: decoding is part of it)."""

    def load(self, kind: str, media: Any, n_frames: int, protocol: Any = None) -> tuple[Frames, bool]:
        return decode_video(str(media), n_frames), False


# -- measurement ----------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _gpu_mib(device: torch.device) -> float | None:
    return torch.cuda.memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None


def _rss_mib() -> float | None:
    try:
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return None
    return int(line.split()[1]) / 1024


def bf16_peak(device: torch.device) -> tuple[str, float | None]:
    """(device name, dense bf16 peak FLOP/s or None when the device is not in the table or is a CPU)."""
    if device.type != "cuda":
        import platform
        return platform.processor() or platform.machine() or "cpu", None
    name = torch.cuda.get_device_name(device)
    return name, next((peak for key, peak in BF16_PEAKS if key in name), None)


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


#: the record's timing keys, named as the bench reports them
STAGES = {"load": "decoding", "preprocess": "preprocessing", "plan": "planning", "encode": "vision_encoding",
          "reduce": "reduction", "prefill": "prefill", "decode": "generation", "backbone_total": "backbone_total"}
MODEL_STAGES = ("encode", "reduce", "prefill", "decode")


def cpu_tokens(geometry: Geometry, plan: Plan, frames: Frames) -> dict[str, int]:
    """The plan's costs from arithmetic alone (no model): chunk tokens, tokens after any reduction,
    encoder patches, and the vanilla tokens of the decoded frames."""
    chunk_tokens = sum(geometry.tokens_per_chunk(c.height, c.width) for c in plan.chunks)
    tokens = min(chunk_tokens, plan.reduction.keep) if plan.reduction is not None else chunk_tokens
    return {"input_visual": chunk_tokens, "visual": tokens,
            "patches": sum(geometry.encoder_patches(c.height, c.width) for c in plan.chunks),
            "vanilla": geometry.vanilla_tokens(frames.kind, frames.height, frames.width, frames.count)}


@dataclass
class Clock:
    """The run's deadline. Each group (backbone x frame count) gets an equal share of the time left
    when it starts (what a group leaves unused goes to the next), and inside a group the figures the
    issue asks for run first, so a deadline cuts the least telling measurements."""

    deadline_s: float | None
    start: float = field(default_factory=time.perf_counter)
    group_end: float | None = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> bool:
        now = self.elapsed()
        if self.deadline_s is not None and now >= self.deadline_s:
            return False
        return self.group_end is None or now < self.group_end

    def start_group(self, groups_left: int) -> None:
        if self.deadline_s is not None:
            now = self.elapsed()
            self.group_end = now + max(0.0, self.deadline_s - now) / max(1, groups_left)


def measure_config(built: Built, strategy_name: str, budget_text: str, frames: Frames, sample: Sample,
                   settings: GpuBenchSettings, allocator: str | None, peak: float | None) -> dict[str, Any]:
    """One strategy at one budget, `repeats` times on the same decoded frames: stage medians, memory,
    MFU, tokens against the CPU arithmetic, and the planner's share."""
    from resadapt_eval.pipeline.runner import stage_sample
    from resadapt_eval.strategies import STRATEGIES as REGISTRY

    backbone = built.backbone
    device = backbone.device
    options = {"allocator": allocator} if strategy_name == "resadapt-budget" else {}
    strategy = REGISTRY.get(strategy_name)(**options)
    budget = parse_budget(budget_text)
    source = _Preloaded(frames)
    samples: dict[str, list[float]] = {}
    peak_mib = None
    out = plan = None
    for _ in range(settings.repeats):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        staged = stage_sample(sample, strategy, backbone, budget, frames.count, settings.new_tokens, settings.seed,
                              cache=source, task="gpu-bench")
        plan = staged.plan
        out = backbone.execute(plan, frames, sample.prompt, settings.new_tokens, prepared=staged.prepared)
        timings = {"plan": staged.plan_s, **out.timings}
        for key, value in timings.items():
            samples.setdefault(key, []).append(float(value))
        if device.type == "cuda":
            peak_mib = max(peak_mib or 0.0, torch.cuda.max_memory_allocated(device) / 2 ** 20)
    assert out is not None and plan is not None
    stages = {STAGES[k]: _median(v) for k, v in samples.items() if k in STAGES}
    stages["decoding"] = frames.decode_s  # the group's decode, measured apart (frames are shared)
    cpu = cpu_tokens(built.cpu_geometry, plan, frames)
    model = {"visual": int(out.visual_tokens), "input_visual": int(out.llm_visual_tokens_input),
             "patches": int(out.encoder_patches), "vanilla": int(plan.vanilla_tokens)}
    prefill_s, encode_s = stages.get("prefill", 0.0), stages.get("vision_encoding", 0.0)
    planner_s, backbone_s = stages.get("planning", 0.0), stages.get("backbone_total", 0.0)
    result = {
        "strategy": strategy_name, "budget": budget_text, "repeats": settings.repeats,
        "tokens": {"plan": int(plan.tokens), "model": model, "cpu": cpu, "limit": int(plan.limit),
                   "prompt": int(out.prompt_tokens), "generated": int(out.generated_tokens),
                   "retention": plan.tokens / plan.vanilla_tokens, "feasible": bool(plan.feasible)},
        "tokens_match": model == cpu and int(plan.tokens) == cpu["visual"],
        "stages_s": stages,
        "stage_samples_s": {STAGES.get(k, k): [round(x, 6) for x in v] for k, v in samples.items()},
        "peak_gpu_mib": peak_mib, "rss_mib": _rss_mib(),
        "flops": dict(out.flops),
        "prefill_mfu": out.flops["llm_prefill"] / prefill_s / peak if peak and prefill_s else None,
        "encode_mfu": out.flops["vision"] / encode_s / peak if peak and encode_s else None,
    }
    if plan.planner_flops:
        result["flops"]["planner"] = plan.planner_flops
        result["planner"] = {"planner_s": planner_s, "backbone_s": backbone_s,
                             "planner_over_backbone": planner_s / backbone_s if backbone_s else None,
                             "planner_share": planner_s / (planner_s + backbone_s) if planner_s + backbone_s else 0.0}
    return result


def measure_overhead(built: Built, video: str, frames_n: int, settings: GpuBenchSettings, depth: int,
                     allocator: str | None) -> dict[str, Any]:
    """A stream of samples through the runner's pipeline (decode, plan, preprocess, execute, record),
    `depth` samples prepared ahead: wall time against the model's own compute."""
    from resadapt_eval.pipeline import runner
    from resadapt_eval.pipeline.prefetch import Prefetcher
    from resadapt_eval.strategies import STRATEGIES as REGISTRY

    backbone = built.backbone
    name = settings.overhead_strategy
    strategy = REGISTRY.get(name)(**({"allocator": allocator} if name == "resadapt-budget" else {}))
    budget = parse_budget(settings.overhead_budget)
    items = [Sample(f"stream-{k}", PROMPT, "video", video, None) for k in range(settings.overhead_samples)]
    source = _Decoding()

    def stage(sample: Sample):
        return runner.stage_sample(sample, strategy, backbone, budget, frames_n, settings.new_tokens,
                                   settings.seed, cache=source, task="gpu-bench")

    records = []
    start = time.perf_counter()
    with Prefetcher(stage, items, depth, setup=runner._prefetch_setup(backbone)) as staged:
        for item in staged:
            records.append(runner.finish_sample(item, None, backbone, settings.new_tokens))
    wall = time.perf_counter() - start
    model = sum(r.timings.get(k, 0.0) for r in records for k in MODEL_STAGES)
    planner = sum(r.timings.get("plan", 0.0) for r in records if (r.plan or {}).get("planner_flops"))
    outside = max(0.0, wall - model - planner)
    return {"prefetch": depth, "strategy": name, "budget": settings.overhead_budget, "samples": len(records),
            "wall_s": wall, "model_s": model, "planner_s": planner, "outside_s": outside,
            "outside_share": outside / wall if wall else 0.0,
            "errors": sum(1 for r in records if not r.ok)}


def run_group(built: Built, video: str, frames_n: int, settings: GpuBenchSettings, allocator: str,
              clock: Clock, skipped: list[str], groups_left: int = 1) -> dict[str, Any]:
    """Everything at one frame count on one backbone: vanilla first, then resadapt-budget at the first budget
    below 1 (the planner's share), the prefetch streams, then the other configurations."""
    backbone = built.backbone
    name, peak = backbone.name, bf16_peak(backbone.device)[1]
    clock.start_group(groups_left)
    decodes = [decode_video(video, frames_n) for _ in range(max(1, settings.repeats))]
    frames = decodes[-1]
    frames.decode_s = _median([f.decode_s for f in decodes])
    sample = Sample("bench-0", PROMPT, "video", video, None)
    # warm-up (kernels, allocator caches): one vanilla execution and one planner pass, not recorded
    warm = time.perf_counter()
    measure_config(built, "vanilla", "1.0", frames, sample, _once(settings), allocator, peak)
    if "resadapt-budget" in settings.strategies:
        measure_config(built, "resadapt-budget", settings.budgets[-1], frames, sample, _once(settings), allocator, peak)
    warm_s = time.perf_counter() - warm
    # vanilla's input does not depend on the budget: it runs once and stands for every budget
    wanted = [(s, b) for s in settings.strategies for b in (("1.0",) if s == "vanilla" else settings.budgets)]
    below = [b for b in settings.budgets if float(b) < 1.0]
    first = [c for c in (("vanilla", "1.0"), ("resadapt-budget", below[0] if below else "1.0")) if c in wanted]
    results: dict[tuple[str, str], dict[str, Any]] = {}
    overhead: list[dict[str, Any]] = []

    def config(pair: tuple[str, str]) -> None:
        if not clock.left():
            skipped.append(f"{name} f{frames_n} {pair[0]} b{pair[1]}")
            return
        try:
            results[pair] = measure_config(built, *pair, frames, sample, settings, allocator, peak)
        except Exception as e:  # e.g. out of memory at 128 frames: recorded, the rest goes on
            results[pair] = _failure(e, backbone.device, strategy=pair[0], budget=pair[1])

    for pair in first:
        config(pair)
    for depth in settings.prefetch:
        if clock.left():
            try:
                overhead.append(measure_overhead(built, video, frames_n, settings, depth, allocator))
            except Exception as e:
                overhead.append(_failure(e, backbone.device, prefetch=depth))
        else:
            skipped.append(f"{name} f{frames_n} overhead prefetch {depth}")
    for pair in wanted:
        if pair not in first:
            config(pair)
    return {"frames": frames_n, "video": {"path": Path(video).name, "height": frames.height, "width": frames.width,
                                          "total_frames": frames.total_frames, "fps": frames.fps},
            "decoding": {"backend": frames.backend, "samples_s": [f.decode_s for f in decodes],
                         "median_s": frames.decode_s},
            "vanilla_tokens": built.cpu_geometry.vanilla_tokens("video", frames.height, frames.width, frames.count),
            "warmup_s": warm_s, "configs": [results[p] for p in wanted if p in results], "overhead": overhead}


def _once(settings: GpuBenchSettings) -> GpuBenchSettings:
    from dataclasses import replace
    return replace(settings, repeats=1)


def summarize(backbones: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per backbone and frame count: the figures the issue asks for, next to its goals."""
    rows = []
    for b in backbones:
        for g in b["groups"]:
            configs = [c for c in g["configs"] if not c.get("error")]
            vanilla = next((c for c in configs if c["strategy"] == "vanilla"), None)
            planners = [c["planner"] for c in configs if c.get("planner")]
            with_prefetch = [o for o in g["overhead"] if o["prefetch"] > 0 and not o.get("error")]
            without = [o for o in g["overhead"] if o["prefetch"] == 0 and not o.get("error")]
            peaks = [c["peak_gpu_mib"] for c in configs if c["peak_gpu_mib"] is not None]
            rows.append({
                "backbone": b["name"], "frames": g["frames"],
                "peak_gpu_mib": max(peaks) if peaks else None,
                "vanilla_stages_s": vanilla["stages_s"] if vanilla else None,
                "vanilla_tokens": g["vanilla_tokens"],
                "vanilla_prefill_mfu": vanilla["prefill_mfu"] if vanilla else None,
                "outside_share_with_prefetch": with_prefetch[0]["outside_share"] if with_prefetch else None,
                "outside_share_without_prefetch": without[0]["outside_share"] if without else None,
                "planner_over_backbone_max": max((p["planner_over_backbone"] or 0.0 for p in planners), default=None),
                "planner_share_max": max((p["planner_share"] for p in planners), default=None),
                "tokens_match_all": all(c["tokens_match"] for c in configs),
                "errors": sum(1 for c in g["configs"] + g["overhead"] if c.get("error")),
            })
    return rows


def _failure(e: BaseException, device: torch.device, **where: Any) -> dict[str, Any]:
    """A measurement that raised, as a record (one failing configuration must not lose the run's others)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {**where, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}


def gpu_benchmark(settings: GpuBenchSettings, on_progress: Any = None) -> dict[str, Any]:
    """The whole bench: every backbone, frame count, strategy and budget; returns the JSON report.
    `on_progress(report)` gets the report so far after every group (to write it as it grows)."""
    import platform

    import transformers

    from resadapt_eval.backbones.tiny import build_tokenizer
    from resadapt_eval.pipeline.store import environment

    if settings.repeats < 1:
        raise UserError(f"--gpu-repeats must be at least 1, got {settings.repeats}")
    unknown = [s for s in settings.strategies if s not in STRATEGIES]
    if unknown:
        raise UserError(f"the GPU bench runs {', '.join(STRATEGIES)}; not {', '.join(unknown)}")
    for b in settings.budgets:
        parse_budget(b)
    clock = Clock(settings.deadline_s)
    device = torch.device(settings.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    device_name, peak = bf16_peak(device)
    workdir = Path(settings.workdir or tempfile.mkdtemp(prefix="resadapt-gpu-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    n_video = max(int(round(settings.video_seconds * settings.video_fps)), max(settings.frames))
    video = workdir / f"bench-{settings.video_width}x{settings.video_height}-{n_video}f.mp4"
    t = time.perf_counter()
    writer = write_video(video, n_video, settings.video_height, settings.video_width, settings.video_fps, settings.seed)
    video_s = time.perf_counter() - t
    tok = build_tokenizer()
    backbones: list[dict[str, Any]] = []
    skipped: list[str] = []
    env = environment()
    report = {
        "schema": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "device": {"type": device.type, "name": device_name, "bf16_peak_flops": peak,
                   "cuda": torch.version.cuda if device.type == "cuda" else None,
                   "count": torch.cuda.device_count() if device.type == "cuda" else 0},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version(),
                     "flash_attn_installed": importlib.util.find_spec("flash_attn") is not None,
                     "git_revision": env.get("git_revision")},
        "attention": [],
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.__dict__.items()
                     if k != "workdir"},
        "video": {"writer": writer, "frames": n_video, "height": settings.video_height,
                  "width": settings.video_width, "fps": settings.video_fps, "write_s": video_s,
                  "decoder": "harness (decord, then PyAV)" if harness_decoders() else "opencv"},
        "goals": GOALS, "backbones": backbones, "summary": [], "skipped": skipped, "complete": False, "wall_s": 0.0,
    }

    def progress(final: bool = False) -> None:
        report.update(attention=sorted({b["attention"] for b in backbones if "attention" in b}),
                      summary=summarize([b for b in backbones if "groups" in b]), wall_s=clock.elapsed(),
                      complete=final and not skipped and not any(r["errors"] for r in summarize(
                          [b for b in backbones if "groups" in b])) and all("error" not in b for b in backbones))
        if on_progress is not None:
            on_progress(report)

    for k, name in enumerate(settings.backbones):
        if settings.deadline_s is not None and clock.elapsed() >= settings.deadline_s:
            skipped.append(name)
            continue
        try:
            built = build_backbone(name, settings, tok)
            allocator_dir = workdir / f"allocator-{name}"
            entry = {**built.info, "allocator": fresh_allocator(built.backbone, allocator_dir, settings.seed),
                     "groups": []}
        except Exception as e:  # e.g. out of memory: the other backbone still runs
            backbones.append(_failure(e, device, name=name))
            continue
        backbones.append(entry)
        for i, n in enumerate(settings.frames):
            left = (len(settings.backbones) - k) * len(settings.frames) - i
            if settings.deadline_s is not None and clock.elapsed() >= settings.deadline_s:
                skipped.append(f"{name} f{n}")
                continue
            try:
                entry["groups"].append(run_group(built, str(video), n, settings, str(allocator_dir), clock,
                                                 skipped, left))
            except Exception as e:
                entry.setdefault("group_errors", []).append(_failure(e, device, frames=n)["error"])
            progress()
        del built
        import gc
        gc.collect()  # the next backbone's weights need this one's memory back
        if device.type == "cuda":
            torch.cuda.empty_cache()
    progress(final=True)
    return report


def lines(report: dict[str, Any]) -> list[str]:
    """A short human summary of a report."""
    out = [f"device {report['device']['name']} ({report['device']['type']}), attention {','.join(report['attention'])}, "
           f"torch {report['versions']['torch']}, transformers {report['versions']['transformers']}"]
    for row in report["summary"]:
        s = row["vanilla_stages_s"] or {}
        stage = ", ".join(f"{k} {v:.3f}" for k, v in s.items())
        mem = f"{row['peak_gpu_mib']:.0f} MiB" if row["peak_gpu_mib"] is not None else "n/a (CPU)"
        mfu = f"{100 * row['vanilla_prefill_mfu']:.1f}%" if row["vanilla_prefill_mfu"] is not None else "n/a"
        def pct(x):
            return f"{100 * x:.1f}%" if x is not None else "n/a"
        out.append(f"{row['backbone']} f{row['frames']}: {row['vanilla_tokens']} vanilla tokens, peak GPU {mem}, "
                   f"vanilla prefill MFU {mfu}; outside the model {pct(row['outside_share_with_prefetch'])} with "
                   f"prefetch, {pct(row['outside_share_without_prefetch'])} without; planner/backbone "
                   f"{pct(row['planner_over_backbone_max'])}; tokens match: {row['tokens_match_all']}")
        out.append(f"  vanilla stages (s): {stage}")
    if report["skipped"]:
        out.append(f"skipped (deadline): {len(report['skipped'])} measurements")
    failed = [b for b in report["backbones"] if b.get("error") or b.get("group_errors")]
    failed += [c for b in report["backbones"] for g in b.get("groups", []) for c in g["configs"] + g["overhead"]
               if c.get("error")]
    for f in failed:
        out.append(f"failed: {json.dumps(f)[:300]}")
    return out


def markdown(report: dict[str, Any]) -> str:
    """The note beside the JSON: per backbone and frame count, the issue's figures next to its goals,
    then every configuration's stages."""
    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f}%"

    def sec(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    goals = report["goals"]
    dev, ver = report["device"], report["versions"]
    out = [f"# GPU bench: {dev['name']} ({report['created'][:10]})", "",
           f"Generated by `{report.get('command', 'resadapt-eval bench gpu')}` (docs/gpu-bench.md says what each "
           f"field means). torch {ver['torch']}, transformers {ver['transformers']}, CUDA {dev['cuda']}, attention "
           f"{', '.join(report['attention']) or 'n/a'}, flash-attn installed: {ver['flash_attn_installed']}, "
           f"harness {ver['git_revision']}. Random weights from the published configurations; `resadapt-budget` with a "
           f"freshly initialised allocator head. Decoder: {report['video']['decoder']}. Complete: {report['complete']}"
           + (f" (skipped: {', '.join(report['skipped'])})" if report["skipped"] else "") + ".", "",
           "| backbone | frames | vanilla tokens | peak GPU MiB | decode | preprocess | encode | prefill | "
           "generate | prefill MFU | outside, prefetch | outside, none | planner / backbone | tokens match |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in report["summary"]:
        st = row["vanilla_stages_s"] or {}
        mem = "n/a" if row["peak_gpu_mib"] is None else f"{row['peak_gpu_mib']:.0f}"
        out.append(f"| {row['backbone']} | {row['frames']} | {row['vanilla_tokens']} | {mem} | "
                   f"{sec(st.get('decoding'))} | {sec(st.get('preprocessing'))} | {sec(st.get('vision_encoding'))} | "
                   f"{sec(st.get('prefill'))} | {sec(st.get('generation'))} | {pct(row['vanilla_prefill_mfu'])} | "
                   f"{pct(row['outside_share_with_prefetch'])} | {pct(row['outside_share_without_prefetch'])} | "
                   f"{pct(row['planner_over_backbone_max'])} | {row['tokens_match_all']} |")
    target = goals["vanilla_prefill_mfu_min"]
    out += ["", f"Goals: outside the model at most {pct(goals['outside_share_with_prefetch_max'])} with prefetch; "
            f"planner at most {pct(goals['planner_over_backbone_max'])} of the backbone's time (the largest over "
            f"resadapt-budget's budgets is shown); vanilla prefill MFU at least {pct(target['value'])} on "
            f"{target['backbone']} at {target['frames']} frames. Stage times are medians in seconds, for vanilla.", ""]
    for b in report["backbones"]:
        for g in b.get("groups", []):
            out += [f"## {b['name']}, {g['frames']} frames", "",
                    "| strategy | budget | tokens | planning | preprocess | encode | reduce | prefill | generate | "
                    "backbone | peak GPU MiB | prefill MFU |",
                    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
            for c in g["configs"]:
                if c.get("error"):
                    out.append(f"| {c['strategy']} | {c['budget']} | failed: {c['error']} |")
                    continue
                st = c["stages_s"]
                mem = "n/a" if c["peak_gpu_mib"] is None else f"{c['peak_gpu_mib']:.0f}"
                out.append(f"| {c['strategy']} | {c['budget']} | {c['tokens']['plan']} | {sec(st.get('planning'))} | "
                           f"{sec(st.get('preprocessing'))} | {sec(st.get('vision_encoding'))} | "
                           f"{sec(st.get('reduction'))} | {sec(st.get('prefill'))} | {sec(st.get('generation'))} | "
                           f"{sec(st.get('backbone_total'))} | {mem} | {pct(c['prefill_mfu'])} |")
            out.append("")
    return "\n".join(out) + "\n"


def json_path(report: dict[str, Any], template: str = "docs/gpu-bench-{device}-{date}.json") -> Path:
    """The report's file: `{device}` becomes the device's name in lower-case letters, digits and dashes
    (nvidia-h100-80gb-hbm3), `{date}` the day it ran."""
    import re
    device = re.sub(r"[^A-Za-z0-9]+", "-", report["device"]["name"]).strip("-").lower() or "cpu"
    return Path(template.format(device=device, date=report["created"][:10]))
