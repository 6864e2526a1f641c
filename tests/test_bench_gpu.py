"""`resadapt-eval bench gpu` at tiny shapes on the CPU: the same code the GPU run uses, so only the
GPU run is new when a GPU is there. The figures are machine-dependent; what is asserted is that
every field is there and sane (tokens equal the model-free arithmetic, shares lie in [0, 1])."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from resadapt_eval.cli import main
from resadapt_eval.tools import bench_gpu

STAGES = {"decoding", "preprocessing", "planning", "vision_encoding", "prefill", "generation", "backbone_total"}
CONFIG_FIELDS = {"strategy", "budget", "repeats", "tokens", "tokens_match", "stages_s", "stage_samples_s",
                 "peak_gpu_mib", "rss_mib", "flops", "prefill_mfu", "encode_mfu"}
SUMMARY_FIELDS = {"backbone", "frames", "peak_gpu_mib", "vanilla_stages_s", "vanilla_tokens", "vanilla_prefill_mfu",
                  "outside_share_with_prefetch", "outside_share_without_prefetch", "planner_over_backbone_max",
                  "planner_share_max", "tokens_match_all"}


@pytest.fixture
def one_thread():
    """The bench's many small ops run faster on one core of a busy machine than on two competing ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_gpu_bench_runs_at_tiny_shapes_and_reports_every_field(tmp_path, one_thread):
    res = CliRunner().invoke(main, [
        "bench", "gpu", "--gpu-tiny", "--gpu-frames", "4", "--gpu-budgets", "0.25", "--gpu-repeats", "1",
        "--gpu-new-tokens", "3", "--gpu-video", "160x96", "--gpu-video-seconds", "2", "--gpu-video-fps", "8",
        "--gpu-overhead-samples", "2", "--gpu-json", str(tmp_path / "gpu-{device}-{date}.json"),
        "--json", str(tmp_path / "bench.json")])
    assert res.exit_code == 0, res.output
    written = list(tmp_path.glob("gpu-*.json"))
    assert len(written) == 1 and "% with prefetch" in res.output
    report = json.loads(written[0].read_text())

    assert report["complete"] and report["skipped"] == []
    assert report["device"]["type"] == "cpu" and report["device"]["bf16_peak_flops"] is None
    assert report["attention"] == ["sdpa"] and report["versions"]["flash_attn_installed"] in (True, False)
    import transformers
    assert report["versions"]["torch"] == torch.__version__
    assert report["versions"]["transformers"] == transformers.__version__
    assert report["goals"]["outside_share_with_prefetch_max"] == 0.02

    assert [b["name"] for b in report["backbones"]] == ["qwen2.5-vl-7b-tiny", "qwen3-vl-8b-tiny"]
    for b in report["backbones"]:
        assert b["allocator"]["freshly_initialised"] and b["parameters"] > 0 and b["attention"] == "sdpa"
        assert b["geometry"]["temporal_patch_size"] == 2 and b["dtype"] == "float32"
        (group,) = b["groups"]
        assert group["frames"] == 4 and group["decoding"]["median_s"] > 0 and group["vanilla_tokens"] > 0
        pairs = [(c["strategy"], c["budget"]) for c in group["configs"]]
        assert pairs == [("vanilla", "1.0")] + [(s, "0.25") for s in ("uniform-scale", "visionzip", "fastv", "resadapt-budget")]
        for c in group["configs"]:
            assert CONFIG_FIELDS <= set(c), c.keys()
            t = c["tokens"]
            # the model's counts equal the plan's arithmetic on the CPU, field by field
            assert c["tokens_match"] and t["model"] == t["cpu"] and t["plan"] == t["cpu"]["visual"]
            assert t["model"]["vanilla"] == group["vanilla_tokens"] and t["generated"] == 3
            assert not t["feasible"] or t["plan"] <= t["limit"]
            assert STAGES <= set(c["stages_s"]) and all(v >= 0 for v in c["stages_s"].values())
            assert c["stages_s"]["prefill"] > 0 and c["stages_s"]["generation"] > 0
            assert c["peak_gpu_mib"] is None and c["prefill_mfu"] is None and c["rss_mib"] > 0
            assert c["flops"]["llm_prefill"] > 0 and c["flops"]["vision"] > 0
            if c["strategy"] in ("visionzip", "fastv"):  # full input, then reduced to the budget
                assert t["model"]["input_visual"] == group["vanilla_tokens"] > t["model"]["visual"]
                assert ("reduction" in c["stages_s"]) == (c["strategy"] == "visionzip")
            if c["strategy"] == "resadapt-budget":
                p = c["planner"]
                assert 0 < p["planner_share"] < 1 and p["planner_over_backbone"] > 0 and c["flops"]["planner"] > 0
            else:
                assert "planner" not in c
        assert [o["prefetch"] for o in group["overhead"]] == [2, 0]
        for o in group["overhead"]:
            assert o["samples"] == 2 and o["errors"] == 0 and 0 <= o["outside_share"] <= 1
            assert 0 < o["model_s"] <= o["wall_s"] + 1e-9 or o["prefetch"] > 0
    assert len(report["summary"]) == 2
    for row in report["summary"]:
        assert SUMMARY_FIELDS <= set(row) and row["tokens_match_all"]
        assert 0 <= row["outside_share_with_prefetch"] <= 1 and 0 <= row["outside_share_without_prefetch"] <= 1
        assert 0 < row["planner_share_max"] < 1
    assert "gpu" in json.loads((tmp_path / "bench.json").read_text())
    note = written[0].with_suffix(".md").read_text()  # the note beside the JSON: one row per group
    assert "| qwen2.5-vl-7b-tiny | 4 |" in note and "| qwen3-vl-8b-tiny | 4 |" in note and "## qwen3-vl-8b-tiny" in note


