"""Robustness, with real parts: real encoded videos, the tiny Qwen2.5-VL, the real CLI, real processes.

* SIGKILL at 20 random points of a run, each followed by a resume: every sample exactly once, the
  summary (minus timings) identical to an uninterrupted run.
* Bad inputs (truncated mp4s, a zero-byte file, a file that is not a video, a missing video, an
  escaping path, a corrupt annotation row) are error records naming the sample and the cause; a video
  of one frame and an 8K frame are valid inputs and get normal records; a run over --max-error-rate
  exits 1 after writing everything.
* Corrupt annotation lines (LongVideoBench JSONL, Video-MME / Charades-STA rows) and a missing MathVista
  image are error records, the other samples run.
* Two runs on one results directory: the second refuses (lock), the first finishes intact.
* Paths escaping the data root are refused by every task card; a judge key (in the environment or in
  --judge-url) never reaches a results file; pickled weights (backbone or allocator) are refused.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from fixtures import JudgeServer, make_videomme, write_video
from resadapt_eval.pipeline import store as rec
from resadapt_eval.adapters import ADAPTERS
from resadapt_eval.adapters.base import TaskCard, task_names
from resadapt_eval.cli import main
from resadapt_eval.pipeline.runner import evaluate_sample
from resadapt_eval.probes.synth import encode_video

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def _strip(records):
    return {r["id"]: (r["prediction"], r["tokens"], r["score"], r["error"]) for r in records}


def _summary(directory: Path) -> dict:
    s = json.loads((directory / rec.SUMMARY).read_text())
    s.pop("timings_mean")
    return s


def _popen(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "resadapt_eval", *args], env=ENV, **kw)


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _one_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, text
    return lines[0]


# A run process whose imports are already done: a forkserver that imported the harness forks each
# one, so a kill cycle costs the model load and the run, not 5-12 s of `import torch` on a loaded
# machine. Each is a separate OS process running the real CLI entry point, killed with a real SIGKILL.
_PRELOAD = ["resadapt_eval.cli", "resadapt_eval.pipeline.runner", "resadapt_eval.backbones.qwen_vl",
            "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl", "decord", "av"]


def _cli_child(args: list[str]) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    from resadapt_eval.cli import main as cli_main
    cli_main(args)


def _forked_cli(args: list[str]):
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    proc = ctx.Process(target=_cli_child, args=(list(args),))
    proc.start()
    return proc


# ------------------------------------------------------------------------------------------------
# SIGKILL at 20 random points, each followed by a resume
# ------------------------------------------------------------------------------------------------

def test_sigkill_at_20_random_points_then_resume(tiny25, tmp_path):
    root = make_videomme(tmp_path / "data", n_videos=8, questions_per_video=3, missing=1,
                         sizes=((56, 84), (84, 56), (56, 56)))
    args = ["run", "--task", "videomme", "--backbone", str(tiny25), "--data-root", str(root), "--frames", "4",
            "--strategy", "uniform-scale", "--budget", "0.5", "--no-progress", "--max-error-rate", "1"]
    n = 24
    ref_dir = rec.run_dir(tmp_path / "full", "videomme", tiny25.name, "uniform-scale", "0.5", 4)
    ref_proc = _forked_cli(args + ["--out", str(tmp_path / "full")])  # uninterrupted
    start = time.monotonic()
    while _lines(ref_dir / rec.SAMPLES) < 1 and ref_proc.is_alive():
        time.sleep(0.002)
    t_first = time.monotonic() - start  # start-up: model load, data, manifest, lock
    ref_proc.join(300)
    assert ref_proc.exitcode == 0
    reference = _strip(rec.read_records(ref_dir / rec.SAMPLES))
    assert len(reference) == n and sum(1 for v in reference.values() if v[3]) == 3  # the missing video

    out = tmp_path / "killed"
    d = rec.run_dir(out, "videomme", tiny25.name, "uniform-scale", "0.5", 4)
    samples = d / rec.SAMPLES
    rng = random.Random(20260101)
    # 4 kills mid-startup and 12 after 1-2 more records (mid-sample), shuffled; then one at the last
    # record (mid-summary) and three in runs that have nothing left but the summary
    plan = ["startup"] * 4 + ["records"] * 12
    rng.shuffle(plan)
    plan += ["last"] + ["done"] * 3
    kills: list[dict] = []
    cycles = 0
    torn = False
    while len(kills) < 20:
        cycles += 1
        # a run may finish before its kill lands (on a fast machine the last records take milliseconds):
        # such runs are retried, up to 80 in all
        assert cycles <= 80, f"only {len(kills)} kills landed in {cycles} runs: {kills}"
        before = len(rec.read_records(samples))
        mode = plan[len(kills)]
        if before >= n or mode == "done":
            mode, delay, target = "done", rng.uniform(0.0, 0.9) * t_first, None
        elif mode == "startup":
            mode, delay, target = "startup", rng.uniform(0.05, 0.85) * t_first, None
        elif mode == "last" or before >= n - 2:
            mode, delay, target = "last", rng.uniform(0.0, 0.01), n
        else:
            mode, delay, target = "records", rng.uniform(0.0, 0.05), before + rng.randint(1, 2)
        proc = _forked_cli(args + ["--out", str(out)])
        start = time.monotonic()
        fire = start + delay if target is None else None
        while proc.is_alive():
            now = time.monotonic()
            if fire is None and _lines(samples) >= target:
                fire = now + delay
            if fire is not None and now >= fire:
                break
            assert now - start < 120, "a run hung"
            time.sleep(0.002)
        if proc.is_alive():
            proc.kill()  # SIGKILL
        proc.join()
        assert proc.exitcode in (0, -signal.SIGKILL)  # killed, or it finished just before the kill
        killed = proc.exitcode == -signal.SIGKILL
        after_lines = rec.read_records(samples)
        if killed:
            kills.append({"mode": mode, "before": before, "after": len(after_lines), "at_s": round(now - start, 2),
                          "summary": (d / rec.SUMMARY).exists()})
        # after every kill: what is there is valid, each sample at most once, equal to the uninterrupted run
        ids = [r["id"] for r in after_lines]
        assert len(ids) == len(set(ids))
        assert {i: reference[i] for i in ids} == _strip(after_lines)
        if (d / rec.MANIFEST).exists():
            json.loads((d / rec.MANIFEST).read_text())
        if killed and not torn and 0 < len(after_lines) < n - 2:
            with open(samples, "a") as f:  # a torn last line, as if killed mid-write
                f.write('{"id": "001-1", "predic')
            torn = True

    final = subprocess.run([sys.executable, "-m", "resadapt_eval", *args, "--out", str(out)], env=ENV,
                           capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    records = rec.read_records(samples)
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) == n
    assert _strip(records) == reference
    assert _summary(d) == _summary(ref_dir)
    # the kills really spread over the run: mid-startup (nothing new), mid-run, after the last record
    assert torn, kills
    assert sum(k["after"] == k["before"] < n for k in kills) >= 2, kills  # mid-startup
    # mid-run: at least 6 of the 20 (7 and 8+ both seen; how many land mid-run varies with start-up time)
    assert sum(k["after"] > k["before"] for k in kills) >= 6, kills
    assert sum(k["after"] == n for k in kills) >= 3, kills                 # after the last record
    assert len({k["after"] for k in kills}) >= 8, kills


# ------------------------------------------------------------------------------------------------
# The bad-input matrix, in one run
# ------------------------------------------------------------------------------------------------

def _row(rows, qid, video_id, **extra):
    r = dict(rows[0])
    r.update(videoID=video_id, question_id=qid, **extra)
    return r


@pytest.fixture(scope="module")
def bad_videomme(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad")
    root = make_videomme(base / "videomme", n_videos=2, questions_per_video=1, missing=0)
    data = root / "data"
    good = (data / "vid000.mp4").read_bytes()
    # one frame, and the same frame twice (lossless, so both decode to identical pixels)
    frame = np.zeros((1, 96, 128, 3), np.uint8)
    frame[0, 20:60, 30:90] = (200, 40, 90)
    frame[0, 60:, :40] = (10, 180, 220)
    encode_video(data / "one.mp4", frame, 8, crf=0)
    encode_video(data / "twosame.mp4", np.repeat(frame, 2, axis=0), 8, crf=0)
    # an 8K frame (7680x4320), two frames so it is one full chunk; flat areas keep encoding cheap
    big = np.full((2, 4320, 7680, 3), 90, np.uint8)
    big[:, 1000:3000, 2000:6000] = (220, 30, 30)
    big[1, 2000:4000, 500:1500] = (30, 220, 30)
    encode_video(data / "eightk.mp4", big, 2, crf=35)
    del big
    # truncated: the index (moov, written last) cut away; and a faststart file whose frames are cut
    (data / "trunc.mp4").write_bytes(good[: len(good) // 3])
    faststart = base / "fs.mp4"
    rng = np.random.default_rng(0)
    import av
    with av.open(str(faststart), "w", options={"movflags": "faststart"}) as c:
        s = c.add_stream("libx264", rate=8)
        s.width, s.height, s.pix_fmt = 96, 64, "yuv420p"
        for _ in range(16):
            img = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    blob = faststart.read_bytes()
    assert blob.find(b"moov") < blob.find(b"mdat")
    (data / "truncfs.mp4").write_bytes(blob[: int(len(blob) * 0.6)])
    (data / "zero.mp4").write_bytes(b"")
    (data / "text.mp4").write_text("this is a text file, not a video\n")
    (base / "outside.mp4").write_bytes(good)  # exists, but outside the data root
    path = root / "videomme" / "test-00000-of-00001.parquet"
    rows = pd.read_parquet(path).to_dict("records")
    rows += [_row(rows, "one-frame", "one"), _row(rows, "two-same", "twosame"), _row(rows, "8k", "eightk"),
             _row(rows, "truncated", "trunc"), _row(rows, "truncated-faststart", "truncfs"),
             _row(rows, "zero-byte", "zero"), _row(rows, "not-a-video", "text"), _row(rows, "missing", "gone"),
             _row(rows, "escape", "../../outside"), _row(rows, "corrupt-row", "vid000", options=None)]
    pd.DataFrame(rows).to_parquet(path)
    return root


EXPECTED_ERRORS = {
    "truncated": "cannot decode video",
    "truncated-faststart": "cannot decode video",
    "zero-byte": "empty file",
    "not-a-video": "cannot decode video",
    "missing": "video not found",
    "escape": "escapes the data root",
    "corrupt-row": "annotation row 11 is malformed",
}
NAMED = {"truncated": "trunc.mp4", "truncated-faststart": "truncfs.mp4", "zero-byte": "zero.mp4",
         "not-a-video": "text.mp4", "missing": "gone.mp4", "escape": "../../outside", "corrupt-row": "row 11"}


def test_bad_inputs_are_error_records_and_valid_odd_videos_run(tiny25, bad_videomme, tmp_path):
    from transformers import AutoProcessor

    from resadapt_eval.core.budget import Geometry

    args = ["run", "--task", "videomme", "--backbone", str(tiny25), "--data-root", str(bad_videomme), "--frames", "4",
            "--out", str(tmp_path), "--no-progress"]
    res = CliRunner().invoke(main, args)
    d = rec.run_dir(tmp_path, "videomme", tiny25.name, "uniform-scale", "1", 4)
    records = {r["id"]: r for r in rec.read_records(d / rec.SAMPLES)}
    summary = json.loads((d / rec.SUMMARY).read_text())
    # everything written, each sample once, then exit 1: 7 of 12 samples are errors, over the default 5%
    assert len(records) == summary["n"] == 12 and summary["n_errors"] == len(EXPECTED_ERRORS)
    assert res.exit_code == 1 and "over --max-error-rate 5%" in res.output, res.output
    for sid, needle in EXPECTED_ERRORS.items():
        r = records[sid]
        assert r["error"] and needle in r["error"] and NAMED[sid] in r["error"], (sid, r["error"])
        assert r["prediction"] is None and r["score"] is None and r["tokens"] is None
    for r in records.values():  # deterministic causes: no decoder clock times ("[20:05:15] file.cc:292: ")
        assert not re.search(r"\[\d{1,2}:\d{2}:\d{2}\]|\.cc:\d+", r["error"] or ""), r["error"]
    faststart = records["truncated-faststart"]["error"]
    assert "decord: DECORDError: " in faststart and "pyav: " in faststart
    assert sorted(summary["errors"]) == sorted(r["error"] for r in records.values() if r["error"])

    geometry = Geometry.from_processor(AutoProcessor.from_pretrained(tiny25))
    f = geometry.factor
    # one frame: a normal record, one chunk (the frame padded to the temporal patch, as the processor
    # does), identical to the video holding that frame twice
    one, two = records["one-frame"], records["two-same"]
    assert one["error"] is None and one["frames_decoded"] == 1 and two["frames_decoded"] == 2
    assert one["plan"]["frames"] == [0] and two["plan"]["frames"] == [0, 1]
    vh, vw = geometry.vanilla_size("video", 96, 128, 1)
    assert one["plan"]["chunks"] == two["plan"]["chunks"] == [[vh, vw]]
    assert one["tokens"] == one["vanilla_tokens"] == geometry.tokens_per_chunk(vh, vw) == two["tokens"]
    assert one["prediction"] == two["prediction"] and one["score"] == two["score"]
    # 8K: a normal record at the vanilla size, which the backbone's max pixels cap
    big = records["8k"]
    h, w = geometry.vanilla_size("video", 4320, 7680, 2)
    assert big["error"] is None and big["frames_decoded"] == 2 and big["plan"]["chunks"] == [[h, w]]
    assert h * w <= geometry.video_max_pixels and h % f == w % f == 0 and abs(w / h - 16 / 9) < 0.2
    assert big["tokens"] == big["vanilla_tokens"] == (h // f) * (w // f) <= geometry.video_max_pixels // (f * f)
    assert isinstance(big["prediction"], str) and big["score"] is not None
    for sid in ("001-1", "002-1"):
        assert records[sid]["error"] is None and records[sid]["score"] is not None

    before = (d / rec.SAMPLES).read_bytes()
    res = CliRunner().invoke(main, args + ["--max-error-rate", "0.6"])  # 58% errors: under 60%
    assert res.exit_code == 0, res.output
    assert (d / rec.SAMPLES).read_bytes() == before  # resumed, nothing evaluated twice


# ------------------------------------------------------------------------------------------------
# Corrupt annotation lines and rows, a missing image
# ------------------------------------------------------------------------------------------------

def _lvb_row(i, video, **extra):
    row = {"id": f"q{i}", "video_id": video, "video_path": f"{video}.mp4", "question": f"Which box moves in {i}?",
           "candidates": ["red", "green", "blue", "none"], "correct_choice": i % 4, "duration": 3.0,
           "duration_group": 15, "question_category": "S2E", "topic_category": "NP-News", "level": "L1"}
    row.update(extra)
    return row


def test_corrupt_annotation_lines_are_error_records_the_rest_runs(tiny25, tmp_path):
    root = tmp_path / "longvideobench"
    for v in ("va", "vb"):
        write_video(root / "videos" / f"{v}.mp4", n_frames=8, height=56, width=84, seed=len(v))
    lines = [json.dumps(_lvb_row(0, "va")),
             '{"id": "q1", "video_path": "vb.mp4", "question": "torn',      # line 2: not JSON
             json.dumps(_lvb_row(2, "vb")),
             "",                                                             # blank lines are skipped
             json.dumps(_lvb_row(4, "va", correct_choice="seven")),          # line 5: a bad value
             json.dumps({k: v for k, v in _lvb_row(5, "vb").items() if k != "question"}),  # line 6: no question
             "[1, 2, 3]"]                                                     # line 7: not an object
    (root / "lvb_val.jsonl").write_text("\n".join(lines) + "\n")
    res = CliRunner().invoke(main, ["run", "--task", "longvideobench", "--backbone", str(tiny25), "--data-root",
                                    str(root), "--task-option", "annotations=lvb_val.jsonl", "--frames", "4",
                                    "--out", str(tmp_path / "out"), "--no-progress", "--max-error-rate", "1"])
    assert res.exit_code == 0, res.output
    d = rec.run_dir(tmp_path / "out", "longvideobench", tiny25.name, "uniform-scale", "1", 4)
    records = {r["id"]: r for r in rec.read_records(d / rec.SAMPLES)}
    assert set(records) == {"q0", "lvb_val.jsonl:2", "q2", "q4", "q5", "row5"}
    assert "lvb_val.jsonl line 2 is not valid JSON" in records["lvb_val.jsonl:2"]["error"]
    assert "annotation row 3 is malformed: ValueError" in records["q4"]["error"]
    assert "annotation row 4 is malformed: missing field 'question'" in records["q5"]["error"]
    assert "annotation row 5 is malformed" in records["row5"]["error"]
    for sid in ("q0", "q2"):
        assert records[sid]["error"] is None and records[sid]["score"] is not None

    # row-based parquet annotations: Video-MME and Charades-STA (and their probe cards) do the same
    vm = make_videomme(tmp_path / "videomme", n_videos=1, questions_per_video=2, missing=0)
    path = vm / "videomme" / "test-00000-of-00001.parquet"
    rows = pd.read_parquet(path).to_dict("records")
    rows[1]["options"] = None
    pd.DataFrame(rows).to_parquet(path)
    for task in ("videomme", "probe-videoqa"):
        card = TaskCard.load(task, data_root=str(vm))
        got = ADAPTERS.get(card.adapter)().load(card)
        assert [s.id for s in got] == ["001-1", "001-2"] and got[0].media is not None
        assert got[1].media is None and "annotation row 1 is malformed: TypeError" in got[1].meta["media_error"]
        record = evaluate_sample(got[1], None, None, None, None, 4, 8, 0)
        assert record.id == "001-2" and "malformed" in record.error

    ch = tmp_path / "charades"
    write_video(ch / "Charades_v1_480" / "AB12C.mp4", n_frames=8, height=56, width=84)
    (ch / "data").mkdir(parents=True)
    pd.DataFrame([{"video": "AB12C.mp4", "caption": "a person opens a door", "timestamp": [1.0, 2.5]},
                  {"video": "AB12C.mp4", "caption": None, "timestamp": [0.5, 1.0]},
                  {"video": "AB12C.mp4", "caption": "a person sits", "timestamp": [3.0]}]
                 ).to_parquet(ch / "data" / "test-00000-of-00001.parquet")
    for task in ("charades_sta", "probe-grounding"):
        card = TaskCard.load(task, data_root=str(ch))
        got = ADAPTERS.get(card.adapter)().load(card)
        assert got[0].media is not None
        assert got[1].media is None and "row 1 has no caption" in got[1].meta["media_error"]
        assert got[2].media is None and "bad timestamp" in got[2].meta["media_error"]


def test_missing_and_broken_images_are_error_records(tiny25, tmp_path):
    from test_mathvista import SCHEMA, make_mathvista

    root = make_mathvista(tmp_path / "mathvista", broken_pid="1")
    path = next((root / "data").glob("testmini-*.parquet"))
    rows = pq.read_table(path).to_pylist()
    (tmp_path / "secret.png").write_bytes(rows[1]["decoded_image"]["bytes"])  # a real image outside the root
    for row in rows:
        if row["pid"] == "3":
            row.update(decoded_image=None, image="images/3.jpg")       # the image named, not there
        if row["pid"] == "2":
            row.update(decoded_image=None, image="../secret.png")      # there, but outside the data root
        if row["pid"] == "506":
            row.update(decoded_image=None, image=str(tmp_path / "secret.png"))  # absolute, outside
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path)
    res = CliRunner().invoke(main, ["run", "--task", "mathvista", "--backbone", str(tiny25), "--data-root", str(root),
                                    "--out", str(tmp_path / "out"), "--no-progress", "--max-error-rate", "1"])
    assert res.exit_code == 0, res.output
    d = rec.run_dir(tmp_path / "out", "mathvista", tiny25.name, "uniform-scale", "1", 1)
    records = {r["id"]: r for r in rec.read_records(d / rec.SAMPLES)}
    assert "pid 3: no decoded_image and image not found" in records["3"]["error"]
    assert "pid 1: decoded_image is not a readable image" in records["1"]["error"]
    assert "pid 2:" in records["2"]["error"] and "escapes the data root" in records["2"]["error"]
    assert "pid 506:" in records["506"]["error"] and "escapes the data root" in records["506"]["error"]
    assert records["168"]["error"] is None and records["168"]["score"] is not None
    assert json.loads((d / rec.SUMMARY).read_text())["n_errors"] == 4


# ------------------------------------------------------------------------------------------------
# Two runs on one results directory
# ------------------------------------------------------------------------------------------------

def test_a_second_run_on_a_locked_directory_refuses_and_the_first_finishes(tiny25, tmp_path):
    root = make_videomme(tmp_path / "data", n_videos=4, questions_per_video=2, missing=0,
                         sizes=((56, 84), (84, 56), (56, 56)))
    args = ["run", "--task", "videomme", "--backbone", str(tiny25), "--data-root", str(root), "--frames", "4",
            "--out", str(tmp_path / "out"), "--no-progress"]
    d = rec.run_dir(tmp_path / "out", "videomme", tiny25.name, "uniform-scale", "1", 4)
    first = _popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while _lines(d / rec.SAMPLES) < 1:
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        first.send_signal(signal.SIGSTOP)  # holds the lock, mid-run, while the second one tries
        held = (d / rec.SAMPLES).read_bytes(), (d / rec.MANIFEST).read_bytes()
        second = subprocess.run([sys.executable, "-m", "resadapt_eval", *args], env=ENV, capture_output=True,
                                text=True, timeout=300)
        assert first.poll() is None  # the first was running (stopped) all along
        assert second.returncode == 2, second.stderr
        line = _one_line(second.stderr)
        assert line.startswith("error: ") and "lock" in line and str(d) in line and "Traceback" not in second.stderr
        assert ((d / rec.SAMPLES).read_bytes(), (d / rec.MANIFEST).read_bytes()) == held  # nothing touched
        assert not (d / rec.SUMMARY).exists()
    finally:
        first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    records = rec.read_records(d / rec.SAMPLES)
    assert [r["id"] for r in records] == [f"{v:03d}-{q}" for v in range(1, 5) for q in (1, 2)]
    assert all(r["error"] is None and r["prediction"] is not None for r in records)
    assert (d / rec.SAMPLES).read_bytes().endswith(b"\n")
    assert json.loads((d / rec.SUMMARY).read_text())["n"] == 8


# ------------------------------------------------------------------------------------------------
# Paths escaping the data root, for every task card
# ------------------------------------------------------------------------------------------------

def _png(path: Path) -> Path:
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), (10, 120, 200)).save(path)
    return path


def _escaping_layout(adapter: str, root: Path, outside: Path) -> None:
    """One good sample and samples whose media path escapes `root` (to files that exist outside it)."""
    if adapter == "videomme":
        make_videomme(root, n_videos=1, questions_per_video=1, missing=0)
        path = root / "videomme" / "test-00000-of-00001.parquet"
        rows = pd.read_parquet(path).to_dict("records")
        rows += [_row(rows, "dotdot", "../../outside"), _row(rows, "deep", "x/../../../outside")]
        pd.DataFrame(rows).to_parquet(path)
        return
    if adapter == "longvideobench":
        write_video(root / "videos" / "va.mp4", n_frames=4, height=56, width=56)
        rows = [_lvb_row(0, "va"), _lvb_row(1, "va", id="dotdot", video_path="../../outside.mp4"),
                _lvb_row(2, "va", id="deep", video_path="a/b/../../../../outside.mp4")]
        pd.DataFrame(rows).to_parquet(root / "validation-00000-of-00001.parquet")
        return
    if adapter == "charades_sta":
        write_video(root / "Charades_v1_480" / "AB12C.mp4", n_frames=4, height=56, width=56)
        (root / "data").mkdir(parents=True, exist_ok=True)
        pd.DataFrame([{"video": v, "caption": "a person opens a door", "timestamp": [1.0, 2.0]}
                      for v in ("AB12C.mp4", "../../outside.mp4", "x/../../../outside.mp4")]
                     ).to_parquet(root / "data" / "test-00000-of-00001.parquet")
        return
    assert adapter == "mathvista"
    _png(root / "images" / "good.png")
    rows = [{"pid": pid, "question": "What is 1+1?", "image": image, "decoded_image": None, "choices": None,
             "unit": None, "precision": None, "answer": "2", "question_type": "free_form", "answer_type": "integer",
             "metadata": {"category": "math-targeted-vqa", "skills": ["arithmetic reasoning"]}, "query": "q"}
            for pid, image in (("good", "images/good.png"), ("dotdot", "../outside.png"),
                               ("absolute", str(outside.parent / "outside.png")))]
    (root / "data").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(root / "data" / "testmini-00000-of-00001-x.parquet")


@pytest.mark.parametrize("task", task_names())
def test_every_task_card_refuses_paths_that_escape_the_data_root(task, tmp_path):
    import yaml

    from resadapt_eval.adapters.base import tasks_dir
    adapter_name = yaml.safe_load((tasks_dir() / f"{task}.yaml").read_text())["adapter"]
    base = tmp_path / "t"
    root = base / "root"
    write_video(base / "outside.mp4", n_frames=4, height=56, width=56)  # real files, just outside the root
    _png(base / "outside.png")
    _escaping_layout(adapter_name, root, base / "outside.mp4")
    card = TaskCard.load(task, data_root=str(root))
    assert card.adapter == adapter_name
    samples = ADAPTERS.get(card.adapter)().load(card)
    good, *escaping = samples
    assert good.media is not None and Path(str(good.media)).is_file()
    assert len(escaping) == 2
    for s in escaping:
        assert s.media is None and "escapes the data root" in s.meta["media_error"], (s.id, s.meta)
        record = evaluate_sample(s, None, None, None, None, 4, 8, 0)
        assert record.id == s.id and "escapes the data root" in record.error and record.prediction is None

    # a symlink the user put inside the root (the videos on another disk) is followed, not refused
    if adapter_name != "mathvista":
        media_dir = Path(str(good.media)).parent
        moved = base / "elsewhere"
        shutil.move(str(media_dir), moved)
        media_dir.symlink_to(moved, target_is_directory=True)
        again = ADAPTERS.get(card.adapter)().load(card)[0]
        assert again.media == good.media and Path(str(again.media)).resolve().parent == moved.resolve()
        from resadapt_eval.pipeline.media import load_frames
        assert load_frames("video", again.media, 4).count == 4


# ------------------------------------------------------------------------------------------------
# Judge keys
# ------------------------------------------------------------------------------------------------

KEYS = {"OPENAI_API_KEY": "sk-robust-Openai-0123456789", "ANTHROPIC_API_KEY": "sk-robust-Anthropic-987",
        "MY_JUDGE_API_KEY": "robust-other-key-555"}


def _all_text(directory: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted(directory.rglob("*")) if p.is_file())


def test_judge_keys_never_reach_the_results(tiny25, tmp_path, monkeypatch):
    from test_mathvista import make_mathvista

    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    for k, v in KEYS.items():
        monkeypatch.setenv(k, v)
    root = make_mathvista(tmp_path / "mathvista")
    # a leaky endpoint: it answers with the Authorization header it got
    with JudgeServer(lambda auth: f"B (auth was {auth})") as server:
        args = ["run", "--task", "mathvista", "--backbone", str(tiny25), "--data-root", str(root), "--no-progress",
                "--max-error-rate", "1", "--max-new-tokens", "6"]
        res = CliRunner().invoke(main, args + ["--judge-url", server.url, "--out", str(tmp_path / "out")])
        assert res.exit_code == 0, res.output
        auth = {r["auth"] for r in server.requests}
        assert auth == {f"Bearer {KEYS['OPENAI_API_KEY']}"}  # the key was used
        d = rec.run_dir(tmp_path / "out", "mathvista", tiny25.name, "uniform-scale", "1", 1)
        records = rec.read_records(d / rec.SAMPLES)
        assert any(r["score"]["judge_used"] for r in records) and any("***" in json.dumps(r["parsed"]) for r in records)
        written = _all_text(tmp_path / "out") + res.output
        assert {rec.SAMPLES, rec.SUMMARY, rec.MANIFEST} <= {p.name for p in d.iterdir()}
        for key in KEYS.values():
            assert key not in written
        assert server.url in json.loads((d / rec.MANIFEST).read_text())["run_config"]["task_options"]["judge_url"]

        # a key inside the URL is refused before anything is written, and not repeated in the message
        secret = "sk-in-url-424242"
        for url in (f"http://judge:{secret}@127.0.0.1:1/v1", f"http://{secret}@127.0.0.1:1/v1",
                    f"http://127.0.0.1:1/v1?api_key={secret}"):
            out = tmp_path / "url"
            res = CliRunner().invoke(main, args + ["--judge-url", url, "--out", str(out)])
            assert res.exit_code == 2 and "must not carry credentials" in _one_line(res.output), res.output
            assert secret not in res.output and not out.exists()


# ------------------------------------------------------------------------------------------------
# Pickled weights
# ------------------------------------------------------------------------------------------------

def _pickle_folder(src: Path, dst: Path, weights: str, pickled: str) -> Path:
    from safetensors.torch import load_file
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors"))
    torch.save(load_file(str(src / weights)), dst / pickled)  # a real pickle of the same weights
    return dst


def test_pickled_weights_are_refused(tiny25, tmp_path):
    from resadapt_eval.strategies.resadapt_budget import BUNDLED

    data = make_videomme(tmp_path / "data", n_videos=1, questions_per_video=1, missing=0)
    base = ["run", "--task", "videomme", "--data-root", str(data), "--frames", "4", "--no-progress"]

    model = _pickle_folder(tiny25, tmp_path / "pickled-model", "model.safetensors", "pytorch_model.bin")
    res = _run_cli(base + ["--backbone", str(model), "--out", str(tmp_path / "o1")])
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    line = _one_line(res.stderr)
    assert "backbone" in line and "pickled weights (pytorch_model.bin)" in line and ".safetensors" in line
    assert not (tmp_path / "o1").exists()

    alloc = _pickle_folder(BUNDLED["tiny-bundled"], tmp_path / "pickled-alloc", "allocator.safetensors", "allocator.pt")
    external = tmp_path / "pickled-smol"
    external.mkdir()
    (external / "config.json").write_text(json.dumps({"model_type": "smol_allocator", "auto_map": {}}))
    torch.save({"w": torch.zeros(2)}, external / "pytorch_model.bin")
    for folder, extra in ((alloc, []), (alloc, ["--trust-remote-code"]), (external, ["--trust-remote-code"])):
        res = CliRunner().invoke(main, base + ["--backbone", str(tiny25), "--strategy", "resadapt-budget", "--allocator",
                                               str(folder), "--out", str(tmp_path / "o2"), *extra])
        assert res.exit_code == 2, res.output
        line = _one_line(res.output)
        assert "allocator" in line and "pickled weights" in line and folder.name in line
    res = CliRunner().invoke(main, base + ["--backbone", str(tiny25), "--strategy", "resadapt-budget", "--allocator",
                                           str(external), "--out", str(tmp_path / "o2")])
    assert res.exit_code == 2 and "--trust-remote-code" in _one_line(res.output)  # its code is refused first
    assert not (tmp_path / "o2").exists()


def _run_cli(args):
    return subprocess.run([sys.executable, "-m", "resadapt_eval", *args], env=ENV, capture_output=True, text=True,
                          timeout=300)

