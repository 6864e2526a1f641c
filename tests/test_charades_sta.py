"""Charades-STA adapter: parity with lmms-eval 0.7.3, our robust parser, and the official layout.

`tests/data/charades_sta_0.7.3.json` was produced by running the original lmms-eval 0.7.3 functions
(`extract_time`, `iou`, `temporal_grounding_process_results_generation` +
`_temporal_grounding_compute_metrics`, `temporal_grounding_doc_to_text` with the yaml's default
pre/post prompts) from the PyPI wheel, in a scratch directory with its imports stubbed; it is data,
not code.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fixtures import write_video
from resadapt_eval.adapters import ADAPTERS
from resadapt_eval.adapters.base import TaskCard
from resadapt_eval.adapters.charades_sta import (
    CharadesSTA, charades_prompt, extract_time_lmms, parse_interval, temporal_iou, upstream_metrics,
)
from resadapt_eval.pipeline.media import load_frames
from resadapt_eval.core.types import Sample, UserError

GOLDEN = json.loads((Path(__file__).parent / "data" / "charades_sta_0.7.3.json").read_text(encoding="utf-8"))
CASES = GOLDEN["cases"]
ADAPTER = CharadesSTA()


def _sample(gt):
    return Sample(id="x", prompt="", media_kind="video", media=None, target=list(gt))


# ---------------------------------------------------------------------------------------- parity

def test_golden_file_is_substantial():
    assert len(CASES) >= 100
    assert len({c["prediction"] for c in CASES if c["kind"] == "hand"}) >= 100     # written by hand
    assert len({c["prediction"] for c in CASES if c["kind"] == "fuzz"}) >= 100     # random token soup
    parsed = sum(1 for c in CASES if c["extract_time"])
    assert 50 <= parsed <= len(CASES) - 50            # both outcomes are well represented
    assert GOLDEN["generation"]["max_new_tokens"] == 50


@pytest.mark.parametrize("case", CASES, ids=lambda c: repr(c["prediction"])[:40] + f"|{c['gt']}")
def test_extract_time_and_metrics_match_lmms_eval(case):
    assert extract_time_lmms(case["prediction"]) == case["extract_time"]
    scores, parsed = ADAPTER.score(_sample(case["gt"]), case["prediction"])
    assert parsed["lmms"] == (case["extract_time"][0] if case["extract_time"] else None)
    assert scores["iou"] == case["iou"]
    expected = case["metrics"]
    for thr in ("3", "5", "7"):
        assert scores[f"r@0.{thr}"] * 100 == expected[f"IOU@{thr}"]
    assert scores["iou"] * 100 == pytest.approx(expected["mIOU"], abs=1e-9)
    assert scores["unparsed"] == float(not case["extract_time"])


def test_research_table():
    table = {
        "The event happens in 2.5 - 7.0 seconds.": [[2.5, 7.0]],
        "2.5 to 7.0": [[2.5, 7.0]],
        "Start time: 2.5\nEnd time: 7.0": [[2.5, 7.0]],
        "[2.5, 7.0]": [],
        "starts at 2.5s and ends at 7.0s": [],
    }
    for text, expected in table.items():
        assert extract_time_lmms(text) == expected
        assert any(c["prediction"] == text and c["extract_time"] == expected for c in CASES)


@pytest.mark.parametrize("agg", GOLDEN["aggregates"], ids=lambda a: a["name"])
def test_upstream_aggregate_matches_lmms_eval(agg):
    from resadapt_eval.adapters.charades_sta import upstream_key
    pairs = [(upstream_key(v, c, gt), pred) for v, c, gt, pred in agg["rows"]]
    ours = upstream_metrics(pairs)
    assert ours.keys() == agg["metrics"].keys()
    for k, v in agg["metrics"].items():
        assert ours[k] == pytest.approx(v, abs=1e-9)


def test_section8_example_per_row():
    """Predictions [0, 5] vs gt [0, 10] plus one unparseable output: IoU@3 50, IoU@7 0, mIoU 25."""
    rows = [("The event happens in 0 - 5 seconds.", [0.0, 10.0]), ("I don't know.", [0.0, 10.0])]
    scores = [ADAPTER.score(_sample(gt), pred)[0] for pred, gt in rows]
    mean = {k: np.mean([s[k] for s in scores]) * 100 for k in scores[0]}
    assert mean["r@0.3"] == 50 and mean["r@0.5"] == 50 and mean["r@0.7"] == 0 and mean["iou"] == 25
    assert mean["unparsed"] == 50
    assert GOLDEN["aggregates"][0]["metrics"] == {"IOU@3": 50.0, "IOU@5": 50.0, "IOU@7": 0.0, "mIOU": 25.0}


def test_per_row_scoring_differs_from_upstream_dedup():
    agg = next(a for a in GOLDEN["aggregates"] if a["name"] == "dedup")
    scores = [ADAPTER.score(_sample(gt), pred)[0] for _, _, gt, pred in agg["rows"]]
    assert np.mean([s["iou"] for s in scores]) * 100 == 75      # per row: 3 of 4 rows are exact
    assert agg["metrics"]["mIOU"] == 50                          # upstream: 2 distinct keys, 1 exact


def test_long_digit_runs_parse_in_linear_time():
    """Upstream's range regexes rescan every digit run from each digit (quadratic); ours do not."""
    import time
    start = time.perf_counter()
    for text in ("1" * 20000, "start " + "9" * 20000 + " end", "1." * 10000 + " - 3"):
        extract_time_lmms(text)
        parse_interval(text)
    assert time.perf_counter() - start < 2.0


