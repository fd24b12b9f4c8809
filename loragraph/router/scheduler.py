"""Batch concurrent runs by stage: documents that arrive together walk the graph together.

``Scheduler(router).submit(text)`` returns a future. One worker thread takes the first
waiting document, gathers whatever else arrives within ``window_ms`` (up to
``max_batch``), and runs them with ``router.run_many`` so every stage of the pipeline
gets one batched call for all of them: the adapter is activated once per stage per batch,
not once per document. The queue is bounded: ``submit`` raises ``QueueFull`` when it is
full, which the API answers with 503 and Retry-After.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from loragraph.errors import RuntimeFailure
from loragraph.router.result import RunResult

__all__ = ["QueueFull", "Scheduler"]


class QueueFull(RuntimeFailure):
    """The scheduler's queue is full; try again later."""


@dataclass
class _Item:
    text: str
    run_id: str | None
    deadline: float | None
    future: Future[RunResult] = field(default_factory=Future)


class Scheduler:
    """A bounded queue in front of a router, batching what waits together."""

    def __init__(self, router: Any, *, max_batch: int = 8, window_ms: float = 5.0, max_queue: int = 64) -> None:
        if max_batch < 1 or max_queue < 1:
            raise ValueError("`max_batch` and `max_queue` must be at least 1")
        self.router = router
        self.max_batch = max_batch
        self.window = window_ms / 1000
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=max_queue)
        self._busy = 0
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=f"loragraph-scheduler-{router.name}", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Documents waiting or running."""
        return self._queue.qsize() + self._busy

    def submit(self, text: str, *, run_id: str | None = None, deadline: float | None = None) -> Future[RunResult]:
        if self._closed:
            raise RuntimeFailure("the scheduler is closed")
        item = _Item(text, run_id, deadline)
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            raise QueueFull(f"the queue of pipeline `{self.router.name}` is full ({self._queue.maxsize} waiting)") from None
        return item.future

    def run(self, text: str, *, run_id: str | None = None, deadline: float | None = None) -> RunResult:
        """Submit and wait."""
        return self.submit(text, run_id=run_id, deadline=deadline).result()

    def close(self, timeout: float = 5.0) -> None:
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout)

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            until = time.monotonic() + self.window
            while len(batch) < self.max_batch:
                remaining = until - time.monotonic()
                try:
                    item = self._queue.get(timeout=max(remaining, 0)) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                batch.append(item)
            self._busy = len(batch)
            try:
                results = self.router.run_many(
                    [i.text for i in batch],
                    run_ids=[i.run_id for i in batch],
                    deadlines=[i.deadline for i in batch],
                )
                for item, result in zip(batch, results, strict=True):
                    item.future.set_result(result)
            except Exception as err:  # never lose a caller: every future gets an answer
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(err)
            finally:
                self._busy = 0
