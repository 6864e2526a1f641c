"""`resadapt-eval rescore`: stored predictions scored again, no model loaded, on real runs of the bundled
reference backbone (tiny probe runs).

The reference backbone answers in the prompt's format, which both Charades parsers and the MathVista
rules read alike. To have answers the scorers read differently, a copy of a run gets some predictions
in other formats (as another model would answer), each scored by the task's own scorer as the runner
scores them; the rescore must then find exactly those samples.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from fixtures import JudgeServer
from resadapt_eval import probes
from resadapt_eval.adapters.charades_sta import CharadesSTA
from resadapt_eval.adapters.mathvista import MathVista
from resadapt_eval.analysis.rescore import REPORT, RESCORED, rescore
from resadapt_eval.cli import main
from resadapt_eval.core.record import Record
from resadapt_eval.core.types import Sample
from resadapt_eval.pipeline import store
from resadapt_eval.pipeline.runner import RunConfig, run

N = 8
pytestmark = pytest.mark.slow  # two real runs of the bundled backbone (about a minute of CPU)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Real runs: probe-grounding and probe-math, budget 1.0, on the reference backbone."""
    root = tmp_path_factory.mktemp("rescore-data")
    out = tmp_path_factory.mktemp("rescore-runs")
    dirs = {}
    for task in ("probe-grounding", "probe-math"):
        data = probes.build(task, root / task, seed=0, n=N)
        cfg = RunConfig(task=task, strategy="uniform-scale", budget="1.0", data_root=str(data), out=str(out),
                        progress=False)
        dirs[task] = run(cfg).directory
        CONFIGS[task] = cfg
    return dirs


CONFIGS: dict[str, RunConfig] = {}


def answered_otherwise(src: Path, dst: Path, answer, adapter) -> tuple[Path, list[str]]:
    """A copy of a run where `answer(record)` (if not None) replaced some predictions, each scored by
    `adapter` as the runner scores; the summary is written again. Returns the copy and the edited ids."""
    shutil.copytree(src, dst)
    records, edited = [], []
    for r in store.load_records(src / store.SAMPLES):
        text = answer(r)
        if text is not None and r.ok:
            sample = Sample(id=r.id, prompt="", media_kind="video", media=None, target=r.target, meta=r.meta)
            score, parsed = adapter.score(sample, text)
            r = Record.from_dict({**r.to_dict(), "prediction": text, "score": score,
                                  "parsed": json.loads(json.dumps(parsed))})
            edited.append(r.id)
        records.append(r)
    store.write_records(dst / store.SAMPLES, records)
    old = store.load_summary(src)
    head = {k: getattr(old, k) for k in ("task", "backbone", "strategy", "budget", "budget_spec", "frames",
                                         "config_hash")}
    summary = store.summarize(records, head, adapter.metrics, adapter.main_metric, adapter.breakdown_keys, 0)
    store.write_json(dst / store.SUMMARY, summary.to_dict())
    return dst, edited


