"""Charades-STA temporal grounding in the official layout, scored as lmms-eval 0.7.3 plus a robust parser.

lmms-eval 0.7.3 task `temporal_grounding_charades` (https://github.com/EvolvingLMMs-Lab/lmms-eval, MIT
licence, Copyright (c) LMMs-Lab), re-implemented in our own code with identical behaviour:

* the prompt of `temporal_grounding_doc_to_text` with the `default` pre/post prompts of `charades.yaml`
  (`pre + caption + ". " + post`; the upstream typo "seonds" is kept);
* `extract_time` (the answer parser) and `iou`, and the R@{0.3,0.5,0.7} / mIoU definitions of
  `_temporal_grounding_compute_metrics` (unparseable or not exactly one interval -> IoU 0).

Parity with the original functions is checked by `tests/data/charades_sta_0.7.3.json`.

Layout (the lmms-eval cache, `$HF_HOME/charades_sta`): the HF dataset repo `lmms-eval/charades_sta`
(formerly `lmms-lab/charades_sta`) with `data/test-00000-of-00001.parquet` (3720 rows: `video` a file
name such as `3MSZA.mp4`, `caption`, `timestamp` = [start, end] seconds stored as float16) and the video
zips `Charades_v1_480_part_{1..4}.zip` unpacked to `Charades_v1_480/<video>`. Timestamps are read as
given (float16 widened exactly: 24.3 arrives as 24.296875), never rounded - as upstream, whose
ground truth is the same float after `str()` / `ast.literal_eval`.

Scoring differences from upstream, on purpose:

* we score **per row**. Upstream keys each result by "video>>>caption>>>[gt]" and merges the dict,
  so identical (video, caption, gt) triples count once (the last prediction wins). The full test split
  has such duplicates; `upstream_metrics` reproduces the deduplicated aggregate, and
  `Sample.meta["upstream_key"]` holds the key so duplicates can be counted.
* besides the upstream parser (`r@0.3`, `r@0.5`, `r@0.7`, `iou`, `unparsed`) every prediction is also
  scored with our robust parser (`r@0.3_robust`, ..., `iou_robust`, `unparsed_robust`), which reads
  formats upstream misses (`[2.5, 7.0]`, "starts at 2.5s and ends at 7.0s", JSON, ...).
* a missing video is an error record, not `sys.exit` as upstream.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from resadapt_eval.core.types import Sample, UserError
from resadapt_eval.adapters import register
from resadapt_eval.adapters.base import TaskCard, evidence_meta, sample_or_error

__all__ = [
    "CharadesSTA", "PRE_PROMPT", "POST_PROMPT", "THRESHOLDS", "charades_prompt", "extract_time_lmms",
    "temporal_iou", "parse_interval", "upstream_key", "upstream_metrics",
]

PRE_PROMPT = (
    "Please find the visual event described by a sentence in the video, determining its starting and ending "
    "times. The format should be: 'The event happens in the start time - end time'. For example, The event "
    "'person turn a light on' happens in the 24.3 - 30.4 seonds. Now I will give you the textual sentence: "
)
POST_PROMPT = "Please return its start time and end time."
THRESHOLDS = (0.3, 0.5, 0.7)


def charades_prompt(caption: str, pre_prompt: str = PRE_PROMPT, post_prompt: str = POST_PROMPT) -> str:
    """lmms-eval's `temporal_grounding_doc_to_text`: pre + caption + '. ' + post (no stripping)."""
    return f"{pre_prompt}{caption}. {post_prompt}"


# --------------------------------------------------------------------------------------------------
# lmms-eval 0.7.3 `extract_time`, same behaviour (quirks included: every "to" becomes "-", sentences
# split on ! ? and newlines only, Python's Unicode \d, only the first interval is kept).
# --------------------------------------------------------------------------------------------------

