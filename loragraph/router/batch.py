"""``loragraph run``: a pipeline over a JSONL file of documents, one result per line.

Input lines are ``{"id": str, "text": str}``. A bad line (unparsable, missing ``text``)
gets an error result naming ``file:LINE`` and the other lines still run. Output lines are
``RunResult`` JSON: stage outputs keyed by stage name, the path taken, and the trace.
``run_file`` also tallies statuses and, per guardrail stage, how often it ran and failed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loragraph.errors import InputError, NotFoundError
from loragraph.router.result import RunResult

__all__ = ["BatchSummary", "read_documents", "run_file"]


def read_documents(path: str | Path) -> Iterator[tuple[int, str | None, str | None, str | None]]:
    """Yield ``(line number, id, text, problem)`` for each non-blank line of ``path``."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError("no such input file", where=str(path))
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path.name}:{number}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, None, None, f"{where}: not valid JSON ({exc.msg})"
                continue
            if not isinstance(obj, dict):
                yield number, None, None, f"{where}: expected an object with `id` and `text`"
                continue
            doc_id = obj.get("id")
            text = obj.get("text")
            doc_id = str(doc_id) if doc_id is not None else f"line-{number}"
            if not isinstance(text, str) or not text.strip():
                yield number, doc_id, None, f"{where}: `text` must be a non-empty string"
                continue
            yield number, doc_id, text, None


@dataclass
class BatchSummary:
    """What a batch run did: runs per status, and per guardrail stage `[failed, ran]`."""

    statuses: dict[str, int] = field(default_factory=dict)
    guardrails: dict[str, list[int]] = field(default_factory=dict)

    def add(self, result: RunResult) -> None:
        self.statuses[result.status] = self.statuses.get(result.status, 0) + 1
        for verdict in result.verdicts:
            tally = self.guardrails.setdefault(verdict.guardrail, [0, 0])
            tally[0] += not verdict.passed
            tally[1] += 1

    def lines(self) -> list[str]:
        """``3 ok, 1 blocked`` and one ``guardrail STAGE: failed F of N (rate)`` line per guardrail."""
        out = [", ".join(f"{n} {status}" for status, n in sorted(self.statuses.items())) or "no documents"]
        for stage, (failed, ran) in sorted(self.guardrails.items()):
            out.append(f"guardrail {stage}: failed {failed} of {ran} ({failed / ran:.1%})")
        return out


def run_file(router: Any, input_path: str | Path, output_path: str | Path, *, batch_size: int = 8) -> BatchSummary:
    """Run ``router`` over every line of ``input_path``; write results to ``output_path``.

    Returns what ran (``BatchSummary``). Results keep the input order."""
    if batch_size < 1:
        raise InputError("`--batch-size` must be at least 1")
    rows = list(read_documents(input_path))
    summary = BatchSummary()
    out = Path(output_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    with open(tmp, "w", encoding="utf-8") as handle:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            good = [(doc_id, text) for _, doc_id, text, problem in chunk if problem is None]
            results = iter(router.run_many([t for _, t in good], run_ids=[i for i, _ in good])) if good else iter(())
            for _, doc_id, _, problem in chunk:
                if problem is None:
                    result = next(results)
                else:
                    result = RunResult(id=doc_id or "", pipeline=router.name, status="error", error=problem)
                summary.add(result)
                handle.write(result.model_dump_json() + "\n")
    tmp.replace(out)
    return summary
