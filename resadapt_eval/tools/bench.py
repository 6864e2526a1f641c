"""Throughput and memory figures of the harness itself (`resadapt-eval bench`), each a measurement.

* `overlap`: a probe sweep, timed whole (backbone load, data, summaries included), split with the
  records' own per-stage timings into the model's compute (vision encode, token reduction, prefill,
  decode, and a learned planner's forward passes) and everything else (decoding, preprocessing,
  planning, scoring, writing, waiting). With prefetch, decoding and preprocessing of the next samples
  run beside the model; the same sweep without it is timed for contrast. The sweep also counts how
  often it loaded the backbone.
* `memory`: peak (and final) resident memory of one run over n and 10·n samples of a probe, each
  in a fresh process, with the prefetch pipeline on.
* `decode`: sampled-frame decoding against decord's own `get_batch` (`bench_decode.py`).

Nothing here is a timed test: the figures depend on the machine, so they are printed, with the
command that made them, and written as JSON for the record.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from resadapt_eval.pipeline import store as rec

MODEL_STAGES = ("encode", "reduce", "prefill", "decode")
PROBES = ("probe-videoqa", "probe-longvideo", "probe-grounding", "probe-math")


@dataclass
class OverlapBench:
    """One timed sweep: wall time and where it went, in seconds."""

    prefetch: int
    configurations: int
    records: int
    executed: int          # records whose model ran (the rest reused an identical input's output)
    backbone_loads: int
    wall_s: float
    model_s: float         # vision encode + reduction + prefill + decode, summed over executed records
    planner_s: float       # a learned planner's own time (records whose plan carries planner FLOPs)
    stages_s: dict[str, float] = field(default_factory=dict)   # every stage summed, for the curious

    @property
    def other_s(self) -> float:
        return max(0.0, self.wall_s - self.model_s - self.planner_s)

    @property
    def other_share(self) -> float:
        return self.other_s / self.wall_s if self.wall_s else 0.0

    def lines(self) -> list[str]:
        inside = self.model_s + self.planner_s
        return [f"prefetch {self.prefetch}: {self.configurations} configurations, {self.records} records "
                f"({self.executed} executed), backbone loaded {self.backbone_loads}x; wall {self.wall_s:.1f} s, "
                f"inside backbone+allocator {inside:.1f} s, other {self.other_s:.1f} s = "
                f"{100 * self.other_share:.1f}% of wall"]


def overlap_benchmark(tasks: tuple[str, ...] = PROBES, strategies: tuple[str, ...] =
                      ("vanilla", "uniform-scale", "uniform-frames", "random-drop"),
                      budgets: tuple[str, ...] = ("0.1", "0.25", "0.5", "1.0"), limit: int | None = 50,
                      prefetch: int = 2, backbone: str = "tiny-bundled", seed: int = 0,
                      out: Path | None = None, data_root: str | None = None) -> OverlapBench:
    """Time one sweep into a fresh results root and account its wall time by stage (`data_root`:
    one task's data somewhere else than its card says)."""
    from resadapt_eval.pipeline import runner

    loads = []
    real_load = runner.load_backbone

    def counting_load(*args: Any, **kwargs: Any):
        loads.append(args)
        return real_load(*args, **kwargs)

    root = Path(out) if out else Path(tempfile.mkdtemp(prefix="resadapt-bench-"))
    base = runner.RunConfig(task="", backbone=backbone, limit=limit, seed=seed, out=str(root), progress=False,
                            prefetch=prefetch, data_root=data_root)
    for task in tasks:  # generated data is built before the clock starts, as on any second use
        runner.load_card(task, data_root, {})
    runner.load_backbone = counting_load
    try:
        start = time.perf_counter()
        results = runner.sweep(base, list(tasks), list(strategies), list(budgets))
        wall = time.perf_counter() - start
    finally:
        runner.load_backbone = real_load
    stages: dict[str, float] = {}
    model = planner = 0.0
    n = executed = 0
    for result in results:
        for r in rec.load_records(result.directory / rec.SAMPLES):
            n += 1
            if not r.ok:
                continue
            t = r.timings
            if (r.plan or {}).get("planner_flops"):
                planner += t.get("plan", 0.0)
            if r.output_reused:
                continue
            executed += 1
            model += sum(t.get(k, 0.0) for k in MODEL_STAGES)
            for k, v in t.items():
                stages[k] = stages.get(k, 0.0) + v
    return OverlapBench(prefetch, len(results), n, executed, len(loads), wall, model, planner,
                        {k: round(v, 3) for k, v in stages.items()})


@dataclass
class MemoryBench:
    """Peak resident memory (MiB) of a fresh process running one configuration over n samples."""

    task: str
    peak_mib: dict[int, float]
    wall_s: dict[int, float]
    end_mib: dict[int, float] = field(default_factory=dict)   # resident at the end of the run

    @property
    def growth(self) -> float:
        sizes = sorted(self.peak_mib)
        return self.peak_mib[sizes[-1]] / self.peak_mib[sizes[0]] - 1.0

    def lines(self) -> list[str]:
        parts = ", ".join(f"{n} samples: peak {mib:.0f} MiB, {self.end_mib.get(n, float('nan')):.0f} MiB at the end "
                          f"({self.wall_s[n]:.0f} s)" for n, mib in self.peak_mib.items())
        return [f"peak memory, {self.task}: {parts}; growth {100 * self.growth:+.1f}%"]


def _memory_child(task: str, data_root: str, out: str, frames: int | None, budget: str) -> None:
    """Run in a fresh interpreter: one configuration, then print the process's own peak RSS."""
    from resadapt_eval.pipeline.runner import RunConfig, run

    start = time.perf_counter()
    run(RunConfig(task=task, data_root=data_root, out=out, frames=frames, budget=budget,
                  strategy="uniform-scale", progress=False, prefetch=2))  # the bounded pipeline included
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    rss_kib = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                   if line.startswith("VmRSS:"))
    print(json.dumps({"peak_mib": peak_kib / 1024, "end_mib": rss_kib / 1024, "wall_s": time.perf_counter() - start}))


def memory_benchmark(task: str = "probe-videoqa", sizes: tuple[int, ...] = (200, 2000), frames: int | None = None,
                     budget: str = "0.25", cache: Path = Path(".cache/bench")) -> MemoryBench:
    """Peak memory at each size, every size in its own process (one does not inherit another's peak)."""
    from resadapt_eval.probes import ensure_built

    peak, wall, end = {}, {}, {}
    for n in sizes:
        root = ensure_built(task, Path(cache) / f"{task}-n{n}", seed=0, n=n)
        with tempfile.TemporaryDirectory(prefix="resadapt-bench-mem-") as out:
            code = (f"from resadapt_eval.tools.bench import _memory_child; "
                    f"_memory_child({task!r}, {str(root)!r}, {out!r}, {frames!r}, {budget!r})")
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"memory run at {n} samples failed: {proc.stderr.strip().splitlines()[-1:]}")
            figures = json.loads(proc.stdout.strip().splitlines()[-1])
        peak[n], wall[n], end[n] = figures["peak_mib"], figures["wall_s"], figures["end_mib"]
    return MemoryBench(task, peak, wall, end)


def as_json(figure: Any) -> dict[str, Any]:
    """A figure with its derived values, for the JSON report."""
    data = asdict(figure)
    for name in ("other_s", "other_share", "growth"):
        if hasattr(figure, name):
            data[name] = getattr(figure, name)
    return data