@pytest.mark.parametrize("task", ["probe-grounding", "probe-math"])
def test_an_unchanged_scorer_gives_identical_records_and_summary(runs, task):
    src = runs[task]
    before = (src / store.SAMPLES).read_bytes()
    res = CliRunner().invoke(main, ["rescore", str(src)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    out = src / RESCORED / "current"
    assert "0 of" in res.output and str(out) in res.output
    old, new = store.load_records(src / store.SAMPLES), store.load_records(out / store.SAMPLES)
    assert len(new) == N and new == old                       # every field, score and parsed included
    assert (src / store.SAMPLES).read_bytes() == before       # the run itself is untouched
    was, now = json.loads((src / store.SUMMARY).read_text()), json.loads((out / store.SUMMARY).read_text())
    assert now["metrics"] == was["metrics"] and now["main_metric"] == was["main_metric"]
    assert now["breakdowns"] == was["breakdowns"] and now["n"] == was["n"] == N
    report = json.loads((out / REPORT).read_text())
    assert report["changed"] == [] and report["main_changed"] == [] and report["n_rescored"] == N
    assert report["adapter_version"]["old"] == report["adapter_version"]["new"] is not None
    assert report["config_hash"] == report["source_config_hash"]  # same options, same scorer: same config
    # a second rescore of the same label is refused, --overwrite replaces it
    again = CliRunner().invoke(main, ["rescore", str(src)])
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert CliRunner().invoke(main, ["rescore", str(src), "--overwrite"]).exit_code == 0


def test_the_robust_charades_parser_reports_the_samples_it_reads_differently(runs, tmp_path):
    """Answers `[start, end]`: lmms-eval's parser reads nothing (IoU 0), ours reads the interval."""
    n = {"left": 4}

    def bracketed(r: Record):
        if n["left"] and r.score["iou"] > 0:
            n["left"] -= 1
            return f"[{r.target[0]:.1f}, {r.target[1]:.1f}]"
        return None

    run_dir, edited = answered_otherwise(runs["probe-grounding"], tmp_path / "run", bracketed, CharadesSTA())
    assert len(edited) == 4
    res = CliRunner().invoke(main, ["rescore", str(run_dir), "--task-option", "parser=robust"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    out = run_dir / RESCORED / "parser=robust"
    report = json.loads((out / REPORT).read_text())
    summary = json.loads((out / store.SUMMARY).read_text())
    records = store.load_records(out / store.SAMPLES)
    # scores per parser are unchanged (both were always recorded); the main metric is now the robust one
    assert report["changed"] == []
    assert summary["main_metric"] == "iou_robust" and report["main_metric"]["old"]["name"] == "iou"
    moved = {c["id"] for c in report["main_changed"]}
    assert moved == set(edited) == {r.id for r in records if r.score["iou"] != r.score["iou_robust"]}
    for c in report["main_changed"]:
        assert c["old"] == 0.0 and c["new"] > 0.5
    iou_robust = 100 * sum(r.score["iou_robust"] for r in records) / N
    assert summary["metrics"]["iou_robust"]["value"] == pytest.approx(iou_robust)
    assert report["main_metric"]["new"]["value"] == pytest.approx(iou_robust)
    assert report["main_metric"]["new"]["value"] > report["main_metric"]["old"]["value"]
    assert report["config_hash"] != report["source_config_hash"]
    assert "main metric iou" in res.output and "iou_robust" in res.output


def test_a_judge_rescores_what_the_rules_cannot_read(runs, tmp_path, monkeypatch):
    """MathVista with a judge: prose answers that the rules leave unread go to the judge, whose reply
    is scored; the changed samples are exactly those, with old and new scores."""
    def prose(r: Record):
        if r.meta["question_type"] == "free_form" and r.score["accuracy"] == 1.0:
            return f"First 2, then 5, so {r.target} I think"  # read only by the guess "the last number"
        return None

    run_dir, edited = answered_otherwise(runs["probe-math"], tmp_path / "run", prose, MathVista())
    assert edited, "the probe has free-form questions the reference backbone answers"
    before = {r.id: r for r in store.load_records(run_dir / store.SAMPLES)}
    assert all(before[i].parsed["how"] == "last_number" and before[i].score["accuracy"] == 1.0 for i in edited)

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-rescore")
    with JudgeServer("3") as judge:  # a judge that always extracts 3
        done = rescore(run_dir, {"judge_url": judge.url})
    report = done.report
    changed = {c["id"]: c for c in report["changed"]}
    assert set(changed) == set(edited)
    for c in changed.values():
        assert c["old"]["judge_used"] == 0.0 and c["new"]["judge_used"] == 1.0
        assert c["new_parsed"]["how"].startswith("judge_") and "judge_used" in c["metrics"]
        assert c["new"]["accuracy"] == float(before[c["id"]].target == "3")
    assert len(judge.requests) == len(edited)  # only the answers the rules cannot read went to the judge
    assert report["metrics"]["judge_used"]["new"] == pytest.approx(100 * len(edited) / N)
    assert report["metrics"]["judge_used"]["old"] == 0.0
    assert done.directory.name.startswith("judge_url=127.0.0.1")
    assert "sk-test" not in (done.directory / REPORT).read_text()


def test_a_new_scorer_version_never_resumes_into_an_old_run(runs, monkeypatch):
    """The adapter's version is in the config hash: the same config with a bumped scorer is refused
    instead of mixing new scores into the old directory (rescore it instead)."""
    from resadapt_eval.core.types import UserError

    cfg = CONFIGS["probe-grounding"]
    assert run(cfg).new_records == 0  # same scorer: resumes, nothing to do
    monkeypatch.setattr(CharadesSTA, "version", "2")
    with pytest.raises(UserError, match="different config"):
        run(cfg)
    manifest = store.load_manifest(runs["probe-grounding"])
    assert manifest.adapter_version == "1" and manifest.config["adapter_version"] == "1"


def test_rescore_refuses_a_directory_that_is_not_a_run(tmp_path):
    res = CliRunner().invoke(main, ["rescore", str(tmp_path)])
    assert res.exit_code == 2 and "not a run directory" in res.output
