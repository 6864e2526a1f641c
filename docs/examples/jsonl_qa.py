"""An example task adapter: questions about images or videos listed in a JSON-lines file.

Layout under the card's data root: `questions.jsonl` (the card's `annotations`), one object a line
with `id`, `media` (a path under the root), `kind` ("image" or "video"), `question` and `answer`
(a whole number). Scored by exact match of the first whole number in the answer.
"""

from __future__ import annotations

import json
import re
from typing import Any

from resadapt_eval.adapters import register
from resadapt_eval.adapters.base import TaskCard, sample_or_error
from resadapt_eval.core.types import Sample

NUMBER = re.compile(r"-?\d+")


@register("jsonl-qa")
class JsonlQA:
    metrics = ("accuracy",)          # per-sample scores, reported as mean x 100 with a bootstrap CI
    main_metric = "accuracy"
    breakdown_keys = ("kind",)       # sample.meta keys the summary breaks results down by

    def load(self, card: TaskCard) -> list[Sample]:
        path = card.find(card.options.get("annotations", "questions.jsonl"), "questions file")[0]
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        # A malformed row becomes one error record (its id and cause); the others run on.
        return [sample_or_error(lambda: self.sample_from_row(row, card, i), i, row, "image", "id")
                for i, row in enumerate(rows)]

    def sample_from_row(self, row: dict[str, Any], card: TaskCard, index: int = 0) -> Sample:
        kind = row.get("kind", "image")
        if kind not in ("image", "video"):
            raise ValueError(f"kind must be image or video, got {kind!r}")
        prompt = f"{row['question']}\n{card.options.get('instruction', 'Answer with a number.')}"
        return Sample(id=str(row["id"]), prompt=prompt, media_kind=kind,
                      media=str(card.safe_path(row["media"])),  # refuses paths that leave the data root
                      target=int(row["answer"]), meta={"kind": kind})

    def score(self, sample: Sample, prediction: str) -> tuple[dict[str, float], Any]:
        found = NUMBER.search(prediction or "")
        parsed = int(found.group()) if found else None
        return {"accuracy": float(parsed == sample.target)}, parsed
