"""A sweep runs whatever `run` runs: strategy options in the grid (`fastv+layer=2`), --allocator and
--strategy-option as flags and in the YAML, collision-free run directories; resadapt-budget on a backbone
without an allocator fails in one line before any model loads; train-allocator for any Qwen-VL folder."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from resadapt_eval import probes
from resadapt_eval.cli import main
from resadapt_eval.core.types import UserError
from resadapt_eval.pipeline.grid import StrategySpec, expand, parse_spec, split_list
from resadapt_eval.pipeline.store import MANIFEST, SAMPLES, read_records, strategy_label

README = Path(__file__).resolve().parents[1] / "README.md"


def cli(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def one_line_refusal(res, *needles: str) -> None:
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error: ") and res.output.count("\n") == 1, res.output
    for needle in needles:
        assert needle in res.output, res.output


def manifests(root: Path) -> dict[str, dict]:
    return {p.parent.parent.name: json.loads(p.read_text()) for p in root.rglob(MANIFEST)}


# --------------------------------------------------------------------------- the grid's words (no model)

def test_a_spec_is_a_name_with_typed_options():
    assert parse_spec("uniform-scale") == StrategySpec("uniform-scale", {})
    assert parse_spec("fastv+layer=2+frame_share=0.5") == StrategySpec("fastv", {"layer": 2, "frame_share": 0.5})
    # '+' only starts an option where KEY= follows: values keep theirs
    assert parse_spec("resadapt-budget+allocator=/a/b+c+drop=topk:4").options == {"allocator": "/a/b+c", "drop": "topk:4"}
    assert split_list("uniform-scale, fastv+layer=2,x+k=[1, 2],y+k='a,b'") == \
        ["uniform-scale", "fastv+layer=2", "x+k=[1, 2]", "y+k='a,b'"]


def test_common_options_go_to_the_strategies_that_have_them(tmp_path):
    specs = expand(["uniform-scale", "fastv+layer=3", "visionzip"], {"frame_share": 0.5})
    assert specs == [StrategySpec("uniform-scale", {}), StrategySpec("fastv", {"layer": 3, "frame_share": 0.5}),
                     StrategySpec("visionzip", {"frame_share": 0.5})]
    # an entry's own option wins; equal entries run once
    assert expand(["fastv+frame_share=1.0", "fastv+frame_share=1"], {"frame_share": 0.5}) == \
        [StrategySpec("fastv", {"frame_share": 1.0})]


def test_the_allocator_flag_goes_to_resadapt_entries_that_name_none(tmp_path):
    from resadapt_eval.backbones import load_backbone
    from resadapt_eval.allocator.policy import Policy

    a, b = tmp_path / "a" / "mine", tmp_path / "b" / "mine"
    head = Policy.create(load_backbone("reference")).head
    head.save(a), head.save(b)
    specs = expand(["uniform-scale", "resadapt-budget", f"resadapt-budget+allocator={b}"], allocator=str(a),
                   trust_remote_code=True)
    assert specs[1] == StrategySpec("resadapt-budget", {"allocator": str(a), "trust_remote_code": True})
    assert specs[2].options["allocator"] == str(b)
    # two folders of one name: two run directories, each named by the folder and its place
    assert specs[1].label != specs[2].label
    assert re.fullmatch(r"resadapt-budget\+allocator=mine@[0-9a-f]{8}\+trust_remote_code=True", specs[1].label)
    # a sweep-wide allocator goes only to the strategies that load its kind: resadapt keeps its own
    mixed = expand(["resadapt", "resadapt-budget"], allocator=str(a))
    assert mixed[0] == StrategySpec("resadapt", {}) and mixed[1].options["allocator"] == str(a)
    # the same folder written relative or absolute: one directory
    os.chdir(tmp_path)
    assert strategy_label("resadapt-budget", {"allocator": "a/mine"}) == strategy_label("resadapt-budget", {"allocator": str(a)})


@pytest.mark.parametrize("entries, common, allocator, message", [
    (["fastv+depth=2"], {}, None, "strategy 'fastv' has no option depth (its options: layer, frame_share)"),
    (["fastv+layer=0"], {}, None, "layer must be an integer >= 1"),
    (["uniform-scale", "fastv"], {"keep": 2}, None, "--strategy-option keep: no strategy of uniform-scale, fastv"),
    (["uniform-scale"], {}, ".", "is for resadapt or resadapt-budget, which is not among uniform-scale"),
    (["nosuch"], {}, None, "unknown strategy 'nosuch'"),
    (["=2"], {}, None, "is not NAME or NAME+KEY=VALUE"),
    ([], {}, None, "no strategy to run"),
])
def test_bad_grids_are_refused_in_one_line(entries, common, allocator, message):
    with pytest.raises(UserError, match=re.escape(message)):
        expand(entries, common, allocator)


# --------------------------------------------------------------------------- the grid runs (reference backbone)

@pytest.fixture(scope="module")
def videoqa(tmp_path_factory) -> Path:
    return probes.build("probe-videoqa", tmp_path_factory.mktemp("pvqa"), seed=0, n=4)


def test_a_sweep_grid_runs_strategy_options_into_their_own_directories(videoqa, tmp_path):
    """fastv+layer=2 and fastv+layer=1 from a YAML grid: two directories, each manifest with its own
    layer, the common frame_share in both; `run` with the same spec resumes the sweep's directory."""
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump({"tasks": ["probe-videoqa"], "strategies": ["fastv+layer=2", "fastv+layer=1"],
                                      "budgets": [0.25], "strategy-option": {"frame_share": 0.5}, "limit": 2}))
    out = tmp_path / "out"
    res = cli("sweep", "--config", str(config), "--data-root", str(videoqa), "--out", str(out), "--no-progress")
    assert res.exit_code == 0, res.output
    found = manifests(out / "probe-videoqa" / "tiny-bundled")
    assert sorted(found) == ["fastv+frame_share=0.5+layer=1", "fastv+frame_share=0.5+layer=2"]
    for label, layer in [("fastv+frame_share=0.5+layer=2", 2), ("fastv+frame_share=0.5+layer=1", 1)]:
        m = found[label]
        assert m["run_config"]["strategy"] == "fastv"
        assert m["config"]["strategy_options"] == {"layer": layer, "frame_share": 0.5}
        records = read_records(out / "probe-videoqa" / "tiny-bundled" / label / "b0.25-f8" / SAMPLES)
        assert len(records) == 2 and all(r["error"] is None for r in records)
        assert all(r["plan"]["reduction"]["layer"] == layer for r in records), records[0]["plan"]
    assert found["fastv+frame_share=0.5+layer=2"]["config_hash"] != found["fastv+frame_share=0.5+layer=1"]["config_hash"]
    # `run` takes the same spec and lands in the same directory, with nothing left to do
    res = cli("run", "--task", "probe-videoqa", "--strategy", "fastv+layer=2+frame_share=0.5", "--budget", "0.25",
              "--limit", "2", "--data-root", str(videoqa), "--out", str(out), "--no-progress")
    assert res.exit_code == 0, res.output
    assert "fastv+frame_share=0.5+layer=2 b0.25 f8" in res.output
    assert len(read_records(out / "probe-videoqa" / "tiny-bundled" / "fastv+frame_share=0.5+layer=2" / "b0.25-f8"
                            / SAMPLES)) == 2


