"""Work ahead of the model: the next samples are decoded, planned and preprocessed in a background
thread while the current one runs, so the backbone is not kept waiting on I/O and Python.

Bounded (`depth` items ahead), ordered, and honest about failures: an exception raised for an item
is raised again in the consumer when that item comes up, and closing the iterator stops the worker.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_DONE = object()


class Prefetcher(Generic[T, R]):
    """`fn(item)` for every item, computed up to `depth` items ahead in one daemon thread.

    Iterating yields the results in input order; `waited_s` accumulates how long the consumer
    was blocked on the worker (the pipeline's stall time). `depth=0` computes in the caller's
    thread, with no thread at all.
    """

    def __init__(self, fn: Callable[[T], R], items: Iterable[T], depth: int = 2,
                 setup: Callable[[], None] | None = None):
        """`setup` runs first in the worker thread (e.g. to give it its own torch thread count)."""
        self.fn, self.items, self.depth, self.setup = fn, items, depth, setup
        self.waited_s = 0.0
        self._stop = threading.Event()
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Prefetcher[T, R]":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> Iterator[R]:
        if self.depth <= 0:
            for item in self.items:
                yield self.fn(item)
            return
        self._thread = threading.Thread(target=self._work, name="resadapt-prefetch", daemon=True)
        self._thread.start()
        try:
            while True:
                start = time.perf_counter()
                kind, value = self._queue.get()
                self.waited_s += time.perf_counter() - start
                if kind is _DONE:
                    return
                if kind == "error":
                    raise value
                yield value
        finally:
            self.close()

    def _put(self, entry: tuple) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        try:
            if self.setup is not None:
                self.setup()
            for item in self.items:
                if self._stop.is_set():
                    return
                try:
                    result = self.fn(item)
                except BaseException as e:  # handed to the consumer, raised there
                    self._put(("error", e))
                    return
                if not self._put(("ok", result)):
                    return
        except BaseException as e:  # iterating `items` itself failed
            self._put(("error", e))
            return
        self._put((_DONE, None))

    def close(self) -> None:
        """Stop the worker (it finishes at most the item in hand) and wait for it."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            while True:  # drain, so a worker blocked on a full queue sees the stop
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
            self._thread.join()
            self._thread = None
