"""The run, job and feedback store: SQLite in WAL mode, one guarded writer connection.

Lifecycle of a run row: ``queued`` (written BEFORE the run is handed to a worker) ->
``running`` -> the result's status (``ok``, ``blocked``, ``escalated``, ``error``) or
``failed`` with a ``reason``. Every transition is a conditional UPDATE, so the first of a
worker finishing and a client-side timeout wins and a run is never finished twice.

On start-up ``recover()`` marks every ``queued``/``running`` row left by a previous process
``failed`` with reason ``interrupted by restart``: such a run is never lost (its row and
input stay) and never duplicated (it is not run again behind the client's back; resubmit
it if wanted). The choice is deliberate: a client that was waiting for it got no answer,
and re-running could repeat side effects of a pipeline.

Writes go through one connection guarded by a lock; each reading thread has its own
connection (WAL lets readers run beside the writer).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from loragraph.api.models import FeedbackRecord, FeedbackRequest, JobRecord, RunRecord
from loragraph.errors import InputError, NotFoundError
from loragraph.router.result import RunResult

__all__ = ["INTERRUPTED", "TIMEOUT", "ExportSummary", "FeedbackItem", "Store", "export_feedback", "stage_context"]

INTERRUPTED = "interrupted by restart"
TIMEOUT = "timeout"
_OPEN = ("queued", "running")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    total INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued','running','ok','blocked','escalated','error','failed')),
    reason TEXT,
    input TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    result TEXT,
    job_id TEXT REFERENCES jobs(id),
    job_pos INTEGER,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT
);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
CREATE INDEX IF NOT EXISTS runs_job ON runs(job_id, job_pos);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs(id),
    stage TEXT NOT NULL,
    rating INTEGER NOT NULL CHECK (rating IN (-1, 0, 1)),
    corrected TEXT,
    comment TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_stage ON feedback(stage, id);
"""


def _now() -> str:
    return datetime.now(UTC).isoformat()


def new_id() -> str:
    """A new run or job id (32 hex characters)."""
    return uuid.uuid4().hex


class FeedbackItem(BaseModel):
    """One feedback item with what the stage saw and produced."""

    feedback_id: int = Field(description="feedback id")
    run_id: str = Field(description="the run")
    pipeline: str = Field(description="the run's pipeline")
    stage: str = Field(description="the stage the feedback is about")
    input: dict[str, Any] = Field(
        description="the stage's template context: `text` (the document) plus earlier stages' outputs by name"
    )
    output: dict[str, Any] = Field(description="the stage's output in the run")
    rating: int = Field(description="-1, 0 or 1")
    corrected: str | None = Field(None, description="the corrected output, if given")
    comment: str | None = Field(None, description="the comment, if given")
    created_at: datetime = Field(description="when the feedback was given (UTC)")


def _is_guardrail_output(output: dict[str, Any]) -> bool:
    return {"label", "score", "passed", "action"} <= set(output)


def stage_context(text: str, result: RunResult, stage: str, *, spec: Any = None) -> dict[str, Any]:
    """The context a stage's prompt template saw: the document plus earlier stages' outputs.

    Earlier = executed before ``stage`` in ``result.path``. A guardrail that rewrote the
    document (redaction of the input) replaced ``text`` for the stages after it; its output
    carries the new ``text``. With the pipeline ``spec`` (``PipelineSpec``) the guardrail's
    target is read from it and a generate stage's ``inputs`` limit the context exactly like
    the router does; without it, a guardrail's ``text`` that is no earlier stage's text is
    taken as the redacted document.
    """
    stages = getattr(spec, "stages", None) or {}
    context: dict[str, Any] = {"text": text}
    for name in result.path:
        if name == stage:
            break
        output = result.outputs.get(name)
        if output is None:
            continue
        context[name] = output
        if _is_guardrail_output(output) and isinstance(output.get("text"), str):
            declared = getattr(stages.get(name), "text_source", None) if stages else None
            if declared is not None:
                rewrote_input = declared == "text"
            else:
                rewrote_input = not any(
                    isinstance(v, dict) and v.get("text") == output["text"] for k, v in context.items() if k != name
                )
            if rewrote_input:
                context["text"] = output["text"]
    inputs = getattr(stages.get(stage), "inputs", None) if stages else None
    kind = getattr(stages.get(stage), "kind", None) if stages else None
    if inputs and kind == "generate":
        context = {name: context[name] for name in inputs if name in context}
    return context