_STALE_EXAMPLE = "a specific example is : 20.8 - 30.0 seconds"
# upstream's list is starts/ends/happens in/start time/end time/start/end/happen: these three cover it
_KEYWORDS = ("start", "end", "happen")
_CLOCK = r"\d{1,2}:\d{2}(?::\d{2})?"
_NUMBER = r"\d+(?:\.\d+)?"
_DASH = r"[–-]"
_L_CLOCK_RANGE = re.compile(rf"\b({_CLOCK})\s*{_DASH}\s*({_CLOCK})\b")
# `(?<!\d)` is not in upstream's patterns and changes no match (a match starting inside a digit run
# implies one starting at the run's first digit, which the left-to-right search finds first); it only
# turns upstream's quadratic scan of long digit runs into a linear one.
_L_RANGE = re.compile(rf"(?<!\d)({_NUMBER})\s*{_DASH}\s*({_NUMBER})")
_L_CLOCK = re.compile(rf"\b({_CLOCK})\b")
_L_FIRST_NUMBER = re.compile(rf"\b({_NUMBER})\b")
_L_LOOSE_RANGE = re.compile(rf"(?<!\d)({_NUMBER})\s*s?\s*{_DASH}\s*({_NUMBER})\s*s?")


def _clock_seconds(text: str) -> float:
    parts = [float(p) for p in text.split(":")]
    seconds = 0.0
    for p in parts:
        seconds = seconds * 60 + p
    return seconds


def _first_range(sentences: list[str], pattern: re.Pattern[str], convert) -> list[float] | None:
    for sentence in sentences:
        m = pattern.search(sentence)
        if m:
            return [convert(m.group(1)), convert(m.group(2))]
    return None


def _first_pair(values: list[float]) -> list[float] | None:
    return values[:2] if len(values) >= 2 else None


def extract_time_lmms(text: str) -> list[list[float]]:
    """lmms-eval 0.7.3 `extract_time`: `[[start, end]]` (start <= end) or `[]` when nothing parses."""
    text = text.lower().replace(_STALE_EXAMPLE, "").replace("to", "-")
    sentences = re.split(r"[!?\n]", text)
    candidates = [s for s in sentences if any(k in s for k in _KEYWORDS)] or sentences
    pair = (
        _first_range(candidates, _L_CLOCK_RANGE, _clock_seconds)
        or _first_range(candidates, _L_RANGE, float)
        # every clock time of every candidate sentence, paired in order
        or _first_pair([_clock_seconds(t) for s in candidates for t in _L_CLOCK.findall(s)])
        # the first number of each candidate sentence, paired in order
        or _first_pair([float(m.group(1)) for s in candidates if (m := _L_FIRST_NUMBER.search(s))])
        or _first_range(candidates, _L_LOOSE_RANGE, float)
    )
    if pair is None:
        return []
    start, end = pair
    return [[start, end] if end > start else [end, start]]


def temporal_iou(a: Iterable[float], b: Iterable[float]) -> float:
    """lmms-eval 0.7.3 `iou`: overlap / (max end - min start); 0 when that span is not positive."""
    (a0, a1), (b0, b1) = a, b
    span = max(a1, b1) - min(a0, b0)
    return 0.0 if span <= 0 else max(min(a1, b1) - max(a0, b0), 0) / span


# --------------------------------------------------------------------------------------------------
# Our robust parser.
# --------------------------------------------------------------------------------------------------

# a time: h:mm:ss / m:ss (optional fraction) or a plain number, not glued to other digits or words
_TIME = r"(?<![\w.:])(\d{1,2}(?::\d{2}){1,2}(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?![\d:]|\.\d)"
_UNIT = r"(?:\s*(?:seconds?|secs?|s)\b)?"
_SEP = r"\s*(?:-{1,2}|[–—−~]|to\b|until\b|till\b|through\b)\s*"
_START_KW = r"\b(?:start|begin)\w*"
_END_KW = r"\b(?:end|finish|stop)\w*"
_R_START = re.compile(rf"{_START_KW}(?:(?!{_END_KW})\D){{0,40}}?{_TIME}", re.IGNORECASE)
_R_END = re.compile(rf"{_END_KW}\D{{0,40}}?{_TIME}", re.IGNORECASE)
_R_BRACKET = re.compile(rf"[\[(]\s*{_TIME}{_UNIT}\s*[,;]\s*{_TIME}{_UNIT}\s*[\])]", re.IGNORECASE)
_R_RANGE = re.compile(rf"{_TIME}{_UNIT}{_SEP}{_TIME}", re.IGNORECASE)
_R_BETWEEN = re.compile(rf"\bbetween\s+{_TIME}{_UNIT}\s+and\s+{_TIME}", re.IGNORECASE)
_R_BARE = re.compile(rf"\W*{_TIME}{_UNIT}\s*(?:[,;]|\s|\band\b)\s*{_TIME}{_UNIT}\W*", re.IGNORECASE)
_R_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
# examples a model may echo: upstream's stale one, and the one in our prompt
_R_ECHOED_EXAMPLES = re.compile(
    r"a specific example is : 20\.8 - 30\.0 seconds|for example, the event 'person turn a light on' happens in "
    r"the 24\.3 - 30\.4 seonds", re.IGNORECASE)


