"""Qwen2.5-VL and Qwen3-VL through Hugging Face transformers, executing plans chunk by chunk.

A plan may give every chunk of a video its own resolution. All chunks go into one
`<|vision_start|> … <|vision_end|>` block (one pad per chunk), so they stay one video: on
Qwen2.5-VL we compute the M-RoPE positions ourselves so that the temporal index runs on across
chunks with the chunks' real time offsets (what ResAdapt patches vLLM for); Qwen3-VL writes
timestamps as text and needs no patch. A video whose chunks share one size gives exactly the
input of the unchunked video.

Execution is split into stages that are timed separately: preprocess (resize + processor),
encode (vision tower), reduce (a pre-LLM token reduction, when planned), prefill (LLM over the
prompt), decode (greedy steps). Splitting also lets a plan reduce visual tokens between the vision
tower and the LLM (random-drop, VisionZip, ToMe: `reduction.py`) or inside the LLM after layer K
(FastV: `llm.py`), while every kept token keeps its original position ids.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.transforms.v2 import functional as tvF

from resadapt_eval.core.budget import Geometry
from resadapt_eval.core.types import Frames, Output, Plan, UserError
from resadapt_eval.backbones import backbone_name, register
from resadapt_eval.backbones.flops import attention_flops, llm_decode_flops, llm_prefill_flops, vision_stage_flops
from resadapt_eval.backbones.llm import InLLMPrune, LayerwiseLM, Staged, StockLM
from resadapt_eval.backbones.pyramid import pyramid_schedule
from resadapt_eval.backbones.reduction import IN_LLM_METHODS, Selection, VisualTokens, needs_vision_attention, reduce_visual
from resadapt_eval.backbones.vit_attention import BlockRecorder, scoring_block, token_attention

SUPPORTED_MODEL_TYPES = ("qwen2_5_vl", "qwen3_vl")


def greedy(logits: torch.Tensor) -> int:
    return int(logits.argmax(-1))


@dataclass(frozen=True)
class PreparedInput:
    """A plan's processor inputs and M-RoPE positions, built before execution: the runner prepares
    the next samples in a background thread while the model runs the current one."""

    key: tuple
    inputs: dict[str, Any]
    positions: torch.Tensor
    preprocess_s: float


@dataclass(frozen=True)
class LoadOptions:
    device: str | None = None
    dtype: str | None = None
    attn: str | None = None
    trust_remote_code: bool = False
    text_resume: str = "max+1"


def resolve_model_dir(source: str) -> Path:
    """A local folder as is; a hub id through the local Hugging Face cache (downloads only when online)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists() or source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise UserError(f"backbone {source!r} is not a model folder or a hub id (org/name); "
                        "pass a folder with config.json, or run `resadapt-eval list backbones`")
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
    try:
        folder = Path(snapshot_download(source, local_files_only=offline,
                                        allow_patterns=["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model"]))
    except Exception as e:
        hint = "it is not in the local cache and HF_HUB_OFFLINE is set" if offline else f"{type(e).__name__}"
        raise UserError(f"cannot get backbone {source!r}: {hint}; download it first or pass a local folder") from None
    return folder


PICKLED_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def require_safetensors(folder: Path, what: str) -> list[Path]:
    """The folder's *.safetensors files; a one-line error when it has none. A folder whose weights are
    only pickles (pytorch_model.bin, *.pt, ...) is always refused: unpickling can run arbitrary code,
    and there is deliberately no switch to allow it (convert them once with safetensors instead)."""
    folder = Path(folder)
    weights = sorted(folder.glob("*.safetensors"))
    if weights:
        return weights
    pickled = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PICKLED_WEIGHTS)
    if pickled:
        raise UserError(f"{what} {str(folder)!r} holds only pickled weights ({', '.join(pickled[:3])}"
                        f"{', ...' if len(pickled) > 3 else ''}), which can run code when loaded and are refused; "
                        f"convert them to .safetensors (safetensors.torch.save_file) and pass the folder again")
    raise UserError(f"{what} {str(folder)!r} has no .safetensors weights")


