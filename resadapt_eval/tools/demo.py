"""The embedded reference sweep, then its frontier, offline on a CPU (`resadapt-eval demo`, `make demo`).

The four probe tasks x every registered strategy x budgets {0.1, 0.25, 0.5, 1.0} on the bundled
reference backbone, then figures and tables under `<out>/frontier/` and the browsable report
(`resadapt-eval view`) under `<out>/view/`. A new strategy module joins
the demo by being registered: nothing here changes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

TASKS = ("probe-videoqa", "probe-longvideo", "probe-grounding", "probe-math")
BUDGETS = ("0.1", "0.25", "0.5", "1.0")


@dataclass
class DemoResult:
    results: list[Any]
    frontier: dict[str, Any]
    sweep_s: float
    frontier_s: float
    site: Any = None


def run_demo(out: str = "results", backbone: str = "reference", tasks: list[str] | None = None,
             strategies: list[str] | None = None, budgets: list[str] | None = None, limit: int | None = None,
             on_result: Callable[[Any], None] | None = None) -> DemoResult:
    """Sweep the probes with every strategy, then build the frontier of everything under `out`."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from resadapt_eval.analysis import frontier
    from resadapt_eval.analysis.view import build_site
    from resadapt_eval.pipeline.runner import RunConfig, sweep
    from resadapt_eval.strategies import STRATEGIES

    tasks = list(tasks or TASKS)
    names = list(strategies or sorted(STRATEGIES.names()))
    start = time.perf_counter()
    results = sweep(RunConfig(task="", backbone=backbone, out=out, limit=limit, progress=False),
                    tasks, names, list(budgets or BUDGETS), on_result=on_result)
    sweep_s = time.perf_counter() - start
    built = frontier.build(out, f"{out}/frontier", tasks=tasks)
    frontier_s = time.perf_counter() - start - sweep_s
    site = build_site(out, f"{out}/view", tasks=tasks)
    return DemoResult(results, built, sweep_s, frontier_s, site)