class Store:
    """Runs, jobs and feedback in one SQLite file (WAL)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write_lock = threading.Lock()
        self._writer = self._connect()
        self._local = threading.local()
        self._readers: dict[int, sqlite3.Connection] = {}  # thread ident -> that thread's reader
        self._readers_lock = threading.Lock()
        self._closed = False
        with self._write_lock:
            self._writer.execute("PRAGMA journal_mode=WAL")
            self._writer.executescript(_SCHEMA)
            self._writer.commit()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = self._connect()
            self._local.conn, self._local.pid = conn, os.getpid()
            with self._readers_lock:
                # threads come and go (anyio's pool); close the readers of finished ones
                alive = {t.ident for t in threading.enumerate()}
                for ident in [i for i in self._readers if i not in alive]:
                    self._readers.pop(ident).close()
                self._readers[threading.get_ident()] = conn
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._write_lock:
            if self._closed:
                raise RuntimeError("store is closed")
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
            except BaseException:
                self._writer.execute("ROLLBACK")
                raise
            self._writer.execute("COMMIT")

    def close(self) -> None:
        """Close every connection (idempotent)."""
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            self._writer.close()
        with self._readers_lock:
            for conn in self._readers.values():
                conn.close()
            self._readers.clear()

    # ------------------------------------------------------------------ runs

    def create_runs(
        self, pipeline: str, documents: list[tuple[str, dict[str, Any]]], *, job_id: str | None = None
    ) -> list[str]:
        """Write queued runs (and their job when ``job_id`` is given) in one transaction."""
        now = _now()
        ids = [new_id() for _ in documents]
        with self._write() as conn:
            if job_id is not None:
                conn.execute(
                    "INSERT INTO jobs (id, pipeline, total, created_at) VALUES (?, ?, ?, ?)",
                    (job_id, pipeline, len(documents), now),
                )
            conn.executemany(
                "INSERT INTO runs (id, pipeline, status, input, metadata, job_id, job_pos, created_at) "
                "VALUES (?, ?, 'queued', ?, ?, ?, ?, ?)",
                [
                    (run_id, pipeline, text, json.dumps(meta, ensure_ascii=False), job_id,
                     pos if job_id else None, now)
                    for pos, (run_id, (text, meta)) in enumerate(zip(ids, documents, strict=True))
                ],
            )
        return ids

    def mark_running(self, run_id: str) -> bool:
        """``queued`` -> ``running``; False when the run is no longer queued (e.g. timed out)."""
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE runs SET status='running', started_at=? WHERE id=? AND status='queued'", (_now(), run_id)
            )
            return cur.rowcount == 1

    def finish(self, run_id: str, result: RunResult) -> bool:
        """Store the result of an open run; False when it was already finished or failed."""
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE runs SET status=?, result=?, finished_at=? WHERE id=? AND status IN ('queued','running')",
                (result.status, result.model_dump_json(), _now(), run_id),
            )
            return cur.rowcount == 1

    def fail(self, run_id: str, reason: str) -> bool:
        """Mark an open run ``failed`` with ``reason``; False when it had already finished."""
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE runs SET status='failed', reason=?, finished_at=? WHERE id=? AND status IN ('queued','running')",
                (reason, _now(), run_id),
            )
            return cur.rowcount == 1

    def recover(self, reason: str = INTERRUPTED) -> int:
        """Mark runs left open by a previous process ``failed`` (see the module doc); how many."""
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE runs SET status='failed', reason=?, finished_at=? WHERE status IN ('queued','running')",
                (reason, _now()),
            )
            return cur.rowcount

    def get_run(self, run_id: str) -> RunRecord:
        """A stored run (``NotFoundError`` when unknown)."""
        row = self._reader().execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no run with id `{run_id}`")
        return _run_record(row)

    def count_runs(self) -> dict[str, int]:
        """Runs per status."""
        rows = self._reader().execute("SELECT status, COUNT(*) AS n FROM runs GROUP BY status").fetchall()
        return {row["status"]: row["n"] for row in rows}

    def run_ids(self) -> list[str]:
        """Every stored run id (for consistency checks)."""
        return [row[0] for row in self._reader().execute("SELECT id FROM runs ORDER BY rowid")]

    # ------------------------------------------------------------------ jobs

    def get_job(self, job_id: str) -> JobRecord:
        """A job with its progress (``NotFoundError`` when unknown)."""
        conn = self._reader()
        job = conn.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        if job is None:
            raise NotFoundError(f"no job with id `{job_id}`")
        rows = conn.execute("SELECT id, status FROM runs WHERE job_id=? ORDER BY job_pos", (job_id,)).fetchall()
        counts: dict[str, int] = {}
        for row in rows:
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        done = sum(n for status, n in counts.items() if status not in _OPEN)
        queued = counts.get("queued", 0)
        status = "done" if done == len(rows) else ("queued" if queued == len(rows) else "running")
        return JobRecord(
            id=job["id"], pipeline=job["pipeline"], status=status, total=job["total"], done=done,
            counts=counts, run_ids=[row["id"] for row in rows], created_at=job["created_at"],
        )

    # ------------------------------------------------------------------ feedback

    def add_feedback(self, run_id: str, feedback: FeedbackRequest) -> FeedbackRecord:
        """Store feedback on a finished run's stage (404 unknown run; 400 unfinished run or unknown stage)."""
        run = self.get_run(run_id)
        if run.result is None:
            raise InputError(f"run `{run_id}` has no result to give feedback on (status `{run.status}`)")
        if feedback.stage not in run.result.outputs:
            have = ", ".join(f"`{s}`" for s in run.result.outputs) or "none"
            raise InputError(f"`stage` `{feedback.stage}` has no output in run `{run_id}`; stages with output: {have}")
        now = _now()
        with self._write() as conn:
            cur = conn.execute(
                "INSERT INTO feedback (run_id, stage, rating, corrected, comment, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (run_id, feedback.stage, feedback.rating, feedback.corrected, feedback.comment, now),
            )
            feedback_id = int(cur.lastrowid or 0)
        return FeedbackRecord(id=feedback_id, run_id=run_id, created_at=now, **feedback.model_dump())

    def iter_feedback(self, stage: str, *, spec: Any = None) -> Iterator[FeedbackItem]:
        """Every feedback item on ``stage``, oldest first, with the stage's input context and output.

        Pass the pipeline ``spec`` for exact contexts (a generate stage's ``inputs``); see
        ``stage_context``.
        """
        cursor = self._reader().execute(
            "SELECT f.*, r.input, r.pipeline, r.result FROM feedback f JOIN runs r ON r.id = f.run_id "
            "WHERE f.stage=? AND r.result IS NOT NULL ORDER BY f.id",
            (stage,),
        )
        for row in cursor:
            result = RunResult.model_validate_json(row["result"])
            if stage not in result.outputs:
                continue
            yield FeedbackItem(
                feedback_id=row["id"], run_id=row["run_id"], pipeline=row["pipeline"], stage=stage,
                input=stage_context(row["input"], result, stage, spec=spec), output=result.outputs[stage],
                rating=row["rating"], corrected=row["corrected"], comment=row["comment"],
                created_at=row["created_at"],
            )


