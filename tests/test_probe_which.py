"""probe-which: two bordered tiles in two chunks, and the question's border colour decides which one to read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from resadapt_eval import probes
from resadapt_eval.adapters import ADAPTERS
from resadapt_eval.adapters.base import TaskCard

N = 40


def test_deterministic_and_seeds_apart():
    a, b = probes.make_which(0, 5), probes.make_which(0, 5)
    assert np.array_equal(a.pixels, b.pixels) and a.row == b.row and a.evidence == b.evidence
    assert not np.array_equal(a.pixels, probes.make_which(1, 5).pixels)
    assert probes.GENERATORS["probe-which"] is probes.BUNDLED_TRAINING_GENERATORS["probe-which"] is probes.make_which


def test_two_tiles_in_two_chunks_and_the_question_picks_one():
    colours_asked, answers = set(), set()
    for i in range(N):
        item = probes.make_which(0, i)
        ev, other = item.evidence, item.evidence["distractor"]
        assert ev["chunk"] != ev["distractor_chunk"] == other["chunk"]
        assert ev["frames"] == [2 * ev["chunk"], 2 * ev["chunk"] + 1]
        assert ev["colour"] != other["colour"] and ev["texture"] != other["texture"]
        assert f"the {ev['colour']} border" in item.row["question"] and f"the {other['colour']} border" not in item.row["question"]
        # the answer is the target's texture, among the fixed options of probe-videoqa
        assert item.target_text == item.row["answer"] == "ABCD"[probes.TEXTURES.index(ev["texture"])]
        assert item.row["options"] == probes.make_videoqa(0, i).row["options"]
        for tile in (ev, other):
            colour = np.array(probes.BORDER_COLOURS[tile["colour"]])
            y0, x0, y1, x1 = tile["outer_box"]
            by0, bx0, by1, bx1 = tile["box"]
            for f in range(item.pixels.shape[0]):
                frame = item.pixels[f]
                ring = np.concatenate([frame[y0:by0, x0:x1].reshape(-1, 3), frame[by1:y1, x0:x1].reshape(-1, 3)])
                inner = frame[by0:by1, bx0:bx1]
                if f in tile["frames"]:  # a solid border ring around black-and-white texture
                    assert (ring == colour).all() and set(np.unique(inner)) == {0, 255}
                    assert (inner[..., 0] == inner[..., 1]).all()
                else:  # the saturated colour shows nowhere else in that tile's place: clutter never has it
                    assert not (frame[y0:y1, x0:x1] == colour).all(-1).any()
        assert sorted(b[0] for b in item.boxes) == sorted(ev["frames"] + other["frames"])
        colours_asked.add(ev["colour"])
        answers.add(item.target_text)
    assert colours_asked == set(probes.BORDER_COLOURS) and answers == set("ABCD")


def test_the_split_is_written_in_the_video_mme_layout(tmp_path):
    root = probes.build("probe-which", tmp_path / "which", seed=0, n=4)
    assert (root / "videomme" / "test-00000-of-00001.parquet").exists()
    card = TaskCard.load("probe-which", data_root=str(root))
    adapter = ADAPTERS.get(card.adapter)()
    samples = adapter.load(card)
    assert [s.meta["evidence"] for s in samples] == [probes.make_which(0, i).evidence for i in range(4)]
    for s, i in zip(samples, range(4)):
        item = probes.make_which(0, i)
        assert "border have?" in s.prompt and adapter.score(s, item.target_text)[0]["accuracy"] == 1.0


def test_cli_lists_and_runs_it_with_the_bundled_backbone(tmp_path):
    """The real bundled backbone on a few samples through the console script: scores come out."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", RESADAPT_HOME=str(tmp_path / "home"))
    cli = [sys.executable, "-m", "resadapt_eval"]
    listed = subprocess.run([*cli, "list", "tasks"], capture_output=True, text=True, env=env, check=True).stdout
    assert "probe-which" in listed
    res = subprocess.run([*cli, "run", "--task", "probe-which", "--budget", "0.25", "--limit", "4", "--out",
                          str(tmp_path / "out"), "--no-progress"], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    run = next(Path(tmp_path / "out" / "probe-which").glob("*/uniform-scale/b0.25-f8"))
    records = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all(r["error"] is None and r["score"]["accuracy"] in (0.0, 1.0) for r in records)
    assert all(r["target"] == probes.make_which(1, i).target_text for i, r in enumerate(records))  # the test split
    summary = json.loads((run / "summary.json").read_text())
    assert summary["n_scored"] == 4 and summary["main_metric"] == "accuracy" and summary["tokens_mean"] < 196 / 2