def test_iou_edge_cases():
    assert temporal_iou([0, 10], [0, 5]) == 0.5
    assert temporal_iou([0, 0], [0, 0]) == 0.0                   # zero span guard
    assert temporal_iou([0, 1], [2, 3]) == 0.0
    assert temporal_iou([2, 3], [2, 3]) == 1.0


def test_prompt_matches_lmms_eval():
    assert GOLDEN["prompts"]
    for case in GOLDEN["prompts"]:
        assert charades_prompt(case["caption"]) == case["expected"]
    assert charades_prompt("person turn a light on") == (
        "Please find the visual event described by a sentence in the video, determining its starting and ending "
        "times. The format should be: 'The event happens in the start time - end time'. For example, The event "
        "'person turn a light on' happens in the 24.3 - 30.4 seonds. Now I will give you the textual sentence: "
        "person turn a light on. Please return its start time and end time.")


# ---------------------------------------------------------------------------------------- robust

@pytest.mark.parametrize("text, expected", [
    ("[2.5, 7.0]", [2.5, 7.0]),
    ("(2.5, 7.0)", [2.5, 7.0]),
    ("The event happens at [2.5s, 7.0s].", [2.5, 7.0]),
    ("from 2.5s to 7s", [2.5, 7.0]),
    ("From 2.5 seconds to 7 seconds.", [2.5, 7.0]),
    ("2.5 to 7.0", [2.5, 7.0]),
    ("The event happens in 2.5 - 7.0 seconds.", [2.5, 7.0]),
    ("The event happens in 2.5 seconds - 7.0 seconds.", [2.5, 7.0]),
    ("2.5 sec - 7.0 sec", [2.5, 7.0]),
    ("The event happens in 4.2—9.1 seconds.", [4.2, 9.1]),
    ("The event happens in 4.2 − 9.1 seconds.", [4.2, 9.1]),
    ("The event happens in 4.2 ~ 9.1 seconds.", [4.2, 9.1]),
    ("00:02.5 - 00:07", [2.5, 7.0]),
    ("1:02 - 1:10", [62.0, 70.0]),
    ("0:01:02 - 0:01:10", [62.0, 70.0]),
    ("starts at 2.5s and ends at 7.0s", [2.5, 7.0]),
    ("The event starts at 2.5 seconds and ends at 7.0 seconds.", [2.5, 7.0]),
    ("The Event Starts At 2.5 And Ends At 7.0", [2.5, 7.0]),
    ("The event begins at 2.5 and finishes at 7.0.", [2.5, 7.0]),
    ("The event 'person sits on 2 chairs' starts at 4 and ends at 9.", [4.0, 9.0]),
    ("The event starts at 0:05 and ends at 0:12.", [5.0, 12.0]),
    ("Step 1: watch.\nStep 2: the event starts at 6.1 s.\nStep 3: it ends at 9.9 s.", [6.1, 9.9]),
    ("The start time for this event is 0 seconds, and the end time is 12 seconds.", [0.0, 12.0]),
    ("Start time: 2.5\nEnd time: 7.0", [2.5, 7.0]),
    ("start: 2.5, end: 7.0", [2.5, 7.0]),
    ('{"start": 2.5, "end": 7}', [2.5, 7.0]),
    ('{"start_time": 2.5, "end_time": 7.0}', [2.5, 7.0]),
    ('```json\n{"start": 2.5, "end": 7.0}\n```', [2.5, 7.0]),
    ("\\boxed{[2.5, 7.0]}", [2.5, 7.0]),
    ("<think>start is near 4, maybe 1 - 2</think> [4.0, 8.0]", [4.0, 8.0]),
    ("between 2.5 and 7.0 seconds", [2.5, 7.0]),
    ("2.5, 7.0", [2.5, 7.0]),
    ("2.5 7.0", [2.5, 7.0]),
    ("The event happens in ３ - ８ seconds.", [3.0, 8.0]),
    ("The event happens in .5 - 7 seconds", [0.5, 7.0]),
    ("The event happens in 12:30 - 7 seconds", [7.0, 750.0]),
    # echoed examples are skipped
    ("A specific example is : 20.8 - 30.0 seconds. The event happens in 3.0 - 9.0 seconds.", [3.0, 9.0]),
    ("For example, The event 'person turn a light on' happens in the 24.3 - 30.4 seonds. "
     "The event happens in 3.0 - 9.0 seconds.", [3.0, 9.0]),
    # start <= end, whatever the order given
    ("[7.0, 2.5]", [2.5, 7.0]),
    ("Start: 7.0\nEnd: 2.5", [2.5, 7.0]),
    ("The event happens in 30.4 - 24.3 seconds.", [24.3, 30.4]),
    # nothing to read
    ("", None),
    ("I cannot determine when the event happens.", None),
    ("Start time: 2.5", None),
    ("There are 3 people. The event happens at 4 seconds.", None),
    ("3 people\n4 chairs", None),
    ("2.5\n7.0\n9.0", None),
    ("The event happens in 4.5.6 - 7 seconds", None),
    ("The event happens at the start of the video and ends at the end.", None),
])
def test_robust_parser(text, expected):
    got = parse_interval(text)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


