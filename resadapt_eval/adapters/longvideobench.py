"""LongVideoBench validation in the official layout, prompted and scored as lmms-eval 0.7.3 `longvideobench_val_v`.

Re-implements, in our own code with identical behaviour, parts of lmms-eval 0.7.3
(https://github.com/EvolvingLMMs-Lab/lmms-eval, MIT licence, Copyright (c) LMMs-Lab),
`lmms_eval/tasks/longvideobench/utils.py`:

* `longvideobench_doc_to_text` with the `default` kwargs of `longvideobench_val_v.yaml`
  (empty pre-prompt, post-prompt "Answer with the option's letter from the given choices directly.\\n");
* `longvideobench_process_results` + `parse_multi_choice_response`: the parsed answer is the first
  character in [ABCDE] after deleting a few answer prefixes, gold is chr(65 + correct_choice);
* `insert_subtitles_into_frames` / `compute_frame_timestamps` (the `_i` variant), for the optional
  subtitle prefix.

Parity with the original functions is checked on the golden cases in
`tests/data/longvideobench_0.7.3.json`.

Data (the HF dataset repo `longvideobench/LongVideoBench`, gated): `validation-00000-of-00001.parquet`
(what `datasets.load_dataset` and so lmms-eval read: video_id, id, video_path, subtitle_path,
correct_choice, question, option0..option4 with "N/A" for unused ones, duration, duration_group,
question_category, topic_category, starting_timestamp_for_subtitles) and `lvb_val.json` (the same
rows, options as a `candidates` list, plus level, position, ...). Either is read; JSON candidates are
padded to option0..option4 with "N/A" so both behave the same. Videos: `<root>/videos/<video_path>`,
subtitles `<root>/subtitles/<subtitle_path>`, as the repo's tar files unpack.

Upstream quirks kept on purpose:

* Parsing takes the FIRST capital A-E anywhere, so "Answer: C" parses as A, "Based on the video, C"
  as B, "Clearly D" as C. Lower-case letters never count. An E is accepted even on a 4-option question
  (and is then wrong).
* The prompt lists every option that is not "N/A", while the choices for the random fallback stop at
  the first "N/A" (they differ only if an "N/A" sits between real options).
* No letter found: lmms-eval picks `random.choice(choices)` from the global `random` stream (seeded
  once per run, so the pick depends on sample order and sharding). Here the pick comes from a
  `random.Random` seeded by a stable hash of ("longvideobench", sample id): reproducible per sample.
  `accuracy` counts such picks as lmms-eval does; `accuracy_no_fallback` counts them wrong. The
  parsed answer records `{"letter": ..., "fallback": bool}`.
* lmms-eval reports accuracy as a fraction; our summary reports mean x 100 (same number in percent).

Subtitles (card option `subtitles: true`; off by default, as in `longvideobench_val_v`): the
subtitle lines are put before the question, one per line, in the `_i` task's wording
`{pre}{line}\\n{line}...\\n{question}\\n{post}` but without its `<image>` placeholders. The `_i`
task interleaves 16 decoded frames with the lines at their times; that is not done here because our
backbones feed each video as one block of frames (one vision_start ... vision_end span, needed for the
budgeted plans and M-RoPE positions), so text cannot sit between frames. Which lines:
`subtitle_selection: inside` (default) keeps every line whose time span, shifted by
starting_timestamp_for_subtitles, overlaps the clip [0, duration]; `frames` keeps exactly the lines
the `_i` task keeps (a line, widened to 1 s if shorter, must strictly contain one of the
`subtitle_frames` (16) timestamps of `compute_frame_timestamps`, with its quirks: a non-float end
time becomes the clip duration before the shift). Subtitle files are the official JSON
(`{"timestamp": [s, e], "text"}` or `{"start": "HH:MM:SS.mmm", "end", "line"}` entries) or `.srt`.
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from resadapt_eval.core.types import Sample, UserError
from resadapt_eval.adapters import register
from resadapt_eval.adapters.base import TaskCard, evidence_meta, plain, row_error, sample_or_error

LETTERS = "ABCDE"
PRE_PROMPT = ""
POST_PROMPT = "Answer with the option's letter from the given choices directly.\n"
NA = "N/A"
N_OPTIONS = 5

# Deleted from the response, one after another in this order, before the letter search.
ANSWER_PREFIXES = (
    "The best answer is",
    "The correct answer is",
    "The answer is",
    "The answer",
    "The best option is",
    "The correct option is",
    "Best answer:",
    "Best option:",
)

DEFAULT_ANNOTATIONS = ("validation-*.parquet", "lvb_val.json")


# ----------------------------------------------------------------------------------- prompt

def prompt_options(options: list[str]) -> list[str]:
    """The options shown in the prompt: every one that is not "N/A", in order."""
    return [o for o in options if o != NA]


def answer_choices(options: list[str]) -> list[str]:
    """The letters the parser may fall back to: A.. up to (not including) the first "N/A"."""
    letters = []
    for letter, option in zip(LETTERS, options):
        if option == NA:
            break
        letters.append(letter)
    return letters


def lvb_prompt(question: str, options: list[str], subtitle_lines: list[str] | None = None,
               pre_prompt: str = PRE_PROMPT, post_prompt: str = POST_PROMPT) -> str:
    """lmms-eval's `longvideobench_doc_to_text`; with lines, the `_i` layout minus its `<image>` entries."""
    body = "\n".join([question] + [f"{LETTERS[i]}. {o}" for i, o in enumerate(prompt_options(options))])
    if subtitle_lines:
        return pre_prompt + "\n".join(subtitle_lines) + "\n" + body + "\n" + post_prompt
    return pre_prompt + body + "\n" + post_prompt