def _robust_seconds(token: str) -> float:
    return _clock_seconds(token) if ":" in token else float(token)


def _robust_pair(text: str) -> tuple[float, float] | None:
    start = _R_START.search(text)
    if start:
        end = _R_END.search(text, start.end())
        if end:
            return _robust_seconds(start.group(1)), _robust_seconds(end.group(1))
    for pattern in (_R_BRACKET, _R_RANGE, _R_BETWEEN):
        m = pattern.search(text)
        if m:
            return _robust_seconds(m.group(1)), _robust_seconds(m.group(2))
    m = _R_BARE.fullmatch(text)
    if m:
        return _robust_seconds(m.group(1)), _robust_seconds(m.group(2))
    return None


def parse_interval(text: str) -> list[float] | None:
    """Our parser: `[start, end]` in seconds (start <= end), or None.

    Looks at the answer after a closing `</think>` and inside `\\boxed{...}` first, then, in order:
    a start keyword (start/starts/starting/begin..., `"start_time":`) followed by a time and a later end
    keyword (end/ends/finish/stop...) followed by a time; `[a, b]` / `(a, b)`; a range `a - b`,
    `a to b`, `a until b` (also en/em dash, minus sign, `~`); `between a and b`; an answer that is just
    two times (`2.5, 7.0`). Times are seconds (`2.5`, `.5`, `2.5s`, `7 seconds`) or clock times
    (`1:02` = 62 s, `00:02.5` = 2.5 s, `0:01:02`). The first match wins. Echoes of the prompt's example
    ("... happens in the 24.3 - 30.4 seonds") and of upstream's stale example are ignored.
    """
    if not isinstance(text, str):
        return None
    text = unicodedata.normalize("NFKC", text)
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    text = _R_ECHOED_EXAMPLES.sub(" ", text)
    for part in [*reversed(_R_BOXED.findall(text)), text]:
        try:
            pair = _robust_pair(part)
        except ValueError:
            pair = None
        if pair and all(math.isfinite(v) for v in pair):
            start, end = pair
            return [min(start, end), max(start, end)]
    return None


# --------------------------------------------------------------------------------------------------
# Scores and upstream aggregation.
# --------------------------------------------------------------------------------------------------

def _interval_scores(gt: list[float], pred: list[float] | None, suffix: str) -> dict[str, float]:
    value = temporal_iou(gt, pred) if pred is not None else 0.0
    scores = {f"r@{t}{suffix}": float(value >= t) for t in THRESHOLDS}
    scores[f"iou{suffix}"] = float(value)
    scores[f"unparsed{suffix}"] = float(pred is None)
    return scores


def upstream_key(video: str, caption: str, timestamp: list[float]) -> str:
    """The key lmms-eval's process_results files a prediction under ("video>>>caption>>>[s, e]")."""
    return f"{video}>>>{caption}>>>{[float(t) for t in timestamp]}"


def upstream_metrics(pairs: Iterable[tuple[str, str]]) -> dict[str, float]:
    """lmms-eval's aggregate (percent) over (upstream_key, prediction) pairs: duplicate keys count once,
    the last prediction of a key wins (as its dict update)."""
    merged = dict(pairs)
    ious = []
    for key, prediction in merged.items():
        gt = [float(v) for v in key.rsplit(">>>", 1)[-1].strip("[]").split(",")]
        times = extract_time_lmms(prediction)
        ious.append(temporal_iou(gt, times[0]) if len(times) == 1 else 0.0)
    n = len(ious)
    out = {f"IOU@{int(t * 10)}": (sum(v >= t for v in ious) * 100 / n if n else 0) for t in THRESHOLDS}
    out["mIOU"] = sum(ious) * 100 / n if n else 0
    return out


