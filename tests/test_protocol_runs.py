"""Runs under a named protocol: the paper's layout keeps its caps, and the protocol reaches the
manifest, the hash and the decoded frames."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from resadapt_eval.cli import main
from resadapt_eval.probes.synth import encode_video, box_frames, make_videomme


@pytest.fixture(scope="module")
def long_videomme(tmp_path_factory) -> Path:
    """Video-MME layout whose first video is 720p, 70 s at 2 fps (140 frames): the paper's caps bind."""
    root = make_videomme(tmp_path_factory.mktemp("vmme-long"), n_videos=2, questions_per_video=1, missing=0)
    encode_video(root / "data" / "vid000.mp4", box_frames(140, 720, 1280), fps=2, crf=30, preset="ultrafast")
    return root


def _records(out: Path) -> list[dict]:
    files = list(out.glob("*/*/*/*/samples.jsonl"))
    assert len(files) == 1, files
    return [json.loads(line) for line in files[0].read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_paper_protocol_at_128_frames_keeps_its_caps(tmp_path, long_videomme, tiny25, tiny3, family):
    backbone = tiny25 if family == "qwen2_5_vl" else tiny3
    factor = 28 if family == "qwen2_5_vl" else 32
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["run", "--task", "videomme", "--data-root", str(long_videomme), "--backbone",
                                    str(backbone), "--protocol", "resadapt-paper", "--frames", "128", "--out",
                                    str(out), "--no-progress", "--max-new-tokens", "2"])
    assert res.exit_code == 0, res.output
    records = _records(out)
    long = [r for r in records if r["meta"]["videoID"] == "vid000"]
    assert long and all(r["error"] is None for r in records)
    for r in records:
        chunks = r["plan"]["chunks"]
        per_chunk = [(h // factor) * (w // factor) for h, w in chunks]
        assert max(per_chunk) <= 768 and r["tokens"] == sum(per_chunk) <= 16384
    r = long[0]
    assert r["frames_decoded"] == 128                          # 2 fps x 70 s = 140, capped at max_frame_num
    assert r["tokens"] > 16384 * 0.9                            # the total budget is what binds at 720p
    manifest = json.loads(next(out.glob("*/*/*/*/manifest.json")).read_text())
    assert manifest["protocol"] == "resadapt-paper" and manifest["config"]["protocol"]["max_frames"] == 128
    assert manifest["run_config"]["text_resume"] == "max+1"


def test_protocols_change_vanilla_and_the_hash(tmp_path, videomme_root, tiny25):
    """`fixed` keeps today's frames; `qwen` samples by fps; lmms-eval resumes text the transformers way."""
    outs = {}
    for proto in ("fixed", "qwen", "lmms-eval"):
        out = tmp_path / proto
        res = CliRunner().invoke(main, ["run", "--task", "videomme", "--data-root", str(videomme_root),
                                        "--backbone", str(tiny25), "--protocol", proto, "--out", str(out),
                                        "--no-progress", "--max-new-tokens", "2", "--limit", "2"])
        assert res.exit_code == 0, res.output
        outs[proto] = (_records(out), json.loads(next(out.glob("*/*/*/*/manifest.json")).read_text()))
    hashes = {p: m["config_hash"] for p, (_, m) in outs.items()}
    assert len(set(hashes.values())) == 3
    assert "protocol" not in outs["fixed"][1]["config"]              # runs made before protocols keep their hash
    assert outs["lmms-eval"][1]["run_config"]["text_resume"] == "hf"
    fixed, qwen = outs["fixed"][0][0], outs["qwen"][0][0]
    assert fixed["frames_decoded"] != qwen["frames_decoded"] or fixed["vanilla_tokens"] != qwen["vanilla_tokens"]


def test_probe_runs_under_the_paper_protocol(tmp_path, monkeypatch):
    monkeypatch.setenv("RESADAPT_HOME", str(tmp_path / "home"))
    res = CliRunner().invoke(main, ["run", "--task", "probe-videoqa", "--protocol", "resadapt-paper", "--frames",
                                    "128", "--limit", "2", "--out", str(tmp_path / "out"), "--no-progress"])
    assert res.exit_code == 0, res.output
    for r in _records(tmp_path / "out"):
        assert r["error"] is None and r["tokens"] <= 16384
        assert max((h // 28) * (w // 28) for h, w in r["plan"]["chunks"]) <= 768
