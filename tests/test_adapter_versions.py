"""The version guard: a task adapter's rules (its code) never change without its `version` changing.

The version is part of every run's config hash, so a resumed run never mixes results scored by old
and new rules. `tests/data/adapter_versions.json` keeps each adapter's (version, digest of its code
without comments and docstrings). After changing an adapter:
  - if the change can alter a prompt, a parsed answer or a score: bump the adapter's `version`;
  - then record the new state: `UPDATE_ADAPTER_VERSIONS=1 python -m pytest tests/test_adapter_versions.py`
    (with an unchanged version that is a statement that nothing scored changes, e.g. a new card key;
    the diff of tests/data/adapter_versions.json shows it in review).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from resadapt_eval.adapters import ADAPTERS
from resadapt_eval.adapters.digest import scorer_digest, scorer_modules, source_digest

STORED = Path(__file__).parent / "data" / "adapter_versions.json"
UPDATE = "UPDATE_ADAPTER_VERSIONS"


def current() -> dict[str, dict[str, str]]:
    return {name: {"version": str(ADAPTERS.get(name).version), "digest": scorer_digest(ADAPTERS.get(name))}
            for name in ADAPTERS.names() if ADAPTERS.get(name).__module__.startswith("resadapt_eval.")}


def problems(stored: dict, now: dict) -> list[str]:
    """What is wrong between the stored and the current states (empty: nothing)."""
    out = []
    for name, cur in now.items():
        old = stored.get(name)
        if old is None:
            out.append(f"{name}: not recorded yet")
        elif old["digest"] != cur["digest"] and old["version"] == cur["version"]:
            out.append(f"{name}: its code changed but its version is still {cur['version']!r}; bump `version` in "
                       f"the adapter if prompts, parsing or scores can change")
        elif old != cur:
            out.append(f"{name}: version {old['version']} -> {cur['version']}, not recorded yet")
    return out


def test_every_adapter_declares_a_version():
    for name in ADAPTERS.names():
        assert isinstance(getattr(ADAPTERS.get(name), "version", None), str), name


def test_adapter_code_changes_come_with_a_new_version():
    stored = json.loads(STORED.read_text()) if STORED.exists() else {}
    now = current()
    found = problems(stored, now)
    if found and os.environ.get(UPDATE):
        STORED.write_text(json.dumps(now, indent=2, sort_keys=True) + "\n")
        return
    assert not found, "\n".join(found) + f"\nthen record it: {UPDATE}=1 python -m pytest tests/{Path(__file__).name} (see its docstring)"


def test_the_guard_sees_a_rule_change_and_ignores_comments():
    """The digest changes with a rule and not with a comment or a docstring."""
    from resadapt_eval.adapters import charades_sta

    name = charades_sta.__name__
    source = Path(charades_sta.__file__).read_text()
    base = source_digest({name: source})
    commented = source.replace("THRESHOLDS = (0.3, 0.5, 0.7)", "# a comment\nTHRESHOLDS = (0.3, 0.5, 0.7)  ")
    commented = commented.replace('"""lmms-eval\'s `temporal_grounding_doc_to_text`',
                                  '"""Reworded: lmms-eval\'s `temporal_grounding_doc_to_text`')
    assert commented.count("Reworded") == 1 and source_digest({name: commented}) == base
    changed = source.replace("THRESHOLDS = (0.3, 0.5, 0.7)", "THRESHOLDS = (0.3, 0.5, 0.75)")
    assert changed != source and source_digest({name: changed}) != base
    assert base == scorer_digest(charades_sta.CharadesSTA)
    stored = {"charades_sta": {"version": "1", "digest": base}}
    assert "still '1'" in problems(stored, {"charades_sta": {"version": "1",
                                                               "digest": source_digest({name: changed})}})[0]
    assert not problems(stored, {"charades_sta": {"version": "1", "digest": base}})


def test_videomme_rules_include_the_shared_mcq_parser():
    from resadapt_eval.adapters.videomme import VideoMME

    assert [m.__name__.rsplit(".", 1)[1] for m in scorer_modules(VideoMME)] == ["mcq", "videomme"]