@pytest.mark.parametrize("name, billions", [("qwen2.5-vl-7b", 8.29), ("qwen3-vl-8b", 8.77)])
def test_shipped_configurations_have_the_published_parameter_counts(name, billions):
    """The JSON builds the released architecture: its parameter count is the model card's (on the meta
    device, so nothing is allocated)."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    spec = bench_gpu.load_spec(name)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(AutoConfig.for_model(**spec["config"]))
    assert abs(sum(p.numel() for p in model.parameters()) / 1e9 - billions) < 0.01


def test_report_file_is_named_after_the_device():
    report = {"device": {"name": "NVIDIA H100 80GB HBM3"}, "created": "2026-12-06T21:00:00+0000"}
    assert str(bench_gpu.json_path(report)) == "docs/gpu-bench-nvidia-h100-80gb-hbm3-2026-12-06.json"
    assert bench_gpu.bf16_peak(torch.device("cpu"))[1] is None
    assert dict(bench_gpu.BF16_PEAKS)["H100"] == 989e12 and dict(bench_gpu.BF16_PEAKS)["A100"] == 312e12


def test_deadline_shares_time_among_groups_and_lists_what_it_skipped(tmp_path):
    clock = bench_gpu.Clock(deadline_s=100.0)
    clock.start -= 40.0  # 40 s gone, 60 s left for 3 groups: this one may run 20 s
    clock.start_group(3)
    assert clock.left() and 59.0 < clock.group_end < 61.0
    clock.start -= 25.0
    assert not clock.left()
    report = bench_gpu.gpu_benchmark(bench_gpu.GpuBenchSettings(
        tiny=True, frames=(4,), deadline_s=0.0, video_height=96, video_width=160, video_seconds=1, video_fps=8,
        workdir=str(tmp_path)))
    assert report["skipped"] == ["qwen2.5-vl-7b", "qwen3-vl-8b"] and not report["complete"]
    assert report["backbones"] == [] and report["summary"] == []
