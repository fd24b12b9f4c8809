"""Execute a pipeline graph over documents, swapping adapters per step on one resident base.

The router loads the base once, mounts every adapter the pipeline names (all stay
resident) and walks the graph from its entry. Each step activates its own adapter through
peft's ``set_adapter`` (inside ``AdapterHost``):

- classify and guardrail steps: ONE forward pass through a small head, no decoding;
- tag steps: ONE forward pass through a token head, spans with char offsets;
- generate steps: the stage's prompt template rendered from earlier outputs, then decoding.

``run_many`` walks the graph stage by stage for a whole batch of documents, so documents
waiting at the same stage share one batched call (the scheduler feeds it concurrent runs).
Documents longer than the base's context are split: classify scores are averaged over
chunks, tag spans are shifted back to document offsets, generate stages map over chunks
and reduce the partial outputs; nothing is silently truncated.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx

from loragraph.errors import (
    InputError,
    LoragraphError,
    NotFoundError,
    RunTimeout,
    StepError,
    UserError,
)
from loragraph.router.result import GuardrailVerdict, RunResult, StepTrace

__all__ = ["Router", "RunTimeout", "combine_classifications", "split_chars", "split_text"]


@dataclass
class _Doc:
    """The state of one document while a batch walks the graph."""

    result: RunResult
    text: str
    context: dict[str, Any]
    active: set[str] = field(default_factory=set)
    done: bool = False
    deadline: float | None = None
    reply_fixed: bool = False  # a guardrail decided the reply (refusal or fallback)


def _decoding(spec: Any) -> dict[str, Any]:
    """A generate stage's decoding settings, as ``AdapterHost.generate`` keywords."""
    return {
        "max_new_tokens": spec.max_new_tokens,
        "repetition_penalty": spec.repetition_penalty,
        "no_repeat_ngram_size": spec.no_repeat_ngram_size,
    }


def _new_id() -> str:
    return uuid.uuid4().hex