def test_robust_reads_what_upstream_misreads():
    # upstream: "2.5s" in a sentence reads as 2 (the \b after the digit), "00:02.5 - 00:07" as [0, 2.5]
    assert extract_time_lmms("The event starts at 2.5s! It ends at 7.0s!") == [[2.0, 7.0]]
    assert parse_interval("The event starts at 2.5s! It ends at 7.0s!") == [2.5, 7.0]
    assert extract_time_lmms("00:02.5 - 00:07") == [[0.0, 2.5]]
    assert parse_interval("00:02.5 - 00:07") == [2.5, 7.0]


def test_robust_scores_and_metric_names():
    scores, parsed = ADAPTER.score(_sample([2.5, 7.0]), "[2.5, 7.0]")
    assert set(scores) == set(ADAPTER.metrics)
    assert ADAPTER.main_metric == "iou" and ADAPTER.main_metric in ADAPTER.metrics
    assert parsed == {"lmms": None, "robust": [2.5, 7.0]}
    assert scores["iou"] == 0 and scores["unparsed"] == 1 and scores["r@0.3"] == 0
    assert scores["iou_robust"] == 1 and scores["unparsed_robust"] == 0
    assert all(scores[f"r@0.{t}_robust"] == 1 for t in (3, 5, 7))
    assert all(isinstance(v, float) for v in scores.values())


