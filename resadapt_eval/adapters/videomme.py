"""Video-MME in the official layout (lmms-eval `videomme`, no subtitles), scored as lmms-eval 0.7.3.

Annotations: parquet rows with videoID, duration, domain, sub_category, task_type, question,
options (already "A. ..."), answer (a letter). Videos: <root>/data/<videoID>.mp4 (.MP4, .mkv).
"""

from __future__ import annotations

from typing import Any

from resadapt_eval.core.types import Sample
from resadapt_eval.adapters import register
from resadapt_eval.adapters.base import TaskCard, evidence_meta, plain, sample_or_error
from resadapt_eval.adapters.mcq import extract_mcq_answer, mcq_correct, videomme_prompt

CHOICES = ("A", "B", "C", "D")


@register("videomme")
class VideoMME:
    # The version of this adapter's prompt, parse and scoring rules: part of every run's config hash.
    # Bump it with any change that can alter a prompt, a parsed answer or a score (tests/test_adapter_versions.py).
    version = "1"
    card_keys = ("videos", "video_extensions", "prompt_variant")  # card options it reads
    metrics = ("accuracy",)
    main_metric = "accuracy"
    breakdown_keys = ("duration", "domain", "task_type")

    def load(self, card: TaskCard) -> list[Sample]:
        rows = card.read_parquet("videomme/test-*.parquet", "annotation parquet")
        samples = []
        for i, row in enumerate(rows.to_dict("records")):
            row = {k: plain(v) for k, v in row.items()}
            samples.append(sample_or_error(lambda: self.sample_from_row(row, card, i), i, row, "video", "question_id"))
        return samples

    def sample_from_row(self, row: dict[str, Any], card: TaskCard, index: int = 0) -> Sample:
        """One annotation row as a Sample (prompt built as lmms-eval 0.7.3 does)."""
        options = [str(o) for o in row["options"]]
        qid = row.get("question_id")
        sid = str(qid) if qid is not None and qid == qid else f"{row['videoID']}-{index}"
        meta = {k: row[k] for k in ("duration", "domain", "sub_category", "task_type", "videoID") if k in row}
        meta.update(evidence_meta(row))
        media: str | None = None
        try:
            media = _video_path(card, card.options.get("videos", "data"), str(row["videoID"]),
                                card.options.get("video_extensions", [".mp4", ".MP4", ".mkv"]))
        except ValueError as e:  # a videoID that escapes the data root
            meta["media_error"] = f"bad videoID: {e}"
        return Sample(
            id=sid,
            prompt=videomme_prompt(str(row["question"]), options, card.options.get("prompt_variant", "default")),
            media_kind="video",
            media=media,
            target=str(row["answer"]).strip(),
            meta=meta,
            question=str(row["question"]),
        )

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