def fingerprint(model_dir: Path) -> dict[str, Any]:
    """A cheap, stable checksum of a checkpoint: config files whole, weights by size plus head and tail."""
    h = hashlib.sha256()
    for p in sorted(model_dir.iterdir()):
        if not p.is_file():
            continue
        h.update(p.name.encode())
        size = p.stat().st_size
        h.update(str(size).encode())
        with open(p, "rb") as f:
            if size <= 64 << 20:
                h.update(f.read())
            else:
                h.update(f.read(1 << 20))
                f.seek(size - (1 << 20))
                h.update(f.read())
    return {"sha256": h.hexdigest(), "path": str(model_dir)}


def pick_attention(device: torch.device, requested: str | None) -> str:
    """flash_attention_2 when it is importable on a CUDA device, sdpa otherwise (or what was asked)."""
    if requested:
        if requested == "flash_attention_2" and not _flash_attn_usable(device):
            raise UserError("flash_attention_2 needs a CUDA device and the flash-attn package "
                            "(pip install 'resadapt-eval[gpu]'); use --attn sdpa")
        return requested
    return "flash_attention_2" if _flash_attn_usable(device) else "sdpa"


def _flash_attn_usable(device: torch.device) -> bool:
    if device.type != "cuda":
        return False
    try:
        import flash_attn  # noqa: F401
    except Exception:
        return False
    return True


