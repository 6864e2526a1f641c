"""Rescore a finished run's stored predictions without loading a model (as Inspect's `inspect score`).

After a scorer fix, with another parser (`--task-option parser=robust` for Charades-STA), or with or
without a judge (`--task-option judge_url=...` for MathVista), the task's scorer reads each record's
stored `prediction`, `target` and `meta` again. The run directory is left as it is; the result goes
beside it:

    RUN_DIR/rescored/<label>/samples.jsonl   the records, each with its new score and parsed answer
    RUN_DIR/rescored/<label>/summary.json    the summary of the new scores
    RUN_DIR/rescored/<label>/rescore.json    what changed: the samples whose scores changed (old and new),
                                             each metric old and new, the scorer's version and options

`<label>` is `current` (today's scorer, the run's options) or the options given (`parser=robust`).
The directory holds no manifest.json, so `recheck` never mistakes it for a run to rerun, and it sits
below the results layout's depth, so `frontier` never mixes it in; `check` compares it like any run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resadapt_eval.adapters import ADAPTERS
from resadapt_eval.adapters.base import TaskCard
from resadapt_eval.core.record import Record
from resadapt_eval.core.types import Sample, UserError
from resadapt_eval.pipeline import store

RESCORED = "rescored"
REPORT = "rescore.json"


@dataclass
class Rescore:
    """One rescore: where it was written and what changed."""

    source: Path
    directory: Path
    records: list[Record]
    summary: dict[str, Any]
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> list[dict[str, Any]]:
        return self.report["changed"]

    def lines(self) -> list[str]:
        """What a person reads: the main metric before and after, and how many samples changed."""
        r = self.report
        old, new = r["main_metric"]["old"], r["main_metric"]["new"]
        out = [f"{self.source} -> {self.directory}",
               f"scorer {r['adapter']} version {r['adapter_version']['old']} -> {r['adapter_version']['new']}"
               + (f", options {r['task_options']}" if r["task_options"] else ""),
               f"{len(r['changed'])} of {r['n_rescored']} scored samples changed their scores, "
               f"{len(r['main_changed'])} their main metric"]
        for name, m in r["metrics"].items():
            if m["old"] != m["new"] or name in (old["name"], new["name"]):
                out.append(f"  {name}: {_fmt(m['old'])} -> {_fmt(m['new'])}")
        if old["name"] != new["name"]:
            out.append(f"  main metric {old['name']} ({_fmt(old['value'])}) -> {new['name']} ({_fmt(new['value'])})")
        return out


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def option_label(options: dict[str, Any]) -> str:
    """`current` for no options, else `k=v+k=v` (sorted); a URL's host only, never its path or query."""
    if not options:
        return "current"
    parts = []
    for key, value in sorted(options.items()):
        text = str(value)
        if "://" in text:
            text = text.split("://", 1)[1].split("/", 1)[0].split("@")[-1]
        parts.append(f"{key}={text}")
    return "+".join(parts).replace("/", "_").replace(":", "_")


def scorer_for(card: TaskCard) -> Any:
    """The task's adapter, set up for scoring by the card's options (a judge, a parser), reading no data."""
    adapter = ADAPTERS.get(card.adapter)()
    configure = getattr(adapter, "configure", None)
    if configure is not None:
        configure(card)
    return adapter


def rescore_record(record: Record, adapter: Any) -> Record:
    """The record scored again from its stored prediction (error records and records without a
    prediction, such as the lmms-eval plugin's, come back as they were)."""
    if not record.ok or record.prediction is None or record.score is None:
        return record
    # What scorers read: the prediction, the target and the meta (MathVista's judge takes the query
    # from meta). The prompt and the media are not stored and no scorer needs them.
    sample = Sample(id=record.id, prompt=str(record.meta.get("query") or ""), media_kind="video", media=None,
                    target=record.target, meta=record.meta)
    score, parsed = adapter.score(sample, record.prediction)
    return record.rescored(score, json.loads(json.dumps(parsed, default=store.json_default)))