@pytest.mark.parametrize("args, message", [
    (["--strategies", "fastv+depth=2"], "has no option depth"),
    (["--strategies", "uniform-scale", "--allocator", "."], "is for resadapt or resadapt-budget, which is not among uniform-scale"),
    (["--strategies", "uniform-scale", "--strategy-option", "layer=2"], "--strategy-option layer: no strategy"),
    (["--strategies", "uniform-scale", "--frames", "8,x"], "--frames wants comma-separated frame counts"),
    (["--strategies", "uniform-scale", "--budgets", "0.25,lots"], "lots"),
    (["--strategies", "uniform-scale", "--tasks", "probe-videoqa,nosuch"], "nosuch"),
])
def test_a_bad_sweep_fails_before_its_first_configuration(videoqa, tmp_path, args, message):
    out = tmp_path / "out"
    res = cli("sweep", "--tasks", "probe-videoqa", "--data-root", str(videoqa), "--out", str(out), "--no-progress",
              "--budgets", "0.25", *args)
    one_line_refusal(res, message)
    assert not list(out.rglob(SAMPLES))


def test_unknown_yaml_keys_are_refused_in_one_line(tmp_path):
    config = tmp_path / "sweep.yaml"
    config.write_text("tasks: [probe-videoqa]\nstrategy: fastv\n")
    res = cli("sweep", "--config", str(config))
    assert res.exit_code == 2 and "unknown option(s) strategy" in res.output and res.output.count("\n") == 1


# --------------------------------------------------------------------------- resadapt-budget on any backbone