def _run_record(row: sqlite3.Row) -> RunRecord:
    return RunRecord(
        id=row["id"], pipeline=row["pipeline"], status=row["status"], reason=row["reason"], job_id=row["job_id"],
        text=row["input"], metadata=json.loads(row["metadata"] or "{}"),
        result=RunResult.model_validate_json(row["result"]) if row["result"] else None,
        created_at=row["created_at"], started_at=row["started_at"], finished_at=row["finished_at"],
    )


# --------------------------------------------------------------------------- export


class ExportSummary(BaseModel):
    """What ``export_feedback`` wrote."""

    sft: int = Field(description="lines in sft.jsonl")
    pairs: int = Field(description="lines in pairs.jsonl")
    skipped: int = Field(description="feedback items that gave no training example")
    sft_path: Path = Field(description="the SFT file")
    pairs_path: Path = Field(description="the preference-pair file")


def _output_value(output: dict[str, Any]) -> str | None:
    for key in ("text", "label"):
        if isinstance(output.get(key), str):
            return str(output[key])
    return None


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    os.replace(tmp, path)


def export_feedback(items: Iterator[FeedbackItem] | list[FeedbackItem], out_dir: str | Path) -> ExportSummary:
    """Write ``sft.jsonl`` and ``pairs.jsonl`` (docs/internals.md formats) from feedback items.

    Only the latest feedback per (run, stage) counts. SFT: ``{"input", "target"}`` with the
    correction, or the stage's own output when rated 1 without a correction. Pairs:
    ``{"input", "chosen": correction, "rejected": original}`` when a correction differs from
    the output. The output is the stage's ``text`` (generate) or ``label`` (classify);
    items without one (tag stages) are skipped.
    """
    latest: dict[tuple[str, str], FeedbackItem] = {}
    for item in items:
        latest[(item.run_id, item.stage)] = item
    sft: list[dict[str, Any]] = []
    pairs: list[dict[str, Any]] = []
    skipped = 0
    for item in latest.values():
        original = _output_value(item.output)
        corrected = item.corrected.strip() if item.corrected and item.corrected.strip() else None
        wrote = False
        if corrected is not None:
            sft.append({"input": item.input, "target": corrected})
            wrote = True
            if original is not None and corrected != original.strip():
                pairs.append({"input": item.input, "chosen": corrected, "rejected": original})
        elif item.rating == 1 and original is not None:
            sft.append({"input": item.input, "target": original})
            wrote = True
        skipped += not wrote
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sft_path, pairs_path = out / "sft.jsonl", out / "pairs.jsonl"
    _write_jsonl(sft_path, sft)
    _write_jsonl(pairs_path, pairs)
    return ExportSummary(sft=len(sft), pairs=len(pairs), skipped=skipped, sft_path=sft_path, pairs_path=pairs_path)