def rescore(run_dir: str | Path, task_options: dict[str, Any] | None = None, label: str | None = None,
            overwrite: bool = False) -> Rescore:
    """Rescore the run in `run_dir` with today's scorer and `task_options` over the run's own; write
    the result under run_dir/rescored/<label>/ and return it."""
    source = Path(run_dir)
    if not (source / store.SAMPLES).is_file() or not (source / store.MANIFEST).is_file():
        raise UserError(f"{source} is not a run directory (needs {store.SAMPLES} and {store.MANIFEST}); "
                        f"pass the directory `resadapt-eval run` wrote")
    task_options = dict(task_options or {})
    manifest = store.load_manifest(source)
    old_summary = store.load_summary(source) if (source / store.SUMMARY).is_file() else None
    saved = manifest.run_config
    options = {**(saved.get("task_options") or {}), **task_options}
    card = TaskCard.load(manifest.task, saved.get("data_root"), options)
    adapter = scorer_for(card)
    directory = source / RESCORED / (label or option_label(task_options))
    if directory.exists() and not overwrite:
        raise UserError(f"{directory} exists; pass --label NAME for another, or --overwrite to replace it")

    with store.locked(source):  # no run appends while its records are read
        old = store.load_records(source / store.SAMPLES)
    new = [rescore_record(r, adapter) for r in old]

    config = json.loads(json.dumps(manifest.config, default=str))
    config.setdefault("card", {})["options"] = json.loads(json.dumps(card.options, default=str))
    config["adapter_version"] = None if getattr(adapter, "version", None) is None else str(adapter.version)
    head = {"task": manifest.task, "backbone": manifest.backbone, "strategy": manifest.strategy,
            "budget": manifest.budget, "budget_spec": manifest.budget_spec, "frames": manifest.frames,
            "config_hash": store.config_hash(config)}
    summary = store.summarize(new, head, adapter.metrics, adapter.main_metric, adapter.breakdown_keys,
                              manifest.seed)
    # the old side from the old records (so an unchanged scorer reports no change), its main metric
    # as the run's summary named it
    old_main = old_summary.main_metric if old_summary else adapter.main_metric
    before = store.summarize(old, head, tuple(dict.fromkeys([*adapter.metrics, old_main])), old_main,
                             (), manifest.seed)
    report = change_report(old, new, before.to_dict(), summary.to_dict())
    report.update(source=str(source), source_config_hash=manifest.config_hash, config_hash=head["config_hash"],
                  adapter=card.adapter, task_options=task_options,
                  adapter_version={"old": manifest.adapter_version, "new": config["adapter_version"]},
                  created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    directory.mkdir(parents=True, exist_ok=True)
    store.write_records(directory / store.SAMPLES, new)
    store.write_json(directory / store.SUMMARY, summary.to_dict())
    store.write_json(directory / REPORT, report)
    return Rescore(source, directory, new, summary.to_dict(), report)


def change_report(old: list[Record], new: list[Record], old_summary: dict[str, Any] | None,
                  new_summary: dict[str, Any]) -> dict[str, Any]:
    """Which samples' scores changed (old and new score and parsed answer), and every metric old and new."""
    changed = []
    for a, b in zip(old, new):
        if a.score != b.score or a.parsed != b.parsed:
            metrics = sorted(k for k in set(a.score or {}) | set(b.score or {})
                             if (a.score or {}).get(k) != (b.score or {}).get(k))
            changed.append({"id": a.id, "metrics": metrics, "old": a.score, "new": b.score,
                            "old_parsed": a.parsed, "new_parsed": b.parsed})
    old_metrics = (old_summary or {}).get("metrics", {})
    new_metrics = new_summary["metrics"]
    metrics = {m: {"old": _value(old_metrics, m), "new": _value(new_metrics, m)}
               for m in [*new_metrics, *(k for k in old_metrics if k not in new_metrics)]}
    old_main = (old_summary or {}).get("main_metric")
    new_main = new_summary["main_metric"]
    # the samples whose headline score moved (differs from `changed` when the main metric is another one)
    main_changed = [{"id": a.id, "old": (a.score or {}).get(old_main), "new": (b.score or {}).get(new_main)}
                    for a, b in zip(old, new) if b.score is not None
                    and (a.score or {}).get(old_main) != (b.score or {}).get(new_main)]
    return {"n_rescored": sum(1 for r in new if r.ok and r.score is not None), "changed": changed,
            "main_changed": main_changed, "metrics": metrics,
            "main_metric": {"old": {"name": old_main, "value": _value(old_metrics, old_main)},
                            "new": {"name": new_main, "value": _value(new_metrics, new_main)}}}


def _value(metrics: dict[str, Any], name: str | None) -> float | None:
    """A metric's value, None where it is absent or had no samples (NaN)."""
    value = (metrics.get(name) or {}).get("value") if name else None
    return None if value is None or value != value else float(value)
