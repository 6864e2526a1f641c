"""The prefetch pipeline: ordered, bounded, failures surface in the consumer, and results never
depend on whether samples were prepared ahead."""

from __future__ import annotations

import threading
import time

import pytest

from resadapt_eval.pipeline import store as rec
from resadapt_eval.pipeline.prefetch import Prefetcher
from resadapt_eval.pipeline.runner import RunConfig, run


def test_results_come_in_order_from_another_thread():
    threads = set()

    def work(x):
        threads.add(threading.get_ident())
        time.sleep(0.001 * (x % 3))
        return x * x

    assert list(Prefetcher(work, range(20), depth=3)) == [x * x for x in range(20)]
    assert threading.get_ident() not in threads
    threads.clear()
    assert list(Prefetcher(work, range(5), depth=0)) == [0, 1, 4, 9, 16]
    assert threads == {threading.get_ident()}


def test_the_worker_stays_at_most_depth_ahead():
    started = []

    def work(x):
        started.append(x)
        return x

    it = iter(Prefetcher(work, range(100), depth=2))
    assert next(it) == 0
    time.sleep(0.3)  # give the worker every chance to run ahead
    # item 0 consumed; at most `depth` finished items queued, plus the one in hand
    assert len(started) <= 1 + 2 + 1
    it.close()


def test_an_error_is_raised_in_the_consumer_at_its_item():
    def work(x):
        if x == 3:
            raise ValueError("bad item 3")
        return x

    got = []
    with pytest.raises(ValueError, match="bad item 3"):
        for x in Prefetcher(work, range(10), depth=2):
            got.append(x)
    assert got == [0, 1, 2]


def test_leaving_early_stops_the_worker():
    seen = []
    with Prefetcher(lambda x: seen.append(x) or x, range(10_000), depth=2) as p:
        for x in p:
            if x == 5:
                break
    n = len(seen)
    time.sleep(0.2)
    assert len(seen) == n < 20
    assert not any(t.name == "resadapt-prefetch" for t in threading.enumerate())


def test_prefetch_never_changes_records_or_the_config_hash(tiny25, videomme_root, tmp_path):
    def records(depth):
        cfg = RunConfig(task="videomme", backbone=str(tiny25), strategy="uniform-scale", budget="0.5", frames=4,
                        data_root=str(videomme_root), out=str(tmp_path / f"p{depth}"), progress=False, prefetch=depth)
        result = run(cfg)
        rows = rec.read_records(result.directory / "samples.jsonl")
        manifest = rec.read_json(result.directory / "manifest.json")
        return {r["id"]: (r["prediction"], r["tokens"], r["plan"], r["error"]) for r in rows}, manifest["config_hash"]

    (r0, h0), (r2, h2) = records(0), records(2)
    assert r0 == r2 and h0 == h2
    assert sum(v[3] is None for v in r0.values()) >= 4  # real outputs, not only error records


def test_setup_runs_in_the_worker_thread_only():
    import torch

    before = torch.get_num_threads()
    seen = []
    items = list(Prefetcher(lambda x: (x, torch.get_num_threads()), range(3), depth=1,
                            setup=lambda: torch.set_num_threads(1)))
    seen = {n for _, n in items}
    assert seen == {1} and torch.get_num_threads() == before


def test_default_depth_prefetches_on_a_gpu_only():
    import torch

    from resadapt_eval.pipeline.runner import prefetch_depth

    class On:
        def __init__(self, device):
            self.device = torch.device(device)

    assert prefetch_depth(None, On("cpu")) == 0 and prefetch_depth(None, On("cuda")) == 2
    assert prefetch_depth(3, On("cpu")) == 3 and prefetch_depth(0, On("cuda")) == 0
