"""The results schema: runs written before `schema_version` existed (four of the baseline runs as
committed at 9b26aad, kept under tests/data/schema1) read as typed Records, Summaries and Manifests
and write back the same JSON; the typed summary of their records is their committed summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from resadapt_eval.adapters import ADAPTERS
from resadapt_eval.adapters.base import TaskCard
from resadapt_eval.core.record import SCHEMA_VERSION, UNVERSIONED, Manifest, Record, Summary
from resadapt_eval.pipeline import store

BASELINE = Path(__file__).parent / "data" / "schema1"
RUNS = sorted(p.parent for p in BASELINE.rglob(store.SUMMARY) if (p.parent / store.MANIFEST).exists())


def without_version(d: dict) -> dict:
    return {k: v for k, v in d.items() if k != "schema_version"}


def test_there_are_committed_runs_to_read():
    assert len(RUNS) >= 4


@pytest.mark.parametrize("run", RUNS, ids=lambda p: "/".join(p.parts[-4:]))
def test_old_files_read_typed_and_write_back_the_same_json(run):
    raw = store.read_records(run / store.SAMPLES)
    records = store.load_records(run / store.SAMPLES)
    assert len(records) == len(raw) > 0
    for r, d in zip(records, raw):
        assert "schema_version" not in d and r.schema_version == UNVERSIONED
        out = r.to_dict()
        assert out["schema_version"] == SCHEMA_VERSION
        assert list(without_version(out)) == list(d) and without_version(out) == d  # same keys, order, values
    summary = json.loads((run / store.SUMMARY).read_text())
    assert without_version(Summary.from_dict(summary).to_dict()) == summary
    assert list(without_version(Summary.from_dict(summary).to_dict())) == list(summary)
    manifest = json.loads((run / store.MANIFEST).read_text())
    typed = Manifest.from_dict(manifest)
    assert typed.backbone == summary["backbone"] and typed.config_hash == summary["config_hash"]
    assert typed.adapter_version is None  # written before adapter versions were hashed
    assert without_version(typed.to_dict()) == manifest and list(without_version(typed.to_dict())) == list(manifest)


@pytest.mark.parametrize("run", RUNS, ids=lambda p: "/".join(p.parts[-4:]))
def test_the_typed_summary_of_committed_records_is_the_committed_summary(run):
    """summarize() on Records computes exactly what the dict-based version committed (CIs included)."""
    old = store.load_summary(run)
    manifest = store.load_manifest(run)
    card = TaskCard.load(old.task, None, manifest.run_config.get("task_options"))
    adapter = ADAPTERS.get(card.adapter)()
    head = {k: getattr(old, k) for k in ("task", "backbone", "strategy", "budget", "budget_spec", "frames",
                                         "config_hash")}
    new = store.summarize(store.load_records(run / store.SAMPLES), head, adapter.metrics, adapter.main_metric,
                          adapter.breakdown_keys, manifest.seed)
    assert without_version(new.to_dict()) == without_version(old.to_dict())


def test_a_newer_schema_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="upgrade resadapt-eval"):
        Record.from_dict({"id": "x", "schema_version": SCHEMA_VERSION + 1})


def test_unknown_fields_pass_through():
    r = Record.from_dict({"id": "a", "prediction": "B", "strategy": "uniform-scale", "budget": "0.5"})
    assert r.extra == {"strategy": "uniform-scale", "budget": "0.5"}
    out = r.to_dict()
    assert out["strategy"] == "uniform-scale" and out["budget"] == "0.5" and out["prediction"] == "B"
    assert Record.from_dict(out) == r.__class__(**{**r.__dict__, "schema_version": SCHEMA_VERSION})
