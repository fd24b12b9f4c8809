"""Worker threads that call ``router.run`` off the event loop, fed by two bounded queues.

Interactive runs (POST .../runs, the client waits) go to a queue of ``queue_size``; batch
job runs to a backlog of ``job_backlog``. Workers always take interactive runs first. A
full queue raises ``QueueFullError`` (503 + Retry-After) before anything is stored.

Batching: a worker takes the next run and every other run of the same pipeline waiting
at that moment (up to ``max_batch``) and calls ``router.run_many(texts, run_ids=...,
deadlines=...)`` once, so each stage's adapter runs one batched forward pass for all of
them (routers without that signature get one ``run`` call per document).

Deadlines: an interactive run's deadline is set when it is accepted (the client waits);
a job run's when a worker starts it. A run whose deadline passed while queued is failed
with reason `timeout` without calling the router; the router gets the deadline and stops
between steps. The store's conditional updates make the first finisher win.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from loragraph.api.errors import QueueFullError, RunTimedOutError, scrub
from loragraph.api.metrics import ApiMetrics
from loragraph.api.store import TIMEOUT, Store
from loragraph.errors import RunTimeout, UserError
from loragraph.router.result import RunResult

__all__ = ["RouterLike", "RunQueue", "WorkItem"]

log = logging.getLogger("loragraph.api")


@runtime_checkable
class RouterLike(Protocol):
    """What the API needs of a router: ``loragraph.router.Router`` and ``EchoRouter`` both fit."""

    name: str
    spec: Any

    def run(self, text: str, *, run_id: str | None = None, deadline: float | None = None) -> RunResult: ...

    def refresh(self) -> Any: ...

    def adapters(self) -> list[Any]: ...


@dataclass
class WorkItem:
    """One accepted run waiting for a worker."""

    run_id: str
    pipeline: str
    text: str
    interactive: bool
    deadline: float | None = None
    future: Future[RunResult] = field(default_factory=Future)


def _accepts_deadline(router: RouterLike) -> bool:
    try:
        params = inspect.signature(router.run).parameters
    except (TypeError, ValueError):
        return False
    return "deadline" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _accepts_batches(router: RouterLike) -> bool:
    run_many = getattr(router, "run_many", None)
    try:
        params = inspect.signature(run_many).parameters if run_many is not None else {}
    except (TypeError, ValueError):
        return False
    return {"run_ids", "deadlines"} <= set(params)


class RunQueue:
    """Bounded queues and ``workers`` threads running pipelines."""

    def __init__(
        self,
        store: Store,
        routers: Mapping[str, RouterLike],
        metrics: ApiMetrics,
        *,
        workers: int,
        queue_size: int,
        job_backlog: int,
        run_timeout_s: float,
        retry_after_s: int,
        max_batch: int = 8,
    ) -> None:
        self.store = store
        self.routers = routers
        self.metrics = metrics
        self.queue_size = queue_size
        self.job_backlog = job_backlog
        self.run_timeout_s = run_timeout_s
        self.retry_after_s = retry_after_s
        self._workers = workers
        self._interactive: deque[WorkItem] = deque()
        self._jobs: deque[WorkItem] = deque()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._running = 0
        self._reserved = {True: 0, False: 0}
        self.max_batch = max_batch
        self._deadline_ok = {name: _accepts_deadline(r) for name, r in routers.items()}
        self._batching = {name: max_batch > 1 and _accepts_batches(r) for name, r in routers.items()}

    # ------------------------------------------------------------------ state

    @property
    def depth(self) -> int:
        """Runs waiting for a worker."""
        return len(self._interactive) + len(self._jobs)

    @property
    def running(self) -> int:
        """Runs being processed now."""
        return self._running

    @property
    def started(self) -> bool:
        return bool(self._threads) and not self._stopping

    def start(self) -> None:
        """Start the worker threads."""
        with self._cond:
            if self._threads:
                return
            self._stopping = False
            for i in range(self._workers):
                thread = threading.Thread(target=self._work, name=f"loragraph-run-{i}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def stop(self, grace_s: float) -> None:
        """Stop taking runs; fail the queued ones (`interrupted by shutdown`); wait for running ones."""
        with self._cond:
            self._stopping = True
            pending = list(self._interactive) + list(self._jobs)
            self._interactive.clear()
            self._jobs.clear()
            self._cond.notify_all()
        for item in pending:
            if self.store.fail(item.run_id, "interrupted by shutdown"):
                self.metrics.observe_failure(item.pipeline, "interrupted")
            item.future.set_exception(QueueFullError("server is shutting down", retry_after=self.retry_after_s))
        end = time.monotonic() + grace_s
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))
        self._threads.clear()

    # ------------------------------------------------------------------ submit

    def reserve(self, count: int, *, interactive: bool) -> None:
        """Hold room for ``count`` runs, or raise ``QueueFullError`` (nothing is stored yet then).

        Follow with ``submit(items)`` (uses the room) or ``release(count, ...)``.
        """
        with self._cond:
            if self._stopping:
                raise QueueFullError("server is shutting down", retry_after=self.retry_after_s)
            waiting = len(self._interactive) if interactive else len(self._jobs)
            limit = self.queue_size if interactive else self.job_backlog
            if waiting + self._reserved[interactive] + count > limit:
                what = "run queue" if interactive else "job backlog"
                raise QueueFullError(
                    f"{what} is full ({limit} waiting at most, {count} more asked); retry later",
                    retry_after=self.retry_after_s,
                )
            self._reserved[interactive] += count

    def release(self, count: int, *, interactive: bool) -> None:
        """Give back room held by ``reserve`` that will not be used."""
        with self._cond:
            self._reserved[interactive] = max(0, self._reserved[interactive] - count)

    def submit(self, items: list[WorkItem]) -> None:
        """Queue stored runs (all interactive or all job runs) into room held by ``reserve``."""
        if not items:
            return
        interactive = items[0].interactive
        with self._cond:
            self._reserved[interactive] = max(0, self._reserved[interactive] - len(items))
            if self._stopping:
                for item in items:
                    self.store.fail(item.run_id, "interrupted by shutdown")
                    item.future.set_exception(QueueFullError("server is shutting down", retry_after=self.retry_after_s))
                return
            (self._interactive if interactive else self._jobs).extend(items)
            self._cond.notify(len(items))

    # ------------------------------------------------------------------ work

    def _next(self) -> list[WorkItem] | None:
        """The next run, plus up to ``max_batch - 1`` others of the same pipeline waiting now."""
        with self._cond:
            while not self._stopping and not self._interactive and not self._jobs:
                self._cond.wait()
            if self._stopping:
                return None
            first = self._interactive.popleft() if self._interactive else self._jobs.popleft()
            batch = [first]
            if self._batching.get(first.pipeline):
                for source in (self._interactive, self._jobs):
                    for item in [i for i in source if i.pipeline == first.pipeline]:
                        if len(batch) >= self.max_batch:
                            break
                        source.remove(item)
                        batch.append(item)
            self._running += len(batch)
            return batch

    def _work(self) -> None:
        while (batch := self._next()) is not None:
            try:
                self._process(batch)
            except BaseException as exc:  # never let a worker die silently
                log.exception("worker failed on runs %s", [i.run_id for i in batch])
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
            finally:
                with self._cond:
                    self._running -= len(batch)

    def _timed_out(self, item: WorkItem) -> RunTimedOutError:
        return RunTimedOutError(
            f"run `{item.run_id}` passed its deadline of {self.run_timeout_s:g} s; stored as failed (timeout)",
            run_id=item.run_id,
        )

    def _expire(self, item: WorkItem) -> None:
        if self.store.fail(item.run_id, TIMEOUT):
            self.metrics.observe_failure(item.pipeline, "timeout")
        item.future.set_exception(self._timed_out(item))

    def _start(self, item: WorkItem) -> float | None:
        """Mark one run running; its deadline, or None when it must not run."""
        if not item.future.set_running_or_notify_cancel():
            self.store.fail(item.run_id, "cancelled")
            return None
        deadline = item.deadline if item.deadline is not None else time.monotonic() + self.run_timeout_s
        if time.monotonic() >= deadline:  # expired while queued: never reaches the router
            self._expire(item)
            return None
        if not self.store.mark_running(item.run_id):  # failed meanwhile (client-side timeout)
            item.future.set_exception(self._timed_out(item))
            return None
        return deadline

    def _process(self, batch: list[WorkItem]) -> None:
        live: list[tuple[WorkItem, float]] = []
        for item in batch:
            deadline = self._start(item)
            if deadline is not None:
                live.append((item, deadline))
        if not live:
            return
        pipeline = live[0][0].pipeline
        router = self.routers[pipeline]
        self.metrics.in_progress.inc(len(live))
        try:
            if len(live) > 1:
                results = router.run_many(  # type: ignore[attr-defined]
                    [i.text for i, _ in live], run_ids=[i.run_id for i, _ in live], deadlines=[d for _, d in live]
                )
            else:
                item, deadline = live[0]
                kwargs: dict[str, Any] = {"run_id": item.run_id}
                if self._deadline_ok.get(pipeline):
                    kwargs["deadline"] = deadline
                results = [router.run(item.text, **kwargs)]
        except Exception as exc:
            for item, deadline in live:
                self._failed(item, deadline, exc)
            return
        finally:
            self.metrics.in_progress.dec(len(live))
        for (item, deadline), result in zip(live, results, strict=True):
            self._finished(item, deadline, result)

    def _failed(self, item: WorkItem, deadline: float, exc: Exception) -> None:
        timed_out = time.monotonic() >= deadline or isinstance(exc, RunTimeout)
        if timed_out:
            reason, kind = TIMEOUT, "timeout"
        elif isinstance(exc, UserError):
            reason, kind = f"input: {scrub(str(exc))}", "input"
        else:
            reason, kind = f"error: {scrub(str(exc)) or type(exc).__name__}", "error"
            log.error("run %s of `%s` failed", item.run_id, item.pipeline, exc_info=exc)
        if self.store.fail(item.run_id, reason):
            self.metrics.observe_failure(item.pipeline, kind)
        item.future.set_exception(self._timed_out(item) if timed_out else exc)

    def _finished(self, item: WorkItem, deadline: float, result: RunResult) -> None:
        if result.status == "error" and (result.error_kind == "timeout" or time.monotonic() >= deadline):
            # the router reports a deadline passed between steps as an `error` result
            self._expire(item)
            return
        if result.id != item.run_id or result.pipeline != item.pipeline:
            result = result.model_copy(update={"id": item.run_id, "pipeline": item.pipeline})
        if self.store.finish(item.run_id, result):
            self.metrics.observe_result(result)
        item.future.set_result(result)