@register("qwen2_5_vl")
@register("qwen3_vl")
class QwenVLBackbone:
    """An unchanged Qwen-VL model that executes plans and reports exact visual-token counts."""

    def __init__(self, source: str, options: LoadOptions | None = None):
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

        options = options or LoadOptions()
        self.source = source
        self.model_dir = resolve_model_dir(source)
        self.name = backbone_name(source)
        config = AutoConfig.from_pretrained(self.model_dir, trust_remote_code=options.trust_remote_code)
        if config.model_type not in SUPPORTED_MODEL_TYPES:
            raise UserError(f"backbone {source!r} is a {config.model_type!r} model; supported: "
                            f"{', '.join(SUPPORTED_MODEL_TYPES)}")
        self.family = config.model_type
        require_safetensors(self.model_dir, "backbone")
        self.device = torch.device(options.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype_name = options.dtype or ("bfloat16" if self.device.type == "cuda" else "float32")
        self.dtype = getattr(torch, dtype_name)
        self.attn = pick_attention(self.device, options.attn)
        if options.text_resume not in ("max+1", "hf"):
            raise UserError("text_resume must be 'max+1' (original Qwen/vLLM) or 'hf' (transformers 5.x)")
        self.text_resume = options.text_resume
        processor = AutoProcessor.from_pretrained(self.model_dir, trust_remote_code=options.trust_remote_code)
        model = AutoModelForImageTextToText.from_pretrained(
            self.model_dir, dtype=self.dtype, attn_implementation=self.attn, use_safetensors=True,
            trust_remote_code=options.trust_remote_code).to(self.device).eval()
        self._attach(model, processor)
        self.fingerprint = fingerprint(self.model_dir)

    @classmethod
    def from_model(cls, model: Any, processor: Any, name: str, attn: str, text_resume: str = "max+1",
                   fingerprint_sha256: str = "") -> "QwenVLBackbone":
        """A backbone around a model and processor built in memory, with no checkpoint folder: the GPU
        bench builds the published 7B/8B configurations with random weights this way (a 16 GB
        checkpoint would only be written to be read back)."""
        self = cls.__new__(cls)
        self.source = self.name = name
        self.model_dir = None
        if model.config.model_type not in SUPPORTED_MODEL_TYPES:
            raise UserError(f"backbone {name!r} is a {model.config.model_type!r} model; supported: "
                            f"{', '.join(SUPPORTED_MODEL_TYPES)}")
        self.family = model.config.model_type
        first = next(model.parameters())
        self.device, self.dtype, self.attn, self.text_resume = first.device, first.dtype, attn, text_resume
        self._attach(model.eval(), processor)
        self.fingerprint = {"sha256": fingerprint_sha256, "path": None}
        return self

    def _attach(self, model: Any, processor: Any) -> None:
        """Take a loaded model and its processor: geometry, special token ids, end-of-sequence ids."""
        self.processor = processor
        self.model = model
        self.config = self.model.config
        self.geometry = Geometry.from_processor(self.processor, self.config)
        tok = self.processor.tokenizer
        self.video_token_id = int(self.config.video_token_id)
        self.image_token_id = int(self.config.image_token_id)
        eos = self.model.generation_config.eos_token_id
        eos = list(eos) if isinstance(eos, (list, tuple)) else [eos]
        self.eos_ids = {int(e) for e in eos + [tok.eos_token_id] if e is not None}
        # The fast tokenizer may not be entered from two threads at once ("Already borrowed"):
        # preparation runs in the prefetch thread while the main thread decodes answers.
        self._tokenizer_lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "family": self.family, "device": str(self.device),
                "dtype": str(self.dtype).replace("torch.", ""), "attn": self.attn,
                "text_resume": self.text_resume, "fingerprint": self.fingerprint["sha256"]}

    # -- inputs ------------------------------------------------------------------------------

    def _chunk_pixels(self, plan: Plan, frames: Frames) -> list[torch.Tensor]:
        """Each chunk's frames resized to the planned size with the processors' own resize call."""
        return self._chunk_pixels_of(plan.chunks, frames, plan.kind)

    def _chunk_pixels_of(self, chunks, frames: Frames, kind: str) -> list[torch.Tensor]:
        tp = self.geometry.temporal_patch_size
        out = []
        for chunk in chunks:
            idx = list(chunk.frames)
            if kind == "video" and len(idx) < tp:  # pad like the processor: repeat the last frame
                idx += [idx[-1]] * (tp - len(idx))
            x = torch.from_numpy(np.ascontiguousarray(frames.pixels[idx])).permute(0, 3, 1, 2)
            if tuple(x.shape[-2:]) != (chunk.height, chunk.width):
                x = tvF.resize(x, [chunk.height, chunk.width], interpolation=tvF.InterpolationMode.BICUBIC,
                               antialias=True)
            out.append(x)
        return out

    def build_inputs(self, plan: Plan, frames: Frames, prompt: str) -> dict[str, Any]:
        """Processor inputs for a plan: one vision block with one pad per chunk."""
        from transformers.video_utils import VideoMetadata

        proc = self.processor
        kind = plan.kind
        content = [{"type": kind}, {"type": "text", "text": prompt}]
        with self._tokenizer_lock:
            text = proc.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                            tokenize=False)
        pixels = self._chunk_pixels(plan, frames)
        f = self.geometry.factor
        largest = max(c.height * c.width for c in plan.chunks)
        if kind == "image":
            size = {"shortest_edge": f * f, "longest_edge": largest}
            with self._tokenizer_lock:
                return dict(proc(text=[text], images=[pixels[0][0]], size=size, return_tensors="pt"))
        tok = proc.tokenizer
        vs, vp, ve = "<|vision_start|>", tok.convert_ids_to_tokens(self.video_token_id), "<|vision_end|>"
        block = vs + vp + ve
        if text.count(block) != 1:
            raise RuntimeError("chat template did not produce exactly one video block")
        text = text.replace(block, vs + vp * len(plan.chunks) + ve)
        tp = self.geometry.temporal_patch_size
        metadata = []
        for chunk in plan.chunks:
            src = [frames.indices[i] for i in chunk.frames]
            src += [src[-1]] * (tp - len(src))
            metadata.append(VideoMetadata(total_num_frames=frames.total_frames, fps=frames.fps, frames_indices=src))
        size = {"shortest_edge": f * f, "longest_edge": largest * tp}
        with self._tokenizer_lock:
            return dict(proc(text=[text], videos=pixels, video_metadata=metadata, do_sample_frames=False, size=size,
                             cap_pixels_per_frame=False, return_tensors="pt"))

    # -- positions ---------------------------------------------------------------------------

    def chunk_offsets(self, plan: Plan) -> torch.Tensor:
        """Temporal position offset of each chunk (tokens_per_second · seconds), as transformers computes it."""
        tps = self.geometry.tokens_per_second
        if plan.interval_s is not None:  # evenly spaced: same float32 arithmetic as an unchunked video
            return (torch.arange(len(plan.chunks)) * (tps * torch.tensor(plan.interval_s, dtype=torch.float32))).long()
        starts = torch.tensor([c.start_s for c in plan.chunks], dtype=torch.float32)
        return (starts * tps).long()

    def positions(self, plan: Plan, inputs: dict[str, Any]) -> torch.Tensor:
        """M-RoPE position ids (3, 1, L) of the full sequence."""
        ids = inputs["input_ids"]
        if self.family == "qwen3_vl":
            pos, _ = self.model.model.get_rope_index(
                ids, mm_token_type_ids=inputs["mm_token_type_ids"], image_grid_thw=inputs.get("image_grid_thw"),
                video_grid_thw=inputs.get("video_grid_thw"))
            return pos
        grids = inputs.get("video_grid_thw") if plan.kind == "video" else inputs.get("image_grid_thw")
        offsets = self.chunk_offsets(plan) if plan.kind == "video" else torch.zeros(1, dtype=torch.long)
        return chunked_mrope_positions(ids[0], {self.video_token_id, self.image_token_id}, grids,
                                       offsets, self.geometry.merge_size, self.text_resume)[:, None, :]

    # -- frozen parts for planners -------------------------------------------------------------

    @torch.inference_mode()
    def encode_chunks(self, plan: Plan, frames: Frames) -> tuple[list[torch.Tensor], float]:
        """The vision tower's merged-token features of every chunk of `plan` (an allocator's
        thumbnails, say) and the FLOPs that took: a planner's own cost, counted in its records."""
        inputs = self.build_inputs(plan, frames, "")
        grid_key, pix_key = ("video_grid_thw", "pixel_values_videos") if plan.kind == "video" else \
            ("image_grid_thw", "pixel_values")
        grids = inputs[grid_key].to(self.device)
        getter = self.model.model.get_video_features if plan.kind == "video" else self.model.model.get_image_features
        enc = getter(inputs[pix_key].to(self.device, self.dtype), grids, return_dict=True)
        flops = vision_stage_flops(self.config.vision_config, grids.tolist()).total
        return [f.float().cpu() for f in enc.pooler_output], float(flops)

    @torch.inference_mode()
    def embed_text(self, text: str) -> torch.Tensor:
        """The LLM's input embeddings of `text` (L, hidden): cheap question features for a planner."""
        with self._tokenizer_lock:
            ids = self.processor.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        return self.model.get_input_embeddings()(ids.to(self.device))[0].float().cpu()

    @torch.inference_mode()
    def encode_frames(self, pixels: np.ndarray, side: int) -> tuple[torch.Tensor, float]:
        """Each frame on its own, resized to a `side` x `side` square, through the vision tower as an
        image: merged-token features (T, L, hidden) and the FLOPs spent. This is how a planner that
        uses this model as its own small encoder looks at a video (ResAdapt's SmolVLM look), one
        feature map per frame, whatever backbone is evaluated."""
        f = self.geometry.factor
        side = max(f, round(side / f) * f)
        x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2)
        if tuple(x.shape[-2:]) != (side, side):
            x = tvF.resize(x, [side, side], interpolation=tvF.InterpolationMode.BICUBIC, antialias=True)
        size = {"shortest_edge": side * side, "longest_edge": side * side}
        with self._tokenizer_lock:
            inputs = self.processor.image_processor(images=list(x), size=size, return_tensors="pt")
        grids = inputs["image_grid_thw"].to(self.device)
        enc = self.model.model.get_image_features(inputs["pixel_values"].to(self.device, self.dtype), grids,
                                                  return_dict=True)
        feats = torch.stack([t.float().cpu() for t in enc.pooler_output])
        return feats, float(vision_stage_flops(self.config.vision_config, grids.tolist()).total)

    @torch.inference_mode()
    def question_states(self, text: str) -> tuple[torch.Tensor, float]:
        """The language model's last hidden states over `text` alone (no chat template, no media):
        (tokens, hidden), and the FLOPs spent. ResAdapt's allocator reads the question this way."""
        with self._tokenizer_lock:
            ids = self.processor.tokenizer(text or " ", return_tensors="pt", add_special_tokens=False)["input_ids"]
        ids = ids.to(self.device)
        out = self.model.model.language_model(inputs_embeds=self.model.get_input_embeddings()(ids))
        n = int(ids.shape[1])
        flops = llm_prefill_flops(self.config.text_config, float(n)) - 2.0 * int(self.config.text_config.hidden_size) \
            * int(self.config.text_config.vocab_size)  # no LM head: only the hidden states are read
        return out.last_hidden_state[0].float().cpu(), float(flops)

    def _embed(self, ids: torch.Tensor, visual: torch.Tensor, pixels: torch.Tensor, grids: torch.Tensor,
               kind: str) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """The prompt's input embeddings with the vision tower's merged tokens in the visual slots:
        (embeds, visual features, deepstack levels)."""
        getter = self.model.model.get_video_features if kind == "video" else self.model.model.get_image_features
        enc = getter(pixels, grids, return_dict=True)
        feats = torch.cat(list(enc.pooler_output), dim=0)
        # transformers >= 5.2x splits each deepstack level per chunk (a tuple); earlier 5.x gives one tensor
        deepstack = [d if torch.is_tensor(d) else torch.cat(list(d), dim=0)
                     for d in (getattr(enc, "deepstack_features", None) or [])]
        embeds = self.model.get_input_embeddings()(ids)
        embeds[0, visual] = feats.to(embeds.dtype)
        return embeds, feats, deepstack

    def _decode(self, runner: Any, hidden: torch.Tensor, cache: Any, pos: torch.Tensor, max_new_tokens: int,
                pick: Any) -> list[int]:
        """Token ids from the prefill's last hidden state until end of sequence; `pick` chooses each
        token from the logits (argmax for evaluation, a draw for CAPO's rollouts)."""
        next_id = pick(self.model.lm_head(hidden))
        generated = [next_id]
        last = pos[:, :, -1:]
        embed = self.model.get_input_embeddings()
        while next_id not in self.eos_ids and len(generated) < max_new_tokens:
            last = last + 1
            step = torch.tensor([[next_id]], device=self.device)
            next_id = pick(self.model.lm_head(runner.step(embed(step), last, cache)))
            generated.append(next_id)
        return generated

    @torch.inference_mode()
    def sample_answers(self, plan: Plan, frames: Frames, prompt: str, max_new_tokens: int, n: int,
                       temperature: float, generator: torch.Generator, cache: dict | None = None) -> list[str]:
        """`n` answers drawn at `temperature` from one prefill of the plan's input: the rollouts CAPO
        scores (the original samples 2 answers per allocation at temperature 1). Evaluation stays greedy
        (`execute`); a plan with a token reduction is not sampled here.

        `cache` (one dict per sample, kept by the caller) makes many allocations of one sample cheap
        on Qwen2.5-VL: the vision tower encodes each chunk as its own grid (attention never crosses
        chunks), so a chunk's features depend only on its frames and size and are encoded once; the
        prompt's text tokens are tokenized once. The input is the same as `build_inputs` gives (tested).
        """
        import copy

        if plan.reduction is not None:
            raise ValueError("sample_answers runs plans without a token reduction")
        if cache is not None and self.family == "qwen2_5_vl" and plan.kind == "video":
            embeds, ids, visual, grids = self._cached_video_input(plan, frames, prompt, cache)
            pos = self.positions(plan, {"input_ids": ids.cpu(), "video_grid_thw": grids}).to(self.device)
            deepstack: list[torch.Tensor] = []
        else:
            inputs = self.build_inputs(plan, frames, prompt)
            ids = inputs["input_ids"].to(self.device)
            visual = (ids[0] == self.video_token_id) | (ids[0] == self.image_token_id)
            grid_key, pix_key = ("video_grid_thw", "pixel_values_videos") if plan.kind == "video" else \
                ("image_grid_thw", "pixel_values")
            embeds, _, deepstack = self._embed(ids, visual, inputs[pix_key].to(self.device, self.dtype),
                                               inputs[grid_key].to(self.device), plan.kind)
            pos = self.positions(plan, inputs).to(self.device)
        runner = StockLM(self.model.model.language_model)
        pre = runner.prefill(embeds, pos, visual, deepstack)

        def draw(logits: torch.Tensor) -> int:
            probs = torch.softmax(logits.float().reshape(-1) / temperature, -1).cpu()
            return int(torch.multinomial(probs, 1, generator=generator))

        answers = []
        for i in range(n):
            kv = pre.cache if i == n - 1 else copy.deepcopy(pre.cache)
            generated = self._decode(runner, pre.last_hidden, kv, pos, max_new_tokens, draw)
            with self._tokenizer_lock:
                answers.append(self.processor.tokenizer.decode(generated, skip_special_tokens=True).strip())
        return answers

    def _cached_video_input(self, plan: Plan, frames: Frames, prompt: str, cache: dict):
        """(embeds, input ids, visual mask, chunk grids) of a Qwen2.5-VL video plan, from per-chunk
        features cached under (frames, height, width) and the prompt's text around its one video block."""
        f, tp = self.geometry.factor, self.geometry.temporal_patch_size
        keys = [(tuple(c.frames), c.height, c.width) for c in plan.chunks]
        missing = [i for i, k in enumerate(keys) if k not in cache]
        if missing:
            pixels = self._chunk_pixels_of([plan.chunks[i] for i in missing], frames, plan.kind)
            largest = max(plan.chunks[i].height * plan.chunks[i].width for i in missing)
            with self._tokenizer_lock:
                vid = self.processor.video_processor(videos=pixels, do_sample_frames=False, return_tensors="pt",
                                                     size={"shortest_edge": f * f, "longest_edge": largest * tp})
            grids = vid["video_grid_thw"].to(self.device)
            enc = self.model.model.get_video_features(vid["pixel_values_videos"].to(self.device, self.dtype), grids,
                                                      return_dict=True)
            for i, feat in zip(missing, enc.pooler_output):
                cache[keys[i]] = feat
        if "template" not in cache:
            probe = self.build_inputs(plan, frames, prompt)["input_ids"][0]
            vis = ((probe == self.video_token_id) | (probe == self.image_token_id)).nonzero().flatten()
            cache["template"] = (probe[: int(vis[0])], probe[int(vis[-1]) + 1:])
        prefix, suffix = cache["template"]
        feats = torch.cat([cache[k] for k in keys], dim=0)
        ids = torch.cat([prefix, torch.full((feats.shape[0],), self.video_token_id, dtype=prefix.dtype), suffix])
        ids = ids[None].to(self.device)
        visual = ids[0] == self.video_token_id
        embeds = self.model.get_input_embeddings()(ids)
        embeds[0, visual] = feats.to(embeds.dtype)
        m = self.geometry.merge_size
        grids = torch.tensor([[1, c.height // (f // m), c.width // (f // m)] for c in plan.chunks])
        return embeds, ids, visual, grids

    # -- execution ---------------------------------------------------------------------------

    @torch.inference_mode()
    def prepare(self, plan: Plan, frames: Frames, prompt: str) -> PreparedInput:
        """The CPU-side half of `execute` (resize, processor, positions); safe to run in another thread."""
        start = time.perf_counter()
        inputs = self.build_inputs(plan, frames, prompt)
        pos = self.positions(plan, inputs)
        return PreparedInput(plan.input_key(), inputs, pos, time.perf_counter() - start)

    @torch.inference_mode()
    def execute(self, plan: Plan, frames: Frames, prompt: str, max_new_tokens: int,
                prepared: PreparedInput | None = None) -> Output:
        """Run one plan: returns the greedy answer, exact visual-token counts, timings and FLOPs.

        With `prepared` (from `prepare`, possibly built in another thread), its preprocessing time
        is charged to this output, so timings read as if the sample ran alone.
        """
        if prepared is None or prepared.key != plan.input_key():
            prepared = self.prepare(plan, frames, prompt)
        timer = _Timer(self.device, already=prepared.preprocess_s)
        inputs = prepared.inputs
        ids = inputs["input_ids"].to(self.device)
        visual = (ids[0] == self.video_token_id) | (ids[0] == self.image_token_id)
        pos = prepared.positions.to(self.device)
        grid_key, pix_key = ("video_grid_thw", "pixel_values_videos") if plan.kind == "video" else \
            ("image_grid_thw", "pixel_values")
        grids = inputs[grid_key].to(self.device)
        pixels = inputs[pix_key].to(self.device, self.dtype)
        timer.lap("preprocess")

        red = plan.reduction
        reduction_flops = 0.0
        visual_model = self.model.model.visual
        recorder = None
        if red is not None and red.method not in IN_LLM_METHODS and needs_vision_attention(red.method, red.params):
            recorder = BlockRecorder(visual_model, scoring_block(self.config.vision_config))
        with recorder or nullcontext():
            embeds, feats, deepstack = self._embed(ids, visual, pixels, grids, plan.kind)
        timer.lap("encode")
        n_input_visual = int(visual.sum())
        prompt_tokens = int(embeds.shape[1])

        if red is not None and red.method not in IN_LLM_METHODS:
            attention = keys = None
            if recorder is not None:
                attention, keys = token_attention(visual_model, recorder.block, grids, recorder.captured)
            merge = self.geometry.merge_size ** 2
            tokens = VisualTokens(feats, tuple(int(g.prod()) // merge for g in grids), attention, keys,
                                  int(self.config.vision_config.num_heads))
            sel = reduce_visual(red.method, tokens, red.keep, red.seed, red.params)
            reduction_flops = sel.flops
            if recorder is not None:
                reduction_flops += attention_flops(self.config.vision_config, [int(g.prod()) for g in grids])
            embeds, pos, visual, deepstack = _apply_selection(sel, embeds, pos, visual, feats, deepstack)
            prompt_tokens = int(embeds.shape[1])
            timer.lap("reduce")

        lm = self.model.model.language_model
        if red is not None and red.method in IN_LLM_METHODS:
            n_layers = len(lm.layers)
            if red.method == "fastv":
                if not 1 <= red.layer < n_layers:
                    raise UserError(f"fastv prunes after layer K with 1 <= K < {n_layers} on this {n_layers}-layer "
                                    f"LLM, got K={red.layer}; pass --strategy-option layer=K")
                prune: InLLMPrune | Staged = InLLMPrune(red.layer, red.keep)
            elif red.method == "pyramiddrop":
                prune = Staged(pyramid_schedule(n_layers, n_input_visual, red.keep, red.params))
            else:
                raise ValueError(f"token reduction {red.method!r} cannot run inside the LLM (fastv, pyramiddrop)")
            runner = LayerwiseLM(lm)
            pre = runner.prefill(embeds, pos, visual, deepstack, prune)
            reduction_flops = pre.scoring_flops
        else:
            runner = StockLM(lm)
            pre = runner.prefill(embeds, pos, visual, deepstack)
        timer.lap("prefill")
        generated = self._decode(runner, pre.last_hidden, pre.cache, pos, max_new_tokens, greedy)
        timer.lap("decode")
        with self._tokenizer_lock:
            text = self.processor.tokenizer.decode(generated, skip_special_tokens=True).strip()

        patches = int(grids.prod(-1).sum())
        vis = vision_stage_flops(self.config.vision_config, grids.tolist())
        layer_tokens = [float(n) for n in pre.layer_tokens]
        llm = llm_prefill_flops(self.config.text_config, float(prompt_tokens), layer_tokens)
        decode = llm_decode_flops(self.config.text_config, layer_tokens, len(generated) - 1)
        layer_mean = sum(pre.layer_visual) / len(pre.layer_visual)
        # `total` is the prefill cost (vision + LLM prefill + a reduction's own scoring; the runner adds a
        # planner's); decoding is recorded beside it, since it depends on the answer's length, not the plan.
        flops = {"vision": vis.total, "vision_encode": vis.encode, "vision_merger": vis.merger, "llm_prefill": llm,
                 "decode": decode, "total": vis.total + llm}
        if red is not None:  # the method's own scoring cost, part of the total
            flops.update(reduction=reduction_flops, total=vis.total + llm + reduction_flops)
        visual_tokens = pre.layer_visual[-1]
        if red is not None and red.method == "pyramiddrop":  # its budget: the mean over the layers it prunes
            first = min(layer for layer, _ in prune.stages) if prune.stages else len(pre.layer_visual)
            pruned = pre.layer_visual[first:] or pre.layer_visual[-1:]
            visual_tokens = sum(pruned) // len(pruned)
        return Output(text=text, visual_tokens=visual_tokens, encoder_patches=patches,
                      prompt_tokens=prompt_tokens, generated_tokens=len(generated), timings=timer.result(),
                      flops=flops, llm_visual_tokens=layer_mean, llm_visual_tokens_input=int(n_input_visual))


def _apply_selection(sel: Selection, embeds: torch.Tensor, pos: torch.Tensor, visual: torch.Tensor,
                     feats: torch.Tensor, deepstack: list[torch.Tensor]):
    """The sequence after a pre-LLM reduction: text plus kept visual tokens at their own positions,
    each carrying what the selection gathered into it (deepstack features alike)."""
    vis_idx = visual.nonzero().squeeze(1)
    keep = ~visual
    keep[vis_idx[sel.keep.to(vis_idx.device)]] = True
    embeds, pos, visual = embeds[:, keep], pos[:, :, keep], visual[keep]
    embeds[0, visual] = sel.gather(feats).to(embeds.dtype)
    return embeds, pos, visual, [sel.gather(d) for d in deepstack]


def chunked_mrope_positions(ids: torch.Tensor, visual_ids: set[int], grids: torch.Tensor, offsets: torch.Tensor,
                            merge: int, text_resume: str) -> torch.Tensor:
    """Qwen2.5-VL M-RoPE positions (3, L) where one run of visual pads is one video of several chunks.

    All chunks share the anchor (the position after the preceding text); chunk j's temporal index
    is anchor + offsets[j] and its h/w indices restart at the anchor. Text then resumes at
    max+1 (original Qwen code, vLLM, ResAdapt) or, with 'hf', at anchor + the largest spatial side
    (transformers 5.x for an unchunked video).
    """
    is_vis = torch.zeros(len(ids), dtype=torch.bool)
    for v in visual_ids:
        is_vis |= ids.cpu() == v
    parts: list[torch.Tensor] = []
    cur = 0
    i = 0
    chunk = 0
    L = len(ids)
    while i < L:
        j = i
        while j < L and is_vis[j] == is_vis[i]:
            j += 1
        n = j - i
        if not is_vis[i]:
            parts.append(torch.arange(n).expand(3, n) + cur)
            cur += n
        else:
            anchor, used, span, run = cur, 0, 0, []
            while used < n:
                t, h, w = (int(x) for x in grids[chunk])
                h, w = h // merge, w // merge
                if t != 1:
                    raise RuntimeError(f"a chunk must be one temporal patch, got grid t={t}")
                grid = torch.stack(torch.meshgrid(offsets[chunk:chunk + 1], torch.arange(h), torch.arange(w),
                                                  indexing="ij"))
                run.append(grid.reshape(3, -1) + anchor)
                used += t * h * w
                span = max(span, h, w)
                chunk += 1
            if used != n:
                raise RuntimeError(f"visual grids cover {used} tokens but the run has {n}")
            block = torch.cat(run, dim=1)
            parts.append(block)
            cur = anchor + span if text_resume == "hf" else int(block.max()) + 1
        i = j
    return torch.cat(parts, dim=1)


class _Timer:
    """Wall-clock laps; synchronises CUDA so that times are real."""

    def __init__(self, device: torch.device, already: float = 0.0):
        """`already`: seconds of preprocessing done before (charged to the first lap and the total)."""
        self.device = device
        self.start = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}
        self.already = already

    def lap(self, name: str) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.laps[name] = self.laps.get(name, 0.0) + now - self.last
        self.last = now

    def result(self) -> dict[str, float]:
        out = dict(self.laps)
        if self.already:
            out["preprocess"] = out.get("preprocess", 0.0) + self.already
        out["backbone_total"] = self.last - self.start + self.already
        return out