@pytest.fixture(scope="module")
def unloadable(tiny3, tmp_path_factory) -> Path:
    """A Qwen3-VL stand-in whose weights file is garbage: any attempt to load the model fails, so a
    refusal that names the allocator proves that it came before the model loaded."""
    folder = tmp_path_factory.mktemp("standin") / "my-qwen3-vl"
    shutil.copytree(tiny3, folder)
    (folder / "model.safetensors").write_bytes(b"not weights")
    return folder


NO_ALLOCATOR = ("strategy resadapt-budget has no allocator for backbone 'my-qwen3-vl'", "--allocator FOLDER",
                "train-allocator --backbone", "--trust-remote-code")


def test_resadapt_without_an_allocator_fails_before_the_model_loads(unloadable, videoqa, tmp_path):
    res = cli("run", "--task", "probe-videoqa", "--data-root", str(videoqa), "--backbone", str(unloadable),
              "--strategy", "resadapt-budget", "--budget", "0.25", "--out", str(tmp_path), "--no-progress")
    one_line_refusal(res, *NO_ALLOCATOR)
    # the same folder without resadapt-budget does try to load it (so the check above really came first)
    res = CliRunner().invoke(main, ["run", "--task", "probe-videoqa", "--data-root", str(videoqa), "--backbone",
                                    str(unloadable), "--budget", "0.25", "--limit", "1", "--out", str(tmp_path),
                                    "--no-progress"])
    assert res.exit_code != 0 and "header" in str(res.exception) and "allocator" not in res.output


def test_a_sweep_with_resadapt_and_no_allocator_fails_before_its_first_configuration(unloadable, videoqa, tmp_path):
    res = cli("sweep", "--tasks", "probe-videoqa", "--data-root", str(videoqa), "--backbone", str(unloadable),
              "--strategies", "uniform-scale,fastv+layer=1,resadapt-budget", "--budgets", "0.25,1.0",
              "--out", str(tmp_path), "--no-progress")
    one_line_refusal(res, *NO_ALLOCATOR)
    assert not list(tmp_path.rglob(SAMPLES))


def test_a_fastv_layer_beyond_the_llm_fails_before_the_first_configuration(unloadable, videoqa, tmp_path):
    """The stand-in's LLM has 2 layers, so fastv+layer=2 cannot prune: said before anything runs
    (its config.json is read; the weights, garbage here, are never loaded)."""
    res = cli("sweep", "--tasks", "probe-videoqa", "--data-root", str(videoqa), "--backbone", str(unloadable),
              "--strategies", "uniform-scale,fastv+layer=2", "--budgets", "0.25", "--out", str(tmp_path),
              "--no-progress")
    one_line_refusal(res, "1 <= K < 2 on the 2-layer LLM of backbone 'my-qwen3-vl', got K=2", "fastv+layer=K")
    assert not list(tmp_path.rglob(SAMPLES))


# --------------------------------------------------------------------------- train for any backbone

@pytest.fixture(scope="module")
def trained(tiny25, tiny3, tmp_path_factory) -> dict[str, Path]:
    """An allocator trained with `train-allocator --backbone FOLDER` for each stand-in (a few CAPO steps)."""
    home = tmp_path_factory.mktemp("home")
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RESADAPT_HOME", str(home))
        for name, folder in [("tiny25", tiny25), ("tiny3", tiny3)]:
            out[name] = tmp_path_factory.mktemp("alloc") / f"alloc-{name}"
            res = cli("train-allocator", "--task", "probe-videoqa", "--backbone", str(folder), "--out",
                      str(out[name]), "--steps", "2", "--group", "2", "--train-samples", "2",
                      "--task-budgets", "probe-videoqa=0.25", "--no-progress")
            assert res.exit_code == 0, res.output
    return out


