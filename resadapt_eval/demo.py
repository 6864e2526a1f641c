"""`make demo`: the embedded reference sweep, then the frontier, offline on a CPU.

The four probe tasks x every registered strategy x budgets {0.1, 0.25, 0.5, 1.0} on the bundled
reference backbone (probe data is generated on first use), then figures and tables under
`<out>/frontier/`. A new strategy module joins the demo by being registered: nothing here changes.
"""

from __future__ import annotations

import os
import sys
import time

import click

from .cli import OneLineCommand

TASKS = ("probe-videoqa", "probe-longvideo", "probe-grounding", "probe-math")
BUDGETS = ("0.1", "0.25", "0.5", "1.0")


@click.command(cls=OneLineCommand)
@click.option("--out", default="results", show_default=True, help="Results root of the sweep and the frontier.")
@click.option("--backbone", default="reference", show_default=True)
@click.option("--tasks", default=",".join(TASKS), show_default=True)
@click.option("--strategies", default=None, help="Comma-separated (default: every registered strategy).")
@click.option("--budgets", default=",".join(BUDGETS), show_default=True)
@click.option("--limit", type=int, default=None, help="Only the first N samples of each task (a quick look).")
def demo(out: str, backbone: str, tasks: str, strategies: str | None, budgets: str, limit: int | None) -> None:
    """Run the reference sweep and draw its accuracy-vs-tokens frontier."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from . import frontier
    from .cli import _report
    from .runner import RunConfig, sweep
    from .strategies import STRATEGIES

    names = strategies.split(",") if strategies else sorted(STRATEGIES.names())
    start = time.perf_counter()
    results = sweep(RunConfig(task="", backbone=backbone, out=out, limit=limit, progress=False),
                    tasks.split(","), names, budgets.split(","), on_result=_report)
    sweep_s = time.perf_counter() - start
    built = frontier.build(out, f"{out}/frontier", tasks=tasks.split(","))
    table = built["strategies"][["task", "strategy", "best_score", "auc_logcost", "cost_at_95"]]
    click.echo(table.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    click.echo(f"{len(results)} configurations in {sweep_s:.1f} s, frontier in "
               f"{time.perf_counter() - start - sweep_s:.1f} s")
    click.echo(f"figures: {built['grid'][0]} (and one per task); tables: {', '.join(map(str, built['tables']))}")


if __name__ == "__main__":
    sys.exit(demo())
