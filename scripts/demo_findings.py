"""Write the demo's findings on the probes' held-out test split to a dated docs/findings file
(`make demo-findings`, after `make demo`).

Reads the demo sweep under `--results` (default `results`, what `make demo` writes) and the frontier
tables it built there. Adds the runs the issues' headline claims need and the demo lacks
(probe-videoqa at exactly 36 visual tokens, uniform-scale against both allocators). Writes:

- every strategy's score at 0.1 and 0.25 on each probe, with its cost in LLM visual tokens and in
  FLOPs (vision encode + planner + LLM prefill and decode);
- the headline comparisons, each paired on the same samples (bootstrap 95% CI, exact McNemar p);
- the per-strategy table (area under the curve over log cost, cost to reach 95%/99% of vanilla);
- the frontier figure with both cost axes, copied next to the file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TASKS = ("probe-videoqa", "probe-longvideo", "probe-grounding", "probe-math")
TABLE_BUDGETS = ("0.1", "0.25")
# (task, strategy B, budget B, strategy A, budget A): B against A on the same samples
CLAIMS = (
    ("probe-videoqa", "resadapt-budget", "tokens=36", "uniform-scale", "tokens=36"),
    ("probe-videoqa", "resadapt", "tokens=36", "uniform-scale", "tokens=36"),
    ("probe-longvideo", "resadapt-budget", "0.25", "uniform-scale", "0.25"),
    ("probe-longvideo", "resadapt", "0.25", "uniform-scale", "0.25"),
    ("probe-videoqa", "visionzip", "0.1", "uniform-scale", "0.1"),
)


def _budget_key(text: str) -> str:
    """A budget as summaries spell it: '0.25' and '1.0' -> '0.25', '1'; 'tokens=36' -> 't36'."""
    if text.startswith("tokens="):
        return "t" + text.split("=", 1)[1]
    try:
        return f"{float(text):g}"
    except ValueError:
        return text


def main(argv: list[str] | None = None) -> int:
    import pandas as pd

    from resadapt_eval.analysis.frontier import load_runs
    from resadapt_eval.analysis.paired import compare_runs
    from resadapt_eval.pipeline.runner import RunConfig, sweep

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results", help="results root of the demo sweep (make demo)")
    ap.add_argument("--date", default=dt.date.today().isoformat())
    ap.add_argument("--docs", default="docs/findings")
    args = ap.parse_args(argv)
    root, stem = Path(args.results), f"{args.date}-demo"

    extra = sorted({(t, s, b) for t, sb, bb, sa, ba in CLAIMS for s, b in ((sb, bb), (sa, ba)) if b.startswith("tokens")})
    for task, strategy, budget in extra:  # idempotent: a finished run is not redone
        sweep(RunConfig(task="", backbone="tiny-bundled", out=str(root), progress=False), [task], [strategy], [budget])
    runs = load_runs(root, TASKS)
    runs["key"] = runs["budget"].astype(str).map(_budget_key)
    if runs.empty:
        raise SystemExit(f"no finished runs under {root}: run `make demo` first")

    lines = [f"# The demo on the probes' test split ({args.date})", "",
             "Command: `make demo` (`resadapt-eval demo`: the four probes' held-out test split x every registered "
             "strategy x budgets 0.1, 0.25, 0.5, 1.0, 200 samples each, bundled backbone tiny-bundled, 2 CPU cores), "
             "then `make demo-findings` (`python scripts/demo_findings.py`), which adds the 36-token runs.", "",
             f"![accuracy against LLM visual tokens and against FLOPs, four probes]({stem}-frontier.png)", "",
             "Cost columns: `tokens` is the mean number of visual tokens that reach the LLM (for staged methods "
             "inside the LLM, FastV and PyramidDrop, the mean over layers); `GFLOPs` is the whole forward's count per "
             "sample: the vision encode of every patch the strategy decoded, the planner (resadapt's own encoder and "
             "head, resadapt-budget's thumbnails), the LLM prefill and decoding (docs/flops.md; checked against "
             "torch's FlopCounterMode).", ""]

    lines += ["## Every strategy at 0.1 and 0.25", ""]
    for task in TASKS:
        part = runs[(runs["task"] == task) & runs["key"].isin(TABLE_BUDGETS + ("1",))]
        if part.empty:
            continue
        metric = part["main_metric"].iloc[0]
        vanilla = part[(part["strategy"] == "vanilla") & (part["key"] == "1")]
        head = f"### {task} ({metric}"
        if not vanilla.empty:
            v = vanilla.iloc[0]
            head += f"; vanilla {v['score']:.1f} at {v['tokens']:.0f} tokens, {v['flops'] / 1e9:.2f} GFLOPs"
        lines += [head + ")", "", "| strategy | " + " | ".join(f"{b}: score | tokens | GFLOPs" for b in TABLE_BUDGETS) + " |",
                  "|---|" + "---:|---:|---:|" * len(TABLE_BUDGETS)]
        for strategy in sorted(set(part["strategy"]) - {"vanilla"}):
            cells = [strategy]
            for b in TABLE_BUDGETS:
                row = part[(part["strategy"] == strategy) & (part["key"] == b)]
                if row.empty:
                    cells += ["", "", ""]
                    continue
                r = row.iloc[0]
                cells += [f"{r['score']:.1f} [{r['ci_low']:.1f}, {r['ci_high']:.1f}]", f"{r['tokens']:.1f}",
                          f"{r['flops'] / 1e9:.3f}"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")

    lines += ["## The headline comparisons, paired on the same samples", "",
              "B against A on the same 200 samples: difference B - A in points, 95% paired-bootstrap CI, exact "
              "McNemar p (scores are 0/1).", "",
              "| task | B | A | tokens B / A | n | A | B | B - A | 95% CI | p |", "|---|---|---|---|---:|---:|---:|---:|---|---:|"]
    for task, sb, bb, sa, ba in CLAIMS:
        pick = lambda s, b: runs[(runs["task"] == task) & (runs["strategy"] == s) & (runs["key"] == _budget_key(b))]  # noqa: E731
        rb, ra = pick(sb, bb), pick(sa, ba)
        if rb.empty or ra.empty:
            lines.append(f"| {task} | {sb} @ {bb} | {sa} @ {ba} | (run missing) | | | | | | |")
            continue
        rb, ra = rb.iloc[0], ra.iloc[0]
        p = compare_runs(ra["directory"], rb["directory"])
        lines.append(f"| {task} | {sb} @ {bb} | {sa} @ {ba} | {rb['tokens']:.1f} / {ra['tokens']:.1f} | {p.n} | "
                     f"{p.score_a:.1f} | {p.score_b:.1f} | {p.diff:+.1f} | [{p.ci_low:+.1f}, {p.ci_high:+.1f}] | "
                     f"{p.p_value:.3g} |")
    lines.append("")

    frontier = root / "frontier"
    strategies = pd.read_csv(frontier / "strategies.csv")
    strategies = strategies[strategies["task"].isin(TASKS)]
    lines += ["## Per strategy over the sweep", "",
              "Area under the score curve over log tokens (higher is better) and the fewest tokens at which a run "
              "reached 95% / 99% of vanilla's score (empty: never).", "",
              strategies.drop(columns=["backbone"]).to_markdown(index=False, floatfmt=".1f"), ""]
    paired = frontier / "paired.csv"
    if paired.exists():
        table = pd.read_csv(paired)
        table = table[table["task"].isin(TASKS) & table["significant"].astype(str).str.lower().isin(["true", "yes"])]
        lines += ["## Runs that differ from uniform-scale at matched retention", "",
                  "From `results/frontier/paired.csv`: every run whose paired difference against uniform-scale at the "
                  "same budget (retention within 1%) has a 95% CI that excludes 0.", "",
                  table[["task", "strategy", "budget", "retention", "score", "reference_score", "diff", "ci_low",
                         "ci_high", "p_value"]].to_markdown(index=False, floatfmt=".3g"), ""]
    docs = Path(args.docs)
    figure = frontier / "frontier-costs.png"
    if figure.exists():
        shutil.copyfile(figure, docs / f"{stem}-frontier.png")
    doc = docs / f"{stem}.md"
    doc.write_text("\n".join(lines))
    print(f"wrote {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
