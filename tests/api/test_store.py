"""The SQLite store, the worker queue and the export, without HTTP."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from loragraph.api import Store, export_feedback
from loragraph.api.errors import QueueFullError, RunTimedOutError, scrub
from loragraph.api.metrics import ApiMetrics
from loragraph.api.models import FeedbackRequest
from loragraph.api.runner import RunQueue, WorkItem
from loragraph.errors import InputError, NotFoundError
from loragraph.testing import EchoRouter


def test_wal_and_conditional_transitions(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    try:
        assert sqlite3.connect(tmp_path / "s.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        a, b, c = store.create_runs("echo", [("one", {}), ("two", {"k": 1}), ("three", {})])
        assert store.get_run(a).status == "queued"
        assert store.mark_running(a) and not store.mark_running(a)
        result = EchoRouter("echo").run("one", run_id=a)
        assert store.finish(a, result)
        assert not store.fail(a, "timeout"), "a finished run cannot fail afterwards"
        assert store.fail(b, "timeout")
        assert not store.finish(b, result.model_copy(update={"id": b})), "a failed run cannot finish afterwards"
        assert not store.mark_running(b)
        assert store.recover() == 1  # only `c` was still open
        assert store.get_run(c).status == "failed" and store.get_run(c).reason == "interrupted by restart"
        assert store.count_runs() == {"ok": 1, "failed": 2}
        with pytest.raises(NotFoundError):
            store.get_run("nope")
    finally:
        store.close()


def test_concurrent_writers_never_lose_or_duplicate(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    created: list[str] = []
    lock = threading.Lock()

    def writer(n: int) -> None:
        for i in range(40):
            [rid] = store.create_runs("echo", [(f"{n}-{i}", {})])
            assert store.mark_running(rid)
            assert store.finish(rid, EchoRouter("echo").run("refund", run_id=rid))
            assert store.get_run(rid).status == "ok"
            with lock:
                created.append(rid)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        ids = store.run_ids()
        assert len(ids) == len(set(ids)) == 320 and set(ids) == set(created)
        assert store.count_runs() == {"ok": 320}
    finally:
        store.close()


def test_feedback_rules_and_export(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    router = EchoRouter("echo")
    try:
        [rid] = store.create_runs("echo", [("I want a refund", {})])
        with pytest.raises(InputError, match="no result"):
            store.add_feedback(rid, FeedbackRequest(stage="summary", rating=1))
        store.finish(rid, router.run("I want a refund", run_id=rid))
        store.add_feedback(rid, FeedbackRequest(stage="summary", rating=1, corrected="first try"))
        store.add_feedback(rid, FeedbackRequest(stage="summary", rating=-1, corrected="Refund wanted."))  # latest wins
        store.add_feedback(rid, FeedbackRequest(stage="intent", rating=-1, corrected="cancel_order"))
        store.add_feedback(rid, FeedbackRequest(stage="reply", rating=0))  # neutral, no correction: nothing to learn
        store.add_feedback(rid, FeedbackRequest(stage="entities", rating=1))  # tag output: no text to train on

        summary = export_feedback(store.iter_feedback("summary"), tmp_path / "s")
        assert (summary.sft, summary.pairs, summary.skipped) == (1, 1, 0)
        row = json.loads((tmp_path / "s" / "sft.jsonl").read_text())
        assert row["target"] == "Refund wanted." and set(row["input"]) == {"text", "input_guardrail", "intent", "entities"}
        pair = json.loads((tmp_path / "s" / "pairs.jsonl").read_text())
        assert pair["chosen"] == "Refund wanted." and pair["rejected"].startswith("[summary] I want a refund")

        intent = export_feedback(store.iter_feedback("intent"), tmp_path / "i")
        assert (intent.sft, intent.pairs) == (1, 1)
        pair = json.loads((tmp_path / "i" / "pairs.jsonl").read_text())
        assert pair == {"input": {"text": "I want a refund", "input_guardrail": pair["input"]["input_guardrail"]},
                        "chosen": "cancel_order", "rejected": "refund_request"}
        assert export_feedback(store.iter_feedback("reply"), tmp_path / "r").skipped == 1
        assert export_feedback(store.iter_feedback("entities"), tmp_path / "e").skipped == 1
    finally:
        store.close()


def _queue(store: Store, router: EchoRouter, **kw: float) -> RunQueue:
    return RunQueue(store, {router.name: router}, ApiMetrics(), workers=1, queue_size=int(kw.get("queue_size", 4)),
                    job_backlog=4, run_timeout_s=kw.get("timeout", 5.0), retry_after_s=3,
                    max_batch=int(kw.get("max_batch", 1)))


def test_queue_fails_a_run_whose_deadline_passed_while_queued(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    router = EchoRouter("echo", delay_s=0.5)
    queue = _queue(store, router, timeout=0.2)
    queue.start()
    try:
        ids = store.create_runs("echo", [("a", {}), ("b", {})])
        queue.reserve(2, interactive=True)
        items = [WorkItem(rid, "echo", "x", interactive=True, deadline=time.monotonic() + 0.2) for rid in ids]
        queue.submit(items)
        for item in items:
            with pytest.raises(RunTimedOutError):
                item.future.result(timeout=5)
        assert router.runs == 1, "the second run expired in the queue and never reached the router"
        assert [store.get_run(i).reason for i in ids] == ["timeout", "timeout"]
    finally:
        queue.stop(5)
        store.close()


def test_queue_batches_waiting_runs_of_a_pipeline(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    router = EchoRouter("echo")
    queue = _queue(store, router, max_batch=3)
    try:
        ids = store.create_runs("echo", [(f"refund {i}", {}) for i in range(4)])
        queue.reserve(4, interactive=True)
        items = [WorkItem(rid, "echo", f"refund {i}", interactive=True) for i, rid in enumerate(ids)]
        queue.submit(items)  # all waiting before the worker starts
        queue.start()
        results = [item.future.result(timeout=10) for item in items]
        assert [r.id for r in results] == ids
        assert router.batches == [3], "3 runs in one run_many call, the 4th alone through run()"
        assert router.runs == 4
        assert store.count_runs() == {"ok": 4}
    finally:
        queue.stop(5)
        store.close()


def test_queue_bounds_and_reservations(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    queue = _queue(store, EchoRouter("echo"), queue_size=2)  # not started: nothing drains
    try:
        queue.reserve(2, interactive=True)
        with pytest.raises(QueueFullError) as err:
            queue.reserve(1, interactive=True)
        assert err.value.retry_after == 3
        queue.release(1, interactive=True)
        queue.reserve(1, interactive=True)
        with pytest.raises(QueueFullError):
            queue.reserve(5, interactive=False)  # backlog of 4
        queue.reserve(4, interactive=False)
    finally:
        queue.stop(1)
        store.close()


def test_scrub_removes_paths_and_tracebacks() -> None:
    text = 'no adapter in /tmp/x/home/adapters\nTraceback (most recent call last):\n  File "/a/b.py", line 1'
    assert scrub(text) == "no adapter in <path>\n"
    assert scrub("stage `summary`: bad output") == "stage `summary`: bad output"


def test_stage_context_follows_redaction_and_inputs() -> None:
    from types import SimpleNamespace

    from loragraph.api.store import stage_context
    from loragraph.router.result import RunResult

    result = RunResult(
        id="r", pipeline="p", path=["pii", "intent", "summary", "reply"],
        outputs={
            "pii": {"label": "pii", "score": 0.9, "passed": False, "action": "redact", "text": "mail me at [EMAIL]"},
            "intent": {"label": "other", "score": 0.5, "scores": {}},
            "summary": {"text": "asks for mail"},
            "reply": {"text": "ok"},
        },
    )
    ctx = stage_context("mail me at a@b.c", result, "reply")
    assert ctx["text"] == "mail me at [EMAIL]", "later stages saw the redacted document"
    assert set(ctx) == {"text", "pii", "intent", "summary"}
    spec = SimpleNamespace(stages={
        "pii": SimpleNamespace(kind="guardrail", text_source="text", inputs=None),
        "intent": SimpleNamespace(kind="classify", text_source="text", inputs=None),
        "summary": SimpleNamespace(kind="generate", text_source="text", inputs=["text"]),
        "reply": SimpleNamespace(kind="generate", text_source="text", inputs=["text", "summary"]),
    })
    assert stage_context("mail me at a@b.c", result, "summary", spec=spec) == {"text": "mail me at [EMAIL]"}
    assert stage_context("mail me at a@b.c", result, "reply", spec=spec) == {
        "text": "mail me at [EMAIL]", "summary": {"text": "asks for mail"}}
