"""Video-MME in the official layout (lmms-eval `videomme`, no subtitles), scored as lmms-eval 0.7.3.

Annotations: parquet rows with videoID, duration, domain, sub_category, task_type, question,
options (already "A. ..."), answer (a letter). Videos: <root>/data/<videoID>.mp4 (.MP4, .mkv).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..types import Sample
from . import register
from .base import TaskCard
from .mcq import extract_mcq_answer, mcq_correct, videomme_prompt

CHOICES = ("A", "B", "C", "D")


@register("videomme")
class VideoMME:
    metrics = ("accuracy",)
    main_metric = "accuracy"
    breakdown_keys = ("duration", "domain", "task_type")

    def load(self, card: TaskCard) -> list[Sample]:
        files = card.find(card.options.get("annotations", "videomme/test-*.parquet"), "annotation parquet")
        rows = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        variant = card.options.get("prompt_variant", "default")
        video_dir = card.options.get("videos", "data")
        exts = card.options.get("video_extensions", [".mp4", ".MP4", ".mkv"])
        samples = []
        for i, row in rows.iterrows():
            options = [str(o) for o in row["options"]]
            sid = str(row["question_id"]) if "question_id" in row and pd.notna(row["question_id"]) else f"{row['videoID']}-{i}"
            samples.append(Sample(
                id=sid,
                prompt=videomme_prompt(str(row["question"]), options, variant),
                media_kind="video",
                media=_video_path(card, video_dir, str(row["videoID"]), exts),
                target=str(row["answer"]).strip(),
                meta={k: _plain(row[k]) for k in ("duration", "domain", "sub_category", "task_type", "videoID")
                      if k in row},
            ))
        return samples

    def score(self, sample: Sample, prediction: str) -> tuple[dict[str, float], Any]:
        parsed = extract_mcq_answer(prediction, CHOICES)
        return {"accuracy": float(mcq_correct(parsed, sample.target))}, parsed


def _video_path(card: TaskCard, video_dir: str, video_id: str, exts: list[str]) -> str:
    """The first existing <root>/<dir>/<id><ext>, else the .mp4 path (the loader reports it missing)."""
    candidates = [card.safe_path(f"{video_dir}/{video_id}{ext}") for ext in exts]
    for c in candidates:
        if c.is_file():
            return str(c)
    return str(candidates[0])


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