def test_robust_agrees_with_upstream_where_upstream_reads_clean_formats():
    clean = ["The event happens in 2.5 - 7.0 seconds.", "2.5 to 7.0", "Start time: 2.5\nEnd time: 7.0",
             "The event happens in 00:00:18 - 00:00:23.", "1:02 - 1:10", "from 2.5s to 7s"]
    for text in clean:
        assert [parse_interval(text)] == extract_time_lmms(text)


# ---------------------------------------------------------------------------------------- layout

F16 = [(24.3, 30.4), (0.0, 6.2), (1.3, 2.7), (3.1, 9.9), (24.3, 30.4), (0.5, 1.5)]


def make_charades(root: Path) -> Path:
    """<root>/data/test-00000-of-00001.parquet and <root>/Charades_v1_480/<video>, as lmms-eval lays it out."""
    write_video(root / "Charades_v1_480" / "AO8RW.mp4", n_frames=16, seed=1)
    write_video(root / "Charades_v1_480" / "Y6R7T.mp4", n_frames=20, height=96, width=128, seed=2)
    videos = ["AO8RW.mp4", "AO8RW.mp4", "Y6R7T.mp4", "MISSN.mp4", "AO8RW.mp4", "../../outside.mp4"]
    captions = ["person turn a light on", "person opens the door", "a person sits down", "person eats",
                "person turn a light on", "person escapes"]
    table = pa.table({
        "video": pa.array(videos, pa.string()),
        "caption": pa.array(captions, pa.string()),
        "timestamp": pa.array([np.array(t, dtype=np.float16) for t in F16], pa.list_(pa.float16())),
    })
    (root / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(table, root / "data" / "test-00000-of-00001.parquet")
    return root


def test_official_layout(tmp_path):
    root = make_charades(tmp_path / "charades_sta")
    card = TaskCard.load("charades_sta", data_root=str(root))
    assert card.adapter == "charades_sta" and card.frames == 32 and card.max_new_tokens == 50
    adapter = ADAPTERS.get(card.adapter)()
    samples = adapter.load(card)
    assert len(samples) == 6
    ids = [s.id for s in samples]
    assert len(set(ids)) == 6 and ids == [s.id for s in adapter.load(card)]     # unique and stable
    assert ids[0] == "0000-AO8RW" and ids[3] == "0003-MISSN"

    first = samples[0]
    assert first.media_kind == "video"
    assert first.target == [24.296875, 30.40625]                               # float16 as stored
    assert first.target == [float(np.float16(a)) for a in F16[0]]
    assert first.prompt == charades_prompt("person turn a light on")
    assert first.meta["video"] == "AO8RW.mp4" and first.meta["caption"] == "person turn a light on"
    assert Path(first.media) == (root / "Charades_v1_480" / "AO8RW.mp4").resolve()
    for s in samples[:3]:
        assert Path(s.media).is_file()
    frames = load_frames("video", samples[2].media, 4)
    assert frames.count == 4 and frames.height == 96

    missing = samples[3]
    assert missing.media is not None and not Path(missing.media).exists()
    escaped = samples[5]
    assert escaped.media is None and "escapes the data root" in escaped.meta["media_error"]

    # upstream counts identical (video, caption, gt) triples once; we score every row
    keys = Counter(s.meta["upstream_key"] for s in samples)
    assert sum(n - 1 for n in keys.values()) == 1
    assert keys["AO8RW.mp4>>>person turn a light on>>>[24.296875, 30.40625]"] == 2

    scores, parsed = adapter.score(first, "The event happens in 24.3 - 30.4 seconds.")
    assert parsed["lmms"] == [24.3, 30.4]
    assert scores["iou"] == pytest.approx(temporal_iou(first.target, [24.3, 30.4]))
    assert scores["r@0.7"] == 1 and scores["iou_robust"] == scores["iou"]
    assert json.loads(json.dumps([s.meta for s in samples])) == [s.meta for s in samples]   # records are JSON


def test_missing_annotations_name_the_hint(tmp_path):
    card = TaskCard.load("charades_sta", data_root=str(tmp_path))
    with pytest.raises(UserError, match="lmms-eval/charades_sta"):
        ADAPTERS.get("charades_sta")().load(card)


def test_default_data_root_follows_hf_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert TaskCard.load("charades_sta").data_root == tmp_path / "hf" / "charades_sta"


# ------------------------------------------------------------ where the tokens went (GT window share)

def test_window_token_share_weights_chunks_by_area_and_frames_by_time():
    from resadapt_eval.core.types import Chunk, Frames, Plan
    from resadapt_eval.pipeline.shares import window_token_share

    frames = Frames("video", np.zeros((6, 56, 56, 3), np.uint8), [0, 2, 4, 6, 8, 10], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
                    2.0, 12)
    chunks = (Chunk((0, 1), 28, 28), Chunk((2, 3), 56, 56), Chunk((4, 5), 28, 28))
    plan = Plan("video", chunks, tokens=6, vanilla_tokens=12, limit=6)
    assert window_token_share(plan, frames, (2.0, 3.0)) == pytest.approx(4 / 6)      # the big chunk, whole
    assert window_token_share(plan, frames, (3.0, 4.0)) == pytest.approx((2 + 0.5) / 6)  # half of two chunks
    assert window_token_share(plan, frames, (10.0, 20.0)) == 0.0
    assert window_token_share(plan, frames, (5.0, 0.0)) == pytest.approx(1.0)        # reversed window, all inside


def test_runs_record_the_token_share_inside_the_window_and_the_frontier_shows_it(tmp_path, tiny25):
    from resadapt_eval.analysis import frontier as fr
    from resadapt_eval.pipeline.store import read_records
    from resadapt_eval.pipeline.runner import RunConfig, run

    root = make_charades(tmp_path / "charades_sta")
    shares = {}
    for strategy in ("uniform-scale", "uniform-frames"):
        result = run(RunConfig(task="charades_sta", backbone=str(tiny25), strategy=strategy, budget="0.5", frames=8,
                               data_root=str(root), out=str(tmp_path / "results"), max_new_tokens=4, progress=False))
        records = {r["id"]: r for r in read_records(result.directory / "samples.jsonl")}
        ok = {k: r["window_share"] for k, r in records.items() if not r.get("error")}
        assert all("window_share" not in r for r in records.values() if r.get("error"))
        assert ok["0000-AO8RW"] == 0.0 and ok["0001-AO8RW"] == 1.0   # window after the 2 s clip; window over all of it
        assert all(0.0 <= v <= 1.0 for v in ok.values())
        assert result.summary["window_share_mean"] == pytest.approx(np.mean(list(ok.values())))
        shares[strategy] = ok
    # 8 of Y6R7T's 20 frames at 8 fps, decoded at 0, .375, .625, 1.0, 1.375, 1.75, 2.0, 2.375 s: four inside [1.3, 2.7]
    assert shares["uniform-scale"]["0002-Y6R7T"] == pytest.approx(0.5)
    table = fr.load_runs(tmp_path / "results").set_index("strategy")
    assert table.loc["uniform-scale", "window_share"] == pytest.approx(np.mean(list(shares["uniform-scale"].values())))
    built = fr.build(tmp_path / "results", tmp_path / "frontier")
    assert "window_share" in (tmp_path / "frontier" / "frontier.md").read_text().splitlines()[0]
    assert built["allocation"] and built["allocation"][0].name == "charades_sta__tiny-qwen2_5_vl__allocation.png"
