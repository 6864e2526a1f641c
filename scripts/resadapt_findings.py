"""Measure the bundled `resadapt` allocator on the probes' held-out test splits and write a dated
findings file (`make resadapt-findings`; about 20 minutes on 2 CPU cores).

Runs (tiny-bundled backbone, test splits, 200 samples each): `resadapt` (budget steered by
remapping its scale range) at 0.25 and 0.5, and `uniform-scale` at 0.25, 0.375, 0.5625 and 1.0, on
probe-longvideo and probe-which. Reports each run's score and achieved retention; `resadapt`
paired (exact McNemar, bootstrap CI) against its two neighbours among the `uniform-scale` runs by
tokens spent (the cheapest that spent at least as many, the dearest that spent fewer); the share of tokens on the chunk the question points to (probe-which: also the other
tile's); the allocator's training record; its planner FLOPs next to a Qwen2.5-VL-7B prefill.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TASKS = ("probe-longvideo", "probe-which")
RESADAPT_BUDGETS = ("0.25", "0.5")
UNIFORM_BUDGETS = ("0.25", "0.375", "0.5625", "1.0")


def main(argv: list[str] | None = None) -> int:
    from resadapt_eval.analysis.frontier import evidence_share, load_runs
    from resadapt_eval.analysis.paired import BOOTSTRAP_RESAMPLES, compare_runs, paired_bootstrap
    from resadapt_eval.pipeline.runner import RunConfig, sweep
    from resadapt_eval.pipeline.store import SAMPLES, read_records
    from resadapt_eval.strategies.resadapt import BUNDLED

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/resadapt-findings", help="results root of the runs")
    ap.add_argument("--doc", default=f"docs/findings/{dt.date.today().isoformat()}-resadapt.md")
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args(argv)

    base = RunConfig(task="", backbone="tiny-bundled", out=args.out, limit=args.limit, progress=False)
    sweep(base, list(TASKS), ["resadapt"], list(RESADAPT_BUDGETS))
    sweep(base, list(TASKS), ["uniform-scale"], list(UNIFORM_BUDGETS))
    runs = load_runs(args.out)
    lines = [f"# The bundled `resadapt` allocator on the test splits ({dt.date.today().isoformat()})", "",
             "Command: `make resadapt-findings` (`python scripts/resadapt_findings.py`)", "",
             f"Backbone tiny-bundled, "
             f"test splits, {int(runs['n'].max())} samples per run. `resadapt`'s budget steers its scale range "
             "(`steer=remap`); it spends what its policy chooses, so each run is placed at its retention.", ""]
    config = json.loads((BUNDLED / "allocator_config.json").read_text())
    trained = config.get("trained", {})
    lines += ["## The allocator", "",
              f"- trained by `resadapt-eval train-resadapt` on {', '.join(trained.get('tasks', []))}: "
              f"{trained.get('prompts')} prompts in {trained.get('seconds')} s, M = {trained.get('group')} allocations "
              f"x {trained.get('answers')} answers at temperature {trained.get('temperature')}, cost `{trained.get('cost')}` "
              f"(pivot centre {trained.get('pivot_center', float('nan')):.4f}), lambda_gas {trained.get('cost_penalty')}"
              + "".join(f", {v} on {t}" for t, v in trained.get("task_cost_penalties", {}).items())
              + "".join(f", task weight {v} on {t}" for t, v in trained.get("task_weights", {}).items())
              + f", {trained.get('train_samples')} training videos per task, seed {trained.get('seed')}"
              + (f"; continued from the allocator in `{trained['init_from']}` (weights sha256 "
                 f"{trained.get('init_from_sha256', '')[:12]}; stage 1 of `make bundled-allocator`)"
                 if trained.get("init_from") else ""),
              "- cost level of its own action (mean retention on training prompts): "
              + ", ".join(f"{k} {v:.3f}" for k, v in (trained.get("cost_levels") or {}).items()), "",
              "Its training, from `history.jsonl` (means over windows of 100 prompts of each task; evidence ratio = "
              "the mean action on the evidence chunk's frames over the mean action on all frames, 1.00 = no "
              "preference):", "", "| task | prompts | reward | retention | mean scale | evidence ratio |",
              "|---|---|---:|---:|---:|---:|"]
    history = [json.loads(line) for line in (BUNDLED / "history.jsonl").read_text().splitlines() if line.strip()]
    for task in sorted({h["task"] for h in history}):
        rows = [h for h in history if h["task"] == task]
        for i in range(0, len(rows), 100):
            w = rows[i:i + 100]
            mean = lambda key: sum(h.get(key, float("nan")) for h in w) / len(w)  # noqa: E731
            lines.append(f"| {task} | {i + 1}-{i + len(w)} | {mean('reward'):.3f} | {mean('cost'):.2f} | "
                         f"{mean('mean_scale'):.2f} | {mean('evidence_ratio'):.3f} |")
    lines.append("")
    for task in TASKS:
        rows = runs[runs["task"] == task].sort_values(["strategy", "retention"])
        lines += [f"## {task}", "", "| strategy | budget | retention | score | 95% CI | target-chunk share |"
                  + (" other-tile share | target - other tile, per sample: mean [95% CI], p | target more / equal / "
                     "less |" if task == "probe-which" else ""),
                  "|---|---:|---:|---:|---|---:|" + ("---:|---|---|" if task == "probe-which" else "")]
        for run in rows.itertuples(index=False):
            records = [r for r in read_records(Path(run.directory) / SAMPLES) if not r.get("error")]
            target = np.array([evidence_share(r["plan"], r["meta"]["evidence"]["frames"]) for r in records])
            cells = [run.strategy, run.budget, f"{run.retention:.3f}", f"{run.score:.1f}",
                     f"[{run.ci_low:.1f}, {run.ci_high:.1f}]", f"{target.mean():.3f}"]
            if task == "probe-which":
                other = np.array([evidence_share(r["plan"], [2 * r["meta"]["evidence"]["distractor_chunk"],
                                                             2 * r["meta"]["evidence"]["distractor_chunk"] + 1])
                                  for r in records])
                diff = target - other
                pvalue, low, high = paired_bootstrap(diff, seed=0)
                cells += [f"{other.mean():.3f}", f"{diff.mean():+.3f} [{low:+.3f}, {high:+.3f}], p "
                          + (f"< {1 / BOOTSTRAP_RESAMPLES:.0e}" if pvalue == 0 else f"{pvalue:.3g}"),
                          f"{int((diff > 1e-9).sum())} / {int((abs(diff) <= 1e-9).sum())} / {int((diff < -1e-9).sum())}"]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "Paired on the same samples: each `resadapt` run (B) against its two neighbours among the "
                  "`uniform-scale` runs (A), by tokens spent (mean retention): the cheapest one that spent at least "
                  "as many, and the dearest one that spent fewer. `uniform-scale` gives every chunk one square grid, "
                  "so it cannot spend the tokens in between.", "",
                  "| resadapt budget | its retention | uniform-scale | budget | its retention | n | A | B | B - A | "
                  "95% CI | p |", "|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---:|"]
        uni = rows[rows["strategy"] == "uniform-scale"].drop_duplicates("retention")
        for run in rows[rows["strategy"] == "resadapt"].itertuples(index=False):
            richer = uni[uni["retention"] >= run.retention - 1e-9].sort_values("retention")
            poorer = uni[uni["retention"] < run.retention - 1e-9].sort_values("retention")
            for label, pick in (("spends at least as much", richer.head(1)), ("spends less", poorer.tail(1))):
                if pick.empty:
                    lines.append(f"| {run.budget} | {run.retention:.3f} | {label}: none | | | | | | | | |")
                    continue
                ref = pick.iloc[0]
                p = compare_runs(ref["directory"], run.directory)
                lines.append(f"| {run.budget} | {run.retention:.3f} | {label} | {ref['budget']} | "
                             f"{ref['retention']:.3f} | {p.n} | {p.score_a:.1f} | {p.score_b:.1f} | {p.diff:+.1f} | "
                             f"[{p.ci_low:+.1f}, {p.ci_high:+.1f}] | {p.p_value:.3g} |")
        lines.append("")
    planner = subprocess.run([sys.executable, "-m", "resadapt_eval.analysis.flop_check", "--planner"],
                             capture_output=True, text=True, check=True).stdout
    lines += ["## Its cost next to a 7B backbone", "",
              "`python -m resadapt_eval.analysis.flop_check --planner`: the planner (its own encoder at 112 px per "
              "frame plus the head) and one vanilla prefill of Qwen2.5-VL-7B on 640x360 frames (602,112 pixels per "
              "frame at most), all counted by FlopCounterMode on the meta device.", "", planner]
    Path(args.doc).write_text("\n".join(lines))
    print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