@register("charades_sta")
class CharadesSTA:
    # The version of this adapter's prompt, parse and scoring rules: part of every run's config hash.
    # Bump it with any change that can alter a prompt, a parsed answer or a score (tests/test_adapter_versions.py).
    version = "1"
    card_keys = ("videos", "parser")  # card options it reads
    metrics = tuple(f"{m}{s}" for s in ("", "_robust") for m in ("r@0.3", "r@0.5", "r@0.7", "iou", "unparsed"))
    main_metric = "iou"
    breakdown_keys: tuple[str, ...] = ()
    PARSERS = {"lmms": "iou", "robust": "iou_robust"}  # card option `parser`: whose mIoU is the main metric

    def configure(self, card: TaskCard) -> None:
        """Card options that shape scoring: `parser` (lmms, the default, or robust) picks the main metric;
        both parsers' scores are in every record either way."""
        parser = str(card.options.get("parser", "lmms"))
        if parser not in self.PARSERS:
            raise UserError(f"charades_sta: unknown parser {parser!r}; known: {', '.join(self.PARSERS)}")
        self.main_metric = self.PARSERS[parser]

    def load(self, card: TaskCard) -> list[Sample]:
        self.configure(card)
        rows = card.read_parquet("data/test-*.parquet", "annotation parquet")
        samples = []
        for i, row in rows.iterrows():
            i = int(i)
            samples.append(sample_or_error(lambda: self.sample_from_row(row.to_dict(), card, i), i, None, "video",
                                           fallback_id=f"{i:04d}-row"))
        return samples

    def sample_from_row(self, row: dict[str, Any], card: TaskCard, index: int = 0) -> Sample:
        """One annotation row as a Sample (prompt built as lmms-eval 0.7.3 does)."""
        video, caption = str(row["video"]), str(row["caption"])
        meta: dict[str, Any] = {"video": video, "caption": caption, "row": index}
        meta.update(evidence_meta(row))
        media: str | None = None
        target = _timestamp(row["timestamp"])
        if not isinstance(row["caption"], str) or not row["caption"].strip():
            meta["media_error"] = f"annotation row {index} has no caption"
        elif target is None:
            meta["media_error"] = f"bad timestamp {row['timestamp']!r} in row {index}"
        else:
            meta["upstream_key"] = upstream_key(video, caption, target)
            try:
                media = str(card.safe_path(f"{card.options.get('videos', 'Charades_v1_480')}/{video}"))
            except ValueError as e:
                meta["media_error"] = str(e)
        return Sample(
            id=f"{index:04d}-{Path(video).stem}",
            prompt=charades_prompt(caption),
            media_kind="video",
            media=media,
            target=target,
            meta=meta,
            question=caption if isinstance(caption, str) else "",
        )

    def evidence_window(self, sample: Sample) -> tuple[float, float] | None:
        """The ground-truth window in seconds: the runner records the share of tokens spent inside it."""
        target = sample.target
        return (float(target[0]), float(target[1])) if isinstance(target, (list, tuple)) and len(target) == 2 else None

    def score(self, sample: Sample, prediction: str) -> tuple[dict[str, float], Any]:
        gt = [float(t) for t in sample.target]
        try:
            times = extract_time_lmms(prediction)
        except Exception:   # upstream logs the error and scores IoU 0
            times = []
        upstream = times[0] if len(times) == 1 else None
        robust = parse_interval(prediction)
        scores = {**_interval_scores(gt, upstream, ""), **_interval_scores(gt, robust, "_robust")}
        return scores, {"lmms": upstream, "robust": robust}


def _timestamp(value: Any) -> list[float] | None:
    """[start, end] as Python floats (float16 widened exactly), or None for a malformed value."""
    try:
        values = [float(v) for v in np.asarray(value, dtype=np.float64).reshape(-1)]
    except (TypeError, ValueError):
        return None
    if len(values) != 2 or not all(math.isfinite(v) for v in values):
        return None
    return values