@pytest.mark.slow
def test_train_allocator_for_any_qwen_vl_folder_and_sweep_with_it(trained, tiny25, tiny3, videoqa, tmp_path):
    """Each stand-in gets its own allocator (its features' sizes and its fingerprint recorded); a sweep
    runs it both as --allocator and as resadapt-budget+allocator=PATH; another backbone's is refused."""
    from resadapt_eval.backbones.qwen_vl import fingerprint

    for name, folder in [("tiny25", tiny25), ("tiny3", tiny3)]:
        config = json.loads((trained[name] / "allocator_config.json").read_text())
        assert config["feature_dim"] == 2 * 64 and config["text_dim"] == 64  # the stand-ins' LLM width
        assert config["trained"]["backbone_fingerprint"]["sha256"] == fingerprint(folder)["sha256"]
        assert config["trained"]["prompts"] == 2
    out = tmp_path / "out"
    res = cli("sweep", "--tasks", "probe-videoqa", "--data-root", str(videoqa), "--backbone", str(tiny3),
              "--strategies", "uniform-scale,resadapt-budget", "--allocator", str(trained["tiny3"]), "--budgets", "0.25",
              "--limit", "2", "--out", str(out), "--no-progress")
    assert res.exit_code == 0, res.output
    res = cli("sweep", "--tasks", "probe-videoqa", "--data-root", str(videoqa), "--backbone", str(tiny25),
              "--strategies", f"resadapt-budget+allocator={trained['tiny25']}", "--budgets", "0.25",
              "--limit", "2", "--out", str(out), "--no-progress")
    assert res.exit_code == 0, res.output
    for backbone in ("tiny-qwen3_vl", "tiny-qwen2_5_vl"):
        [run] = [p.parent for p in (out / "probe-videoqa" / backbone).glob("resadapt-budget+allocator=*/b0.25-f8/" + MANIFEST)]
        records = read_records(run / SAMPLES)
        assert len(records) == 2 and all(r["error"] is None and r["flops"]["planner"] > 0 for r in records)
        assert all(r["tokens"] <= r["limit"] for r in records)
    # an allocator trained on the Qwen2.5-VL stand-in reads features that mean nothing to the Qwen3-VL one
    res = cli("run", "--task", "probe-videoqa", "--data-root", str(videoqa), "--backbone", str(tiny3),
              "--strategy", "resadapt-budget", "--allocator", str(trained["tiny25"]), "--budget", "0.25",
              "--out", str(tmp_path / "other"), "--no-progress")
    one_line_refusal(res, f"allocator {str(trained['tiny25'])!r} was trained for backbone", "not for 'tiny-qwen3_vl'",
                     "train-allocator --backbone")
    assert not list((tmp_path / "other").rglob(SAMPLES))


# --------------------------------------------------------------------------- the README's sweep

def readme_sweep_yaml() -> dict:
    text = README.read_text()
    at = text.index("sweep --config sweep.yaml")
    block = re.search(r"```yaml\n(.*?)```", text[at:], re.S)
    assert block, "README.md has no ```yaml block after `sweep --config sweep.yaml`"
    return yaml.safe_load(block.group(1))


@pytest.mark.slow
def test_the_readme_sweep_runs_with_a_stand_in_backbone(tiny25, trained, tmp_path, monkeypatch):
    """README's sweep.yaml with only `backbone` replaced by a stand-in folder, on Video-MME- and
    LongVideoBench-layout data where the cards look ($HF_HOME). Where the README's grid has resadapt-budget
    and names no allocator, the sweep must stop before the model loads, naming --allocator; then it
    runs with --allocator (the README should carry `allocator:`)."""
    from resadapt_eval.probes.synth import make_longvideobench, make_videomme

    grid = readme_sweep_yaml()
    assert "backbone" in grid
    grid["backbone"] = str(tiny25)
    monkeypatch.chdir(tmp_path)
    if isinstance(grid.get("allocator"), str):  # a relative folder in the README: train-allocator's --out
        shutil.copytree(trained["tiny25"], tmp_path / grid["allocator"])
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(grid))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    make_videomme(tmp_path / "hf" / "videomme")
    make_longvideobench(tmp_path / "hf" / "longvideobench")
    args = ["sweep", "--config", "sweep.yaml", "--limit", "2", "--out", "results", "--no-progress"]
    extra: list[str] = []
    if "resadapt-budget" in [parse_spec(s).name for s in grid["strategies"]] and "allocator" not in grid and \
            not any("allocator" in parse_spec(s).options for s in grid["strategies"]):
        one_line_refusal(cli(*args), "no allocator for backbone 'tiny-qwen2_5_vl'", "--allocator")
        extra = ["--allocator", str(trained["tiny25"])]
    res = cli(*args, *extra)
    assert res.exit_code == 0, res.output
    expected = len(grid["tasks"]) * len(grid["strategies"]) * len(grid["budgets"]) * len(grid.get("frames", [None]))
    assert f"{expected} configurations in" in res.output
    done = list((tmp_path / "results").rglob(SAMPLES))
    assert len(done) == expected
    for path in done:
        records = read_records(path)
        assert len(records) == 2 and {r["id"] for r in records}
