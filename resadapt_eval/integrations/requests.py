"""What the lmms-eval plugin does with one request, kept free of lmms-eval imports so that the core
test suite checks it: the document's visual as a Sample, strategy options as `run` reads them,
the answer text, and lmms-eval's convention for a failed request."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import yaml

from resadapt_eval.core.types import Sample

VIDEO_SUFFIXES = {".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v"}
# lmms-eval 0.7.3's own API models answer a request that failed with this marker (models/simple/openai.py,
# gemini.py) after logging the error, so a failure is visible in the logged samples, not an empty answer.
FAILED_MARKER = "[LMMS_EVAL_REQUEST_FAILED after 0 retries]"


class MultiVisualDocument(ValueError):
    """A document with more than one visual: the harness plans one video or one image per question."""


def check_one_visual(visuals: Any, task: str, split: str, doc_id: Any) -> Any:
    """The document's one visual (a video path or an image), or None for a text-only document.

    lmms-eval's Qwen models put every visual of a document into one message; a harness Sample holds
    one video or one image, and a budget is planned over that one input. A document with several
    is refused (not cut to its first visual, which would score another question than the task's)."""
    items = [v for v in (visuals or []) if v is not None]
    if len(items) > 1:
        kinds = ", ".join(sorted({"video" if _is_video(v) else type(v).__name__ for v in items}))
        raise MultiVisualDocument(
            f"resadapt: {task}/{split} document {doc_id} has {len(items)} visuals ({kinds}); the resadapt model "
            f"plans one video or one image per question, so tasks with several visuals per document (interleaved "
            f"frames, multi-image questions) are not supported: use the task's single-video variant")
    return items[0] if items else None


def _is_video(media: Any) -> bool:
    return isinstance(media, (str, Path)) and Path(media).suffix.lower() in VIDEO_SUFFIXES


def sample_for(context: str, media: Any, task: str, split: str, doc_id: Any) -> Sample:
    kind = "video" if _is_video(media) else "image"
    return Sample(id=f"{task}/{split}/{doc_id}", prompt=context, media_kind=kind,
                  media=str(media) if isinstance(media, Path) else media, target=None, meta={"task": task})


def strategy_options(cls: type, options: dict[str, Any], trust_remote_code: bool = False) -> dict[str, Any]:
    """model_args meant for the strategy, values read as YAML (as `--strategy-option`); with
    trust_remote_code=True the strategy gets it too when it takes it (resadapt loading an original
    ResAdapt allocator, which runs code shipped with it)."""
    out = {k: yaml.safe_load(v) if isinstance(v, str) else v for k, v in options.items()}
    accepted = inspect.signature(cls).parameters
    if trust_remote_code and "trust_remote_code" in accepted:
        out["trust_remote_code"] = True
    unknown = sorted(k for k in out if k not in accepted)
    if unknown:
        known = ", ".join(p for p in accepted if p not in ("self", "args", "kwargs")) or "none"
        raise ValueError(f"resadapt: strategy {getattr(cls, 'name', cls.__name__)!r} has no option "
                         f"{', '.join(unknown)} (its options: {known}; the model's own: backbone, strategy, budget, "
                         f"frames, seed, device, dtype, tokens_log, trust_remote_code)")
    return out


def flag(value: Any) -> bool:
    """A model_arg flag: lmms-eval may hand over "True"/"false" strings or bools."""
    return bool(yaml.safe_load(value)) if isinstance(value, str) else bool(value)


def answer_text(prediction: str | None, until: Any) -> str:
    """The generated text cut at the first of lmms-eval's stop strings."""
    text = prediction or ""
    for stop in until or []:
        if isinstance(stop, str) and stop and stop in text:
            text = text.split(stop)[0]
    return text


def request_failed(error: str) -> str:
    """The answer for a request whose sample ended in an error (its media could not be read, ...)."""
    return f"{FAILED_MARKER} {' '.join(str(error).split())[:200]}"
