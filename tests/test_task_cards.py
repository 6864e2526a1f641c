"""Where task cards come from (bundled, $RESADAPT_TASKS_PATH, a card file) and strict card options:
a key no adapter reads, on the command line or in a card, exits 2 with one line naming the accepted keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from resadapt_eval.adapters import ADAPTERS
from resadapt_eval.cli import main
from resadapt_eval.adapters.base import (COMMON_CARD_KEYS, TASKS_PATH_ENV, TaskCard, accepted_card_keys,
                                         bundled_tasks_dir, card_sources)
from resadapt_eval.core.types import UserError


def _cmd(*args: str, env: dict | None = None):
    """The CLI in this process (a fresh interpreter per call costs 20+ s on a busy machine); the
    one-line-error path is the same code as the console script's."""
    res = CliRunner().invoke(main, list(args), env=env)
    res.returncode = res.exit_code
    return res


def _one_line(res) -> str:
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    return lines[0]


def test_the_console_script_prints_one_line_for_an_unknown_task_option(tmp_path):
    res = subprocess.run([sys.executable, "-m", "resadapt_eval", "run", "--task", "videomme", "--data-root",
                          str(tmp_path), "--task-option", "prompt_varient=qwen3_vl"], capture_output=True, text=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert res.returncode == 2 and "prompt_varient" in _one_line(res), res.stderr


def test_every_adapter_declares_its_card_keys_and_every_bundled_card_uses_only_those():
    for name in ADAPTERS.names():
        assert isinstance(ADAPTERS.get(name).card_keys, tuple), name
    for source in card_sources().values():
        raw = yaml.safe_load(source.path.read_text())
        accepted = accepted_card_keys(raw["adapter"])
        assert set(raw) <= set(accepted), (source.path, set(raw) - set(accepted))
        TaskCard.load(source.name)  # loads without a complaint


def test_only_mathvista_takes_a_judge():
    judged = [n for n in ADAPTERS.names() if "judge_url" in accepted_card_keys(n)]
    assert judged == ["mathvista"]


@pytest.mark.parametrize("args,needles", [
    (["--task-option", "prompt_varient=qwen3_vl"], ["prompt_varient", "accepted:", "prompt_variant", "videos"]),
    (["--task-option", "subtitles=true"], ["subtitles", "accepted:", "prompt_variant"]),
    (["--judge-url", "http://127.0.0.1:9/v1"], ["--judge-url", "has no judge", "mathvista"]),
])
def test_unknown_task_option_or_judge_exits_2_with_one_line(args, needles, tmp_path):
    res = _cmd("run", "--task", "videomme", "--data-root", str(tmp_path), *args)
    assert res.returncode == 2, res.stderr
    line = _one_line(res)
    assert all(n in line for n in needles), line


def test_a_known_task_option_still_reaches_the_card():
    card = TaskCard.load("videomme", overrides={"prompt_variant": "qwen3_vl", "frames": 4})
    assert card.options["prompt_variant"] == "qwen3_vl" and card.frames == 4
    card = TaskCard.load("mathvista", overrides={"judge_url": "http://127.0.0.1:9/v1"})
    assert card.options["judge_url"] == "http://127.0.0.1:9/v1"


def _user_card(folder: Path, name: str, **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    body = {"adapter": "videomme", "data_root": str(folder / "data"), "annotations": "videomme/test-*.parquet",
            "videos": "data", "frames": 6, "max_new_tokens": 8, **extra}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def test_a_card_file_by_path_and_the_search_path(tmp_path, monkeypatch):
    path = _user_card(tmp_path / "mine", "my-videoqa")
    card = TaskCard.load(str(path))
    assert card.name == "my-videoqa" and card.frames == 6 and card.data_root == tmp_path / "mine" / "data"
    with pytest.raises(UserError, match="unknown task 'my-videoqa'"):
        TaskCard.load("my-videoqa")

    other = _user_card(tmp_path / "second", "videomme", frames=3)  # shadows the bundled card of that name
    monkeypatch.setenv(TASKS_PATH_ENV, os.pathsep.join([str(tmp_path / "mine"), str(tmp_path / "second")]))
    sources = card_sources()
    assert sources["my-videoqa"].path == path.resolve() and sources["my-videoqa"].origin == f"${TASKS_PATH_ENV}"
    assert sources["videomme"].path == other.resolve() and TaskCard.load("videomme").frames == 3
    assert sources["probe-videoqa"].origin == "bundled"
    assert sources["probe-videoqa"].path == (bundled_tasks_dir() / "probe-videoqa.yaml").resolve()


def test_list_tasks_says_where_each_card_comes_from(tmp_path):
    path = _user_card(tmp_path / "mine", "my-videoqa")
    res = _cmd("list", "tasks", "--json", env={TASKS_PATH_ENV: str(tmp_path / "mine")})
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["my-videoqa"] == {"name": "my-videoqa", "path": str(path.resolve()), "origin": f"${TASKS_PATH_ENV}"}
    assert rows["probe-videoqa"]["origin"] == "bundled" and Path(rows["probe-videoqa"]["path"]).is_file()
    text = _cmd("list", "tasks", env={TASKS_PATH_ENV: str(tmp_path / "mine")}).stdout
    assert any(line.split()[:2] == ["my-videoqa", str(path.resolve())] for line in text.splitlines()), text


@pytest.mark.parametrize("body,needle", [
    ({"adapter": "videomme", "prompt_varient": "default"}, "unknown key(s) prompt_varient"),
    ({"adapter": "no-such-adapter"}, "unknown task adapter"),
    ({"frames": 8}, "must be a mapping with an `adapter:`"),
])
def test_a_bad_user_card_exits_2_with_one_line(body, needle, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(body))
    res = _cmd("run", "--task", str(path))
    assert res.returncode == 2 and needle in _one_line(res), res.stderr


def test_a_missing_card_file_exits_2(tmp_path):
    res = _cmd("run", "--task", str(tmp_path / "nope.yaml"))
    assert res.returncode == 2 and "task card file" in _one_line(res)