# ----------------------------------------------------------------------------------- parsing

def find_letter(response: str) -> str | None:
    """The first capital A-E after the answer prefixes are deleted, or None (then lmms-eval guesses)."""
    text = response.strip()
    for prefix in ANSWER_PREFIXES:
        text = text.replace(prefix, "")
    return next((ch for ch in text if ch in LETTERS), None)


def fallback_seed(sample_id: str) -> int:
    digest = hashlib.sha256(f"longvideobench\x00{sample_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def parse_answer(response: str, choices: list[str], sample_id: str) -> dict[str, Any]:
    """{"letter", "fallback"}: the parsed letter, or a per-sample reproducible random choice."""
    letter = find_letter(response)
    if letter is not None:
        return {"letter": letter, "fallback": False}
    guess = random.Random(fallback_seed(sample_id)).choice(choices) if choices else ""
    return {"letter": guess, "fallback": True}


# ----------------------------------------------------------------------------------- subtitles

def _seconds(stamp: Any) -> float:
    """'HH:MM:SS.mmm' (or SRT's 'HH:MM:SS,mmm') to seconds."""
    h, m, s = str(stamp).strip().replace(",", ".").split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def read_subtitles(path: Path) -> list[dict[str, Any]]:
    """Entries in the official JSON shape; an .srt file becomes {"start", "end", "line"} entries."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() != ".srt":
        entries = json.loads(text)
        if not isinstance(entries, list):
            raise ValueError("subtitle JSON is not a list of entries")
        return entries
    entries = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        lines = [l.strip() for l in block.strip().split("\n") if l.strip()]
        arrow = next((i for i, l in enumerate(lines) if "-->" in l), None)
        if arrow is None:
            continue
        start, end = (part.strip().split(" ")[0] for part in lines[arrow].split("-->"))
        entries.append({"start": start, "end": end, "line": " ".join(lines[arrow + 1:])})
    return entries


def frame_timestamps(duration: float, n: int) -> list[float]:
    """lmms-eval's `compute_frame_timestamps`: n evenly spaced times, or whole seconds for short clips."""
    if duration > n:
        return [duration / n * i for i in range(n)]
    return [float(i) for i in range(int(duration))]


def subtitle_lines(entries: list[dict[str, Any]], duration: float, start_offset: float,
                   selection: str = "inside", n_frames: int = 16) -> list[str]:
    """The subtitle texts to show, in file order (see the module docstring for the two selections)."""
    if selection not in ("inside", "frames"):
        raise UserError(f"longvideobench: subtitle_selection must be 'inside' or 'frames', not {selection!r}")
    times = frame_timestamps(duration, n_frames) if selection == "frames" else []
    out = []
    for entry in entries:
        if "timestamp" in entry:
            start, end = entry["timestamp"]
            text = entry["text"]
            if selection == "frames":
                end = end if isinstance(end, float) else duration   # upstream: int or None -> duration
            elif end is None:
                end = math.inf
        else:
            start, end, text = _seconds(entry["start"]), _seconds(entry["end"]), entry["line"]
        if start is None:
            continue
        start, end = float(start) - start_offset, float(end) - start_offset
        if selection == "inside":
            keep = start < duration and end > 0
        else:
            middle = (start + end) / 2
            if end - start < 1:
                start, end = middle - 0.5, middle + 0.5
            keep = any(start < t < end for t in times)
        if keep:
            out.append(str(text))
    return out


# ----------------------------------------------------------------------------------- adapter

@register("longvideobench")
class LongVideoBench:
    # The version of this adapter's prompt, parse and scoring rules: part of every run's config hash.
    # Bump it with any change that can alter a prompt, a parsed answer or a score (tests/test_adapter_versions.py).
    version = "1"
    card_keys = ("videos", "subtitles", "subtitles_dir", "subtitle_selection", "subtitle_frames")
    metrics = ("accuracy", "accuracy_no_fallback")
    main_metric = "accuracy"
    breakdown_keys = ("duration_group", "question_category")

    def load(self, card: TaskCard) -> list[Sample]:
        selection = str(card.options.get("subtitle_selection", "inside"))
        if selection not in ("inside", "frames"):
            raise UserError(f"longvideobench: subtitle_selection must be 'inside' or 'frames', not {selection!r}")
        samples, seen = [], set()
        for i, row in enumerate(_read_rows(card)):
            if isinstance(row, _BadLine):
                sample = row_error(row.id, "video", row.cause, row=i)
            else:
                sample = sample_or_error(lambda: self.sample_from_row(row, card, i), i, row, "video", "id")
            if sample.id in seen:
                raise UserError(f"longvideobench: duplicate question id {sample.id!r} in the annotations")
            seen.add(sample.id)
            samples.append(sample)
        return samples

    def sample_from_row(self, row: dict[str, Any], card: TaskCard, index: int = 0) -> Sample:
        """One annotation row as a Sample (prompt built as lmms-eval 0.7.3 does)."""
        opts = card.options
        sid = str(row.get("id") if row.get("id") is not None else f"{row.get('video_id', 'row')}_{index}")
        if row.get("correct_choice") is None:
            raise UserError(f"longvideobench: row {sid!r} has no correct_choice (the test split has no "
                            f"answers; use the validation annotations)")
        options = _options(row)
        meta: dict[str, Any] = {k: plain(row[k]) for k in ("video_id", "duration", "duration_group",
                                                             "question_category", "topic_category", "level")
                                if k in row}
        meta["choices"] = answer_choices(options)
        meta.update(evidence_meta(row))
        media: str | None = None
        try:
            media = str(card.safe_path(f"{opts.get('videos', 'videos')}/{_required(row, 'video_path')}"))
        except ValueError as e:
            meta["media_error"] = f"bad video_path: {e}"
        lines: list[str] | None = None
        if bool(opts.get("subtitles", False)) and media is not None:
            try:
                lines = _subtitles_for(card, str(opts.get("subtitles_dir", "subtitles")), row,
                                       str(opts.get("subtitle_selection", "inside")),
                                       int(opts.get("subtitle_frames", 16)))
                meta["subtitle_lines"] = len(lines)
            except (OSError, ValueError, KeyError, TypeError) as e:
                media, meta["media_error"] = None, f"subtitles unusable: {e}"
        return Sample(
            id=sid,
            prompt=lvb_prompt(str(row["question"]), options, lines),
            media_kind="video",
            media=media,
            target=chr(ord("A") + int(row["correct_choice"])),
            meta=meta,
            question=str(row["question"]),
        )

    def score(self, sample: Sample, prediction: str) -> tuple[dict[str, float], Any]:
        parsed = parse_answer(prediction, list(sample.meta.get("choices", LETTERS)), sample.id)
        correct = parsed["letter"] == sample.target
        return {"accuracy": float(correct), "accuracy_no_fallback": float(correct and not parsed["fallback"])}, parsed


@dataclass(frozen=True)
class _BadLine:
    """An annotation line that is not JSON: `id` names it by file and line number."""

    id: str
    cause: str


def _read_rows(card: TaskCard) -> list[Any]:
    """Rows of the first annotation pattern that matches (parquet, .json or .jsonl)."""
    patterns = card.options.get("annotations", list(DEFAULT_ANNOTATIONS))
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    files: list[Path] = []
    for pattern in patterns:
        files = sorted(Path(p) for p in glob.glob(str(card.data_root / pattern)))
        if files:
            break
    if not files:
        hint = f" {card.missing_hint}" if card.missing_hint else ""
        raise UserError(f"{card.name}: no annotations at {card.data_root} (looked for {' or '.join(patterns)}); "
                        f"put the data there or pass --data-root.{hint}")
    rows: list[dict[str, Any]] = []
    for f in files:
        if f.suffix == ".parquet":
            rows.extend(pd.read_parquet(f).to_dict("records"))
        elif f.suffix == ".jsonl":
            for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:  # one torn or corrupt line: an error record for it
                    rows.append(_BadLine(f"{f.name}:{n}", f"{f.name} line {n} is not valid JSON ({e.msg}, "
                                                          f"column {e.colno})"))
        else:
            data = json.loads(f.read_text(encoding="utf-8"))
            if not isinstance(data, list):
                raise UserError(f"longvideobench: {f} is not a JSON list of questions")
            rows.extend(data)
    return rows


def _options(row: dict[str, Any]) -> list[str]:
    """option0..option4 as strings, "N/A" where unused (JSON `candidates` padded the same way)."""
    if "candidates" in row and not any(f"option{i}" in row for i in range(N_OPTIONS)):
        cands = list(row["candidates"])
        return [str(cands[i]) if i < len(cands) and cands[i] is not None else NA for i in range(N_OPTIONS)]
    out = []
    for i in range(N_OPTIONS):
        value = row.get(f"option{i}")
        out.append(NA if value is None or (isinstance(value, float) and math.isnan(value)) else str(value))
    return out


def _subtitles_for(card: TaskCard, sub_dir: str, row: dict[str, Any], selection: str, n_frames: int) -> list[str]:
    name = row.get("subtitle_path")
    if name is None or (isinstance(name, float) and math.isnan(name)) or not str(name):
        return []
    entries = read_subtitles(card.safe_path(f"{sub_dir}/{name}"))
    offset = row.get("starting_timestamp_for_subtitles")
    offset = 0.0 if offset is None or (isinstance(offset, float) and math.isnan(offset)) else float(offset)
    return subtitle_lines(entries, float(row["duration"]), offset, selection, n_frames)


def _required(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)) or not str(value):
        raise ValueError(f"row has no {key}")
    return str(value)