class Router:
    """Runs one pipeline over documents. Build it with ``Router.from_yaml``."""

    def __init__(self, spec: Any, *, host: Any, registry: Any, source: str | None = None) -> None:
        from loragraph.pipelines.graph import build_graph

        self.spec = spec
        self.host = host
        self.registry = registry
        self.source = source
        self.graph: nx.DiGraph = build_graph(spec)
        self.order: list[str] = list(nx.topological_sort(self.graph))
        self._lock = threading.RLock()
        self._versions: dict[str, Any] = {}
        self.refresh()

    # ------------------------------------------------------------------ building

    @classmethod
    def from_yaml(
        cls, path: str | Path, *, registry: Any = None, base: Any = None, adapters: Mapping[str, str] | None = None
    ) -> Router:
        """Load, statically validate, load the base (once) and mount every adapter.

        ``adapters`` overrides stages' adapter references for this router only
        (``{"reply": "reply@v2"}``); the overridden pipeline is validated like the file."""
        from loragraph.adapters.base import load_base
        from loragraph.adapters.host import AdapterHost
        from loragraph.adapters.registry import Registry
        from loragraph.pipelines.spec import load_pipeline
        from loragraph.pipelines.validate import check_pipeline

        registry = registry or Registry()
        loaded = load_pipeline(path)
        if adapters:
            loaded = loaded.with_adapters(adapters)
        spec = check_pipeline(loaded, registry=registry)  # everything that needs no weights
        base = base or load_base(spec.base)
        check_pipeline(spec, registry=registry, base_fingerprint=base.fingerprint)
        # one host per base: pipelines sharing a base share its resident adapters
        host = base.extra.get("host")
        if host is None:
            host = base.extra["host"] = AdapterHost(base)
        return cls(spec, host=host, registry=registry, source=str(path))

    @property
    def name(self) -> str:
        return str(self.spec.name)

    def adapters(self) -> list[Any]:
        """The adapter versions in use, one per distinct reference."""
        with self._lock:
            seen: dict[str, Any] = {}
            for version in self._versions.values():
                seen[version.ref] = version
            return list(seen.values())

    def refresh(self) -> list[str]:
        """Re-resolve adapter references (promoted versions may have changed) and mount
        new versions. Returns the stages whose version changed. Used by the API after a
        promote or rollback: the next run uses the new version, no restart."""
        resolved: dict[str, Any] = {}
        for name, stage in self.spec.stages.items():
            if stage.adapter:
                resolved[name] = self.registry.resolve(stage.adapter)
        with self._lock:
            for version in resolved.values():
                self.host.mount(version)
            changed = [s for s, v in resolved.items() if s not in self._versions or self._versions[s].ref != v.ref]
            self._versions = resolved
        return changed

    # ------------------------------------------------------------------ running

    def run(self, text: str, *, run_id: str | None = None, deadline: float | None = None) -> RunResult:
        """Run the pipeline over one document."""
        return self.run_many([text], run_ids=[run_id], deadlines=[deadline])[0]

    def run_many(
        self,
        texts: Sequence[str],
        *,
        run_ids: Sequence[str | None] | None = None,
        deadlines: Sequence[float | None] | None = None,
    ) -> list[RunResult]:
        """Run the pipeline over many documents, batching documents at the same stage.

        ``deadlines`` are ``time.monotonic()`` values, checked before each step."""
        ids = list(run_ids) if run_ids else [None] * len(texts)
        limits = list(deadlines) if deadlines else [None] * len(texts)
        docs = [
            self._start(text, run_id or _new_id(), deadline)
            for text, run_id, deadline in zip(texts, ids, limits, strict=True)
        ]
        started = time.perf_counter()
        with self._lock:
            for stage in self.order:
                waiting = [d for d in docs if not d.done and stage in d.active]
                for doc in waiting:
                    if doc.deadline is not None and time.monotonic() > doc.deadline:
                        self._fail(doc, stage, RunTimeout("the run passed its deadline", where=f"stage `{stage}`"))
                waiting = [d for d in waiting if not d.done]
                if waiting:
                    self._step(stage, waiting)
        elapsed = (time.perf_counter() - started) * 1000
        for doc in docs:
            doc.result.latency_ms = round(elapsed, 3)
            if not doc.reply_fixed:
                # the customer reply: the first `reply_from` stage that ran, else the last
                # generate stage (a hand-off note for staff is never the reply)
                stage = self.spec.reply_stage(doc.result.path)
                if stage is not None and stage in doc.result.outputs:
                    doc.result.reply = doc.result.outputs[stage].get("text")
        return [d.result for d in docs]

    def _start(self, text: str, run_id: str, deadline: float | None) -> _Doc:
        result = RunResult(id=run_id, pipeline=self.name)
        doc = _Doc(result=result, text=text, context={"text": text}, deadline=deadline)
        limit = self.spec.limits.max_document_chars
        if deadline is None and self.spec.limits.timeout_s:
            deadline = time.monotonic() + self.spec.limits.timeout_s
        doc.deadline = deadline
        if not isinstance(text, str) or not text.strip():
            self._fail(doc, None, InputError("`text` must be a non-empty string"))
        elif limit and len(text) > limit:
            self._fail(doc, None, InputError(f"`text` has {len(text)} characters; the pipeline accepts at most {limit}"))
        else:
            doc.active.add(self.spec.entry_stage)
        return doc

    def _fail(self, doc: _Doc, stage: str | None, err: Exception) -> None:
        doc.done = True
        doc.result.status = "error"
        doc.result.error_kind = (
            "timeout" if isinstance(err, RunTimeout) else "input" if isinstance(err, UserError) else "step"
        )
        if stage is not None and not isinstance(err, StepError | RunTimeout):
            message = err.message if isinstance(err, LoragraphError) else f"{type(err).__name__}: {err}"
            err = StepError(message, stage=stage)
        doc.result.error = str(err)

    def _step(self, stage: str, docs: list[_Doc]) -> None:
        spec = self.spec.stages[stage]
        version = self._versions.get(stage)
        started = time.perf_counter()
        try:
            outcomes = self._execute(stage, spec, version, docs)
        except Exception as err:  # a step error fails its runs, never the process
            for doc in docs:
                self._record(doc, stage, spec, version, started, len(docs), status="error", error=str(err))
                self._fail(doc, stage, err)
            return
        for doc, (output, info) in zip(docs, outcomes, strict=True):
            doc.context[stage] = output
            doc.result.outputs[stage] = output
            verdict: GuardrailVerdict | None = info.get("verdict")
            status = info.get("status", "ok")
            trace = self._record(doc, stage, spec, version, started, len(docs), status=status, verdict=verdict, info=info)
            if verdict is not None:
                doc.result.verdicts.append(verdict)
            if info.get("reply") is not None:
                doc.result.reply = info["reply"]
                doc.reply_fixed = True
            if info.get("run_status", "ok") != "ok":
                doc.result.status = info["run_status"]
            if info.get("stop"):
                doc.done = True
                continue
            nxt = self._next(stage, doc.context)
            trace.next = nxt
            doc.active.update(nxt)

    def _record(
        self,
        doc: _Doc,
        stage: str,
        spec: Any,
        version: Any,
        started: float,
        batch: int,
        *,
        status: str,
        verdict: GuardrailVerdict | None = None,
        error: str | None = None,
        info: dict[str, Any] | None = None,
    ) -> StepTrace:
        info = info or {}
        trace = StepTrace(
            stage=stage,
            kind=spec.kind,
            adapter=version.ref if version is not None else None,
            status=status,  # type: ignore[arg-type]
            latency_ms=round((time.perf_counter() - started) * 1000 / max(batch, 1), 3),
            input_tokens=int(info.get("input_tokens", 0)),
            output_tokens=int(info.get("output_tokens", 0)),
            chunks=int(info.get("chunks", 1)),
            verdict=verdict,
            error=error,
        )
        doc.result.trace.append(trace)
        doc.result.path.append(stage)
        return trace

    def _next(self, stage: str, context: dict[str, Any]) -> list[str]:
        from loragraph.pipelines.graph import successors

        return successors(self.graph, stage, context)

    # ------------------------------------------------------------------ kinds

    def _execute(self, stage: str, spec: Any, version: Any, docs: list[_Doc]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        if version is None:
            raise NotFoundError("has no adapter", where=f"stage `{stage}`")
        if spec.kind == "classify":
            return self._classify(spec, version, [self._source_text(spec, d) for d in docs])
        if spec.kind == "tag":
            return self._tag(spec, version, [self._source_text(spec, d) for d in docs])
        if spec.kind == "generate":
            return self._generate(stage, spec, version, docs)
        if spec.kind == "guardrail":
            return self._guardrail(stage, spec, version, docs)
        raise StepError(f"unknown stage kind `{spec.kind}`", stage=stage)

    @staticmethod
    def _source_text(spec: Any, doc: _Doc) -> str:
        source = spec.text_source
        if source == "text":
            return str(doc.context["text"])
        return str(doc.context.get(source, {}).get("text", ""))

    def _chunks(self, spec: Any, text: str, budget: int) -> list[tuple[int, str]]:
        """(char offset, piece) covering ``text``: the stage's own `chunking` when declared,
        else pieces of at most ``budget`` tokens (only when the text does not fit)."""
        if spec.chunking is not None:
            pieces = split_chars(text, spec.chunking.max_chars, spec.chunking.overlap)
        else:
            pieces = split_text(text, budget, self.host.count_tokens)
        limit = self.spec.limits.max_chunks
        if len(pieces) > limit:
            raise InputError(f"the document needs {len(pieces)} chunks; `limits.max_chunks` is {limit}")
        return pieces

    def _token_budget(self, reserve: int = 0) -> int:
        return max(32, self.host.context_length - reserve - 16)

    def _classify(self, spec: Any, version: Any, texts: list[str]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        budget = self._token_budget()
        pieces: list[tuple[int, str]] = []  # (doc index, chunk text)
        for i, text in enumerate(texts):
            pieces.extend((i, chunk) for _, chunk in self._chunks(spec, text, budget))
        results = self.host.classify(version, [p[1] for p in pieces])
        out: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for i, text in enumerate(texts):
            mine = [(len(p[1]), r) for p, r in zip(pieces, results, strict=True) if p[0] == i]
            output = combine_classifications(mine, spec.combine if spec.chunking is not None else "mean")
            out.append((output, {"chunks": len(mine), "input_tokens": self.host.count_tokens(text)}))
        return out

    def _tag(self, spec: Any, version: Any, texts: list[str]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        budget = self._token_budget()
        pieces: list[tuple[int, int, str]] = []
        for i, text in enumerate(texts):
            pieces.extend((i, offset, chunk) for offset, chunk in self._chunks(spec, text, budget))
        results = self.host.tag(version, [p[2] for p in pieces])
        out: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for i, text in enumerate(texts):
            found: dict[tuple[int, int], dict[str, Any]] = {}
            chunks = 0
            for (j, offset, _), spans in zip(pieces, results, strict=True):
                if j != i or (chunks and spec.combine == "first"):
                    continue
                chunks += 1
                for e in spans:
                    start, end = e.start + offset, e.end + offset
                    # chunks may overlap: the same span found twice is one entity
                    found.setdefault((start, end), {"type": e.type, "text": text[start:end], "start": start, "end": end})
            entities = [found[k] for k in sorted(found)]
            out.append(({"entities": entities}, {"chunks": chunks, "input_tokens": self.host.count_tokens(text)}))
        return out

    def _prompt_parts(self, stage: str, spec: Any, version: Any) -> tuple[str, str | None]:
        template = spec.prompt or getattr(version.manifest, "prompt", None)
        if not template:
            raise StepError("has no `prompt` and its adapter was trained without one", stage=stage)
        system = spec.system if spec.system is not None else getattr(version.manifest, "system", None)
        return template, system

    def _context_for(self, spec: Any, doc: _Doc) -> dict[str, Any]:
        if not spec.inputs:
            return dict(doc.context)
        return {name: doc.context[name] for name in spec.inputs if name in doc.context}

    def _generate(self, stage: str, spec: Any, version: Any, docs: list[_Doc]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        from loragraph.pipelines.templates import render_prompt

        template, system = self._prompt_parts(stage, spec, version)
        decoding = _decoding(spec)
        budget = self._token_budget(reserve=decoding["max_new_tokens"])

        def render(context: dict[str, Any]) -> str:
            return render_prompt(template, context, where=f"stage `{stage}`")

        contexts = [self._context_for(spec, d) for d in docs]
        prompts = [render(c) for c in contexts]
        whole = [spec.chunking is None and self.host.count_tokens(p) <= budget for p in prompts]
        texts: list[str] = [""] * len(docs)
        info: list[dict[str, Any]] = [{} for _ in docs]
        batch = [i for i, ok in enumerate(whole) if ok]
        if batch:
            gens = self.host.generate(version, [prompts[i] for i in batch], system=system, **decoding)
            for i, g in zip(batch, gens, strict=True):
                texts[i] = g.text
                info[i] = {"input_tokens": g.input_tokens, "output_tokens": g.output_tokens, "chunks": 1}
        for i, ok in enumerate(whole):
            if not ok:
                texts[i], info[i] = self._chunked_generate(spec, contexts[i], render, version, system, decoding, budget)
        return [({"text": t}, meta) for t, meta in zip(texts, info, strict=True)]

    def _chunked_generate(
        self,
        spec: Any,
        context: dict[str, Any],
        render: Callable[[dict[str, Any]], str],
        version: Any,
        system: str | None,
        decoding: dict[str, Any],
        budget: int,
    ) -> tuple[str, dict[str, Any]]:
        """A document too long for one prompt (or a stage with `chunking`): run the stage on
        chunks of the document. `concat` joins the chunk outputs; without declared chunking
        the outputs are reduced by running the stage again on them until one prompt fits."""
        text = str(context.get("text", ""))
        overhead = self.host.count_tokens(render({**context, "text": ""}))
        room = budget - overhead
        if room < 32:
            raise InputError("the prompt without the document already fills the base's context")
        totals = {"input_tokens": 0, "output_tokens": 0, "chunks": 0}
        for _ in range(8):
            pieces = [c for _, c in self._chunks(spec, text, room)]
            if spec.chunking is not None and spec.combine == "first":
                pieces = pieces[:1]
            gens = self.host.generate(version, [render({**context, "text": p}) for p in pieces], system=system, **decoding)
            totals["chunks"] += len(pieces)
            totals["input_tokens"] += sum(g.input_tokens for g in gens)
            totals["output_tokens"] += sum(g.output_tokens for g in gens)
            joined = "\n".join(g.text for g in gens)
            if len(gens) == 1 or spec.chunking is not None:
                return joined, totals
            text = joined
        raise InputError("the document did not reduce to the base's context in 8 rounds")

    def _guardrail(self, stage: str, spec: Any, version: Any, docs: list[_Doc]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        from loragraph.guardrails.policy import (
            GuardrailSettings,
            apply_guardrail,
            effective_threshold,
        )

        out: list[tuple[dict[str, Any], dict[str, Any]]] = []
        target = spec.text_source
        # the step's threshold, else the one stored with this version (a promoted guardrail brings its own)
        settings = GuardrailSettings.of(spec).model_copy(update={"threshold": effective_threshold(spec.threshold, version)})
        for doc in docs:
            text = self._source_text(spec, doc)
            outcome = apply_guardrail(
                stage, settings, text, lambda t: self.host.classify(version, [t])[0], source_text=doc.context["text"]
            )
            verdict = outcome.verdict
            output: dict[str, Any] = {"label": verdict.label, "score": verdict.score, "passed": verdict.passed, "action": verdict.action}
            if outcome.text is not None and outcome.text != text:
                output["text"] = outcome.text
                if target == "text":
                    doc.context["text"] = outcome.text
                else:
                    doc.context[target] = {**doc.context.get(target, {}), "text": outcome.text}
                    doc.result.outputs[target] = doc.context[target]
            info: dict[str, Any] = {
                "verdict": verdict,
                "status": "blocked" if outcome.stop else "ok",
                "stop": outcome.stop,
                "reply": outcome.reply,
                "run_status": outcome.run_status,
                "input_tokens": self.host.count_tokens(text),
            }
            out.append((output, info))
        return out


def combine_classifications(chunks: list[tuple[int, Any]], mode: str) -> dict[str, Any]:
    """One classify output from per-chunk results ``(chunk length, Classification)``.

    ``mean`` (automatic chunking): length-weighted mean of the scores; ``vote``: the
    majority label, scores averaged; ``max``: the single highest-scoring chunk;
    ``first``: the first chunk."""
    if mode == "first" or len(chunks) == 1:
        chosen = chunks[0][1]
        scores = dict(chosen.scores)
    elif mode == "max":
        chosen = max((r for _, r in chunks), key=lambda r: r.score)
        scores = dict(chosen.scores)
    else:
        weights = [n if mode == "mean" else 1 for n, _ in chunks]
        total = sum(weights) or 1
        labels = list(chunks[0][1].scores)
        scores = {lab: sum(w * r.scores[lab] for w, (_, r) in zip(weights, chunks, strict=True)) / total for lab in labels}
    if mode == "vote" and len(chunks) > 1:
        votes: dict[str, int] = {}
        for _, r in chunks:
            votes[r.label] = votes.get(r.label, 0) + 1
        best = max(votes, key=lambda lab: (votes[lab], scores.get(lab, 0.0)))
    else:
        best = max(scores, key=scores.__getitem__)
    return {"label": best, "score": round(float(scores[best]), 6), "scores": {k: round(float(v), 6) for k, v in scores.items()}}


def split_chars(text: str, max_chars: int, overlap: int) -> list[tuple[int, str]]:
    """Windows of ``max_chars`` characters sharing ``overlap`` characters."""
    if len(text) <= max_chars:
        return [(0, text)]
    step = max_chars - overlap
    return [(start, text[start : start + max_chars]) for start in range(0, len(text) - overlap, step)]


def split_text(text: str, budget: int, count_tokens: Callable[[str], int]) -> list[tuple[int, str]]:
    """Split ``text`` into consecutive pieces of at most ``budget`` tokens.

    Cuts at paragraph, then sentence, then word boundaries; returns ``(char offset,
    piece)`` so span offsets can be mapped back. The pieces cover the text exactly.
    """
    if count_tokens(text) <= budget:
        return [(0, text)]
    pieces: list[tuple[int, str]] = []
    start = 0
    n = len(text)
    while start < n:
        lo, hi = start + 1, n
        # the longest prefix that fits: binary search on characters
        best = start + 1
        while lo <= hi:
            mid = (lo + hi) // 2
            if count_tokens(text[start:mid]) <= budget:
                best, lo = mid, mid + 1
            else:
                hi = mid - 1
        end = best
        if end < n:
            window = text[start:end]
            for sep in ("\n\n", "\n", ". ", "! ", "? ", " "):
                cut = window.rfind(sep)
                if cut > len(window) // 3:
                    end = start + cut + len(sep)
                    break
        pieces.append((start, text[start:end]))
        start = end
    return pieces
