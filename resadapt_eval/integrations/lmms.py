"""resadapt-eval as an lmms-eval model: any lmms-eval task through our backbones and strategies.

    pip install -e '.[lmms]'     # in its own environment: lmms-eval pulls about 155 packages
    lmms-eval --model resadapt \\
        --model_args backbone=tiny-bundled,strategy=uniform-scale,budget=0.25,frames=32 --tasks videomme

lmms-eval builds the prompts, reads the media and scores; we plan, encode at the planned sizes and
generate, greedily. Every answer's costs (visual tokens, retention, patches, FLOPs, timings) are
appended as our usual records to `tokens_log` (model_arg; default `resadapt_tokens.jsonl` in the
working directory), since lmms-eval's own logs have no field for them. Registered through the
`lmms_eval.models` entry point (`manifests`), so lmms-eval itself is not modified.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from loguru import logger as eval_logger

from resadapt_eval.integrations.requests import (answer_text, check_one_visual, flag, request_failed, sample_for,
                                                  strategy_options)


def manifests():
    """The entry point lmms-eval reads: one simple (non-chat) model named `resadapt`."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id="resadapt", simple_class_path="resadapt_eval.integrations.lmms.ResAdaptModel")]


class ResAdaptModel(lmms):
    """`generate_until` only: the harness measures generation at a visual-token budget."""

    is_simple = True

    def __init__(self, backbone: str = "tiny-bundled", strategy: str = "uniform-scale", budget: str = "1.0",
                 frames: int = 32, seed: int = 0, device: str | None = None, dtype: str | None = None,
                 tokens_log: str = "resadapt_tokens.jsonl", trust_remote_code: bool = False, **options: Any):
        super().__init__()
        from resadapt_eval.backbones import load_backbone
        from resadapt_eval.core.budget import parse_budget
        from resadapt_eval.strategies import STRATEGIES

        known = {"batch_size", "max_length"}  # lmms-eval passes these to every model
        trust = flag(trust_remote_code)
        cls = STRATEGIES.get(strategy)
        options = strategy_options(cls, {k: v for k, v in options.items() if k not in known}, trust_remote_code=trust)
        self.backbone = load_backbone(backbone, device=device, dtype=dtype, trust_remote_code=trust)
        self.strategy = cls(**options)
        self.budget = parse_budget(str(budget))
        self.frames, self.seed = int(frames), int(seed)
        self.log_path = Path(tokens_log)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._rank, self._world_size = 0, 1

    def generate_until(self, requests: list[Instance]) -> list[str]:
        from tqdm import tqdm

        from resadapt_eval.pipeline.store import RecordWriter
        from resadapt_eval.pipeline.runner import evaluate_sample

        answers = []
        # Every document's visuals first: a document with several (images, or a video and images) is
        # refused before anything runs, with the task and document named (see check_one_visual).
        visuals = []
        for request in requests:
            _, _, doc_to_visual, doc_id, task, split = request.args
            visuals.append(check_one_visual(doc_to_visual(self.task_dict[task][split][doc_id]), task, split, doc_id))
        writer = RecordWriter(self.log_path)
        try:
            for request, media in zip(tqdm(requests, desc="resadapt", disable=self._rank != 0), visuals):
                context, gen_kwargs, _, doc_id, task, split = request.args
                sample = sample_for(context, media, task, split, doc_id)
                max_new = int(gen_kwargs.get("max_new_tokens", 64))
                record = evaluate_sample(sample, None, self.strategy, self.backbone, self.budget, self.frames,
                                         max_new, self.seed, task=task)
                record.extra.update(strategy=self.strategy.name, budget=self.budget.label)
                writer.write(record)
                if record.error is not None:  # lmms-eval's convention for a failed request
                    eval_logger.error(f"resadapt: {sample.id} failed: {record.error}")
                    text = request_failed(record.error)
                else:
                    text = answer_text(record.prediction, gen_kwargs.get("until"))
                answers.append(text)
                self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
        finally:
            writer.close()
        return answers

    def loglikelihood(self, requests):
        raise NotImplementedError("resadapt measures generation; loglikelihood tasks are not supported")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("resadapt answers single-turn requests")


def summarize_log(path: str | Path) -> dict[str, float]:
    """Mean visual tokens and retention of a tokens_log, for a quick look next to lmms-eval's scores."""
    from resadapt_eval.pipeline.store import load_records

    rows = load_records(Path(path))
    ok = [r for r in rows if r.ok]
    return {"n": len(rows), "errors": len(rows) - len(ok),
            "tokens_mean": sum(r.tokens for r in ok) / max(1, len(ok)),
            "retention_mean": sum(r.retention for r in ok) / max(1, len(ok))}
