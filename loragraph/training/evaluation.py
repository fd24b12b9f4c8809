"""Evaluate adapters: the metric functions trainers share, and ``evaluate_adapter`` for a published version.

Metrics (loragraph's own ``evaluate`` modules in ``loragraph/training/metrics/``):

- classify: ``accuracy``, ``macro_f1`` and ``f1.<label>`` per label;
- tag: entity-level ``precision``, ``recall``, ``f1`` and ``f1.<TYPE>``: exact span matching on
  (type, start, end). Char spans are turned into character-level IOB2 tag sequences and scored
  by seqeval in strict mode, which counts an entity only when its type and both boundaries match;
- generate: ``rouge1``, ``rouge2``, ``rougeL`` F-measures (rouge_score, stemmed, mean over examples).

``evaluate_adapter("intent@v2", data)`` mounts the version on its base through
``AdapterHost`` and runs the data; for generate adapters it also runs the base alone on the
same prompts, so the gain of the adapter is visible (``report["base"]``, ``report["gain"]``).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loragraph.errors import ConfigError

if TYPE_CHECKING:
    from loragraph.guardrails.evaluate import GuardrailReport

__all__ = [
    "char_iob2",
    "evaluate_adapter",
    "format_report",
    "score_classify",
    "score_generate",
    "score_tag",
]


@cache
def _metric(name: str) -> Any:
    from loragraph.training.metrics import load_metric

    return load_metric(name)


def score_classify(predictions: Sequence[str], references: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """``accuracy``, ``macro_f1`` over ``labels`` and ``f1.<label>`` for each label."""
    if len(predictions) != len(references):
        raise ConfigError(f"`predictions` has {len(predictions)} items but `references` has {len(references)}")
    if not references:
        return {}
    result = _metric("classification").compute(predictions=list(predictions), references=list(references), labels=list(labels))
    out = {"accuracy": float(result["accuracy"]), "macro_f1": float(result["macro_f1"])}
    out.update({f"f1.{k}": float(v) for k, v in result["per_label_f1"].items()})
    return out


def char_iob2(text: str, entities: Sequence[Mapping[str, Any]]) -> list[str]:
    """One IOB2 tag per character of ``text`` from char spans (``start`` inclusive, ``end`` exclusive)."""
    tags = ["O"] * len(text)
    for ent in sorted(entities, key=lambda e: (int(e["start"]), int(e["end"]))):
        start, end, etype = int(ent["start"]), min(int(ent["end"]), len(text)), str(ent["type"])
        if end <= start or any(t != "O" for t in tags[start:end]):
            continue  # empty or overlapping an earlier span: cannot be represented, counts as missed
        tags[start] = f"B-{etype}"
        for i in range(start + 1, end):
            tags[i] = f"I-{etype}"
    return tags


def score_tag(
    texts: Sequence[str],
    predictions: Sequence[Sequence[Mapping[str, Any]]],
    references: Sequence[Sequence[Mapping[str, Any]]],
) -> dict[str, float]:
    """Entity-level ``precision``/``recall``/``f1`` (exact type + span) and ``f1.<TYPE>``."""
    if not (len(texts) == len(predictions) == len(references)):
        raise ConfigError(
            f"`texts`, `predictions`, `references` must have one item per text, got {len(texts)}, {len(predictions)}, {len(references)}"
        )
    if not texts:
        return {}
    result = _metric("entities").compute(
        predictions=[char_iob2(t, p) for t, p in zip(texts, predictions, strict=True)],
        references=[char_iob2(t, r) for t, r in zip(texts, references, strict=True)],
    )
    out = {"precision": float(result["precision"]), "recall": float(result["recall"]), "f1": float(result["f1"])}
    out.update({f"f1.{k}": float(v) for k, v in result["per_type_f1"].items()})
    return out


def score_generate(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """``rouge1``, ``rouge2``, ``rougeL`` F-measures, mean over examples."""
    if len(predictions) != len(references):
        raise ConfigError(f"`predictions` has {len(predictions)} items but `references` has {len(references)}")
    if not references:
        return {}
    result = _metric("rouge").compute(predictions=list(predictions), references=list(references))
    return {k: float(v) for k, v in result.items()}


def _span_difference(text: str, spans: Sequence[Mapping[str, Any]], minus: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The spans of ``spans`` that ``minus`` lacks (same type and both offsets), with their text."""
    def key(x: Mapping[str, Any]) -> tuple[str, int, int]:
        return str(x["type"]), int(x["start"]), int(x["end"])

    left = {key(x) for x in spans} - {key(x) for x in minus}
    return [{"type": t, "text": text[a:b], "start": a, "end": b} for t, a, b in sorted(left, key=lambda k: k[1])]


def _guardrail_rates(
    version: Any, data: str | Path, examples: Sequence[Any], results: Sequence[Any], seconds: float
) -> GuardrailReport:
    """A guardrail's TPR/FPR at its stored threshold, from the classifications already made; per
    language and kind of row when ``data`` is a split written by ``loragraph guardrails data``."""
    from loragraph.guardrails.data import GuardrailRow, read_rows
    from loragraph.guardrails.evaluate import report_scores, stored_threshold
    from loragraph.guardrails.policy import flagged_score

    rows = read_rows(data)[: len(examples)]
    if [r.text for r in rows] != [e.text for e in examples]:  # rows that do not line up: no groups
        rows = [GuardrailRow(text=e.text, label=e.label, lang="unknown", source="unknown", group=str(i)) for i, e in enumerate(examples)]
    threshold, source = stored_threshold(version)
    return report_scores(
        version.ref, data, rows, [flagged_score(r)[1] for r in results], [r.label for r in results],
        threshold=threshold, threshold_source=source, seconds=seconds,
    )


def evaluate_adapter(
    ref: str,
    data: str | Path,
    *,
    registry: Any = None,
    host: Any = None,
    max_examples: int | None = None,
    max_new_tokens: int | None = None,
    repetition_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    compare_base: bool = True,
) -> dict[str, Any]:
    """Mount ``ref`` (``intent`` or ``intent@v3``) on its base and score it on the JSONL ``data``.

    Returns ``{"adapter", "kind", "data", "examples", "metrics", "seconds"}``; classify and tag
    add ``"errors"`` (every wrong example with its ``file:line``: gold and predicted label, or the
    missed and spurious spans), classify also ``"confusions"`` (label -> predicted, most common
    first); for a generate adapter with ``compare_base``, ``"base"`` (the base alone on the same prompts)
    and ``"gain"`` (adapter minus base, per metric); both decode with the same
    ``repetition_penalty``/``no_repeat_ngram_size`` (``AdapterHost.generate``). A guardrail (a
    classify adapter with a stored threshold or a `safe` label) adds ``"guardrail"``: its TPR and
    FPR at its stored threshold (``guardrails.evaluate.GuardrailReport``; ``loragraph guardrails
    eval`` chooses thresholds and adds operating points). ``host`` reuses a loaded ``AdapterHost``.
    """
    from loragraph.adapters.registry import Registry
    from loragraph.training.data import load_examples

    registry = registry or Registry()
    version = registry.resolve(ref)
    manifest = version.manifest
    labels = manifest.labels or None
    loaded = load_examples(data, manifest.kind, labels=labels if manifest.kind != "generate" else None, min_per_label=0)
    examples = list(loaded.examples)[:max_examples] if max_examples else list(loaded.examples)
    if host is None:
        from loragraph.adapters.base import BaseSpec, load_base
        from loragraph.adapters.host import AdapterHost

        host = AdapterHost(load_base(BaseSpec(name=manifest.base_name, quantization=manifest.quantization)))
    name = host.mount(version)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "adapter": version.ref,
        "kind": manifest.kind,
        "data": str(data),
        "examples": len(examples),
    }
    if manifest.kind == "classify":
        results = host.classify(name, [e.text for e in examples])
        report["metrics"] = score_classify([r.label for r in results], [e.label for e in examples], manifest.labels)
        report["errors"] = [
            {"where": loaded.where(i), "label": e.label, "predicted": r.label, "score": round(r.score, 4), "text": e.text}
            for i, (e, r) in enumerate(zip(examples, results, strict=True))
            if r.label != e.label
        ]
        pairs = Counter((err["label"], err["predicted"]) for err in report["errors"])
        report["confusions"] = [{"label": g, "predicted": p, "count": n} for (g, p), n in pairs.most_common()]
        if manifest.threshold is not None or "safe" in manifest.labels:  # a guardrail: its rates too
            seconds = time.perf_counter() - started
            report["guardrail"] = _guardrail_rates(version, data, examples, results, seconds).model_dump()
    elif manifest.kind == "tag":
        results = host.tag(name, [e.text for e in examples])
        predicted = [[{"type": x.type, "start": x.start, "end": x.end} for x in ents] for ents in results]
        gold = [[{"type": x.type, "start": x.start, "end": x.end} for x in e.entities] for e in examples]
        report["metrics"] = score_tag([e.text for e in examples], predicted, gold)
        report["errors"] = []
        for i, (e, want, got) in enumerate(zip(examples, gold, predicted, strict=True)):
            missed, spurious = _span_difference(e.text, want, got), _span_difference(e.text, got, want)
            if missed or spurious:
                report["errors"].append({"where": loaded.where(i), "missed": missed, "spurious": spurious, "text": e.text})
    else:
        from loragraph.pipelines.templates import render_prompt

        if not manifest.prompt:
            raise ConfigError(f"generate adapter `{version.ref}` has no `prompt` in its manifest")
        prompts = [render_prompt(manifest.prompt, e.input, where=loaded.where(i)) for i, e in enumerate(examples)]
        targets = [e.target for e in examples]
        tokens = max_new_tokens or int(manifest.hyperparameters.get("max_new_tokens", 96))
        decoding = {"max_new_tokens": tokens, "repetition_penalty": repetition_penalty, "no_repeat_ngram_size": no_repeat_ngram_size}
        outputs = host.generate(name, prompts, system=manifest.system, **decoding)
        report["metrics"] = score_generate([o.text for o in outputs], targets)
        report["samples"] = [{"prompt": p, "target": t, "output": o.text} for p, t, o in list(zip(prompts, targets, outputs, strict=True))[:3]]
        if compare_base:
            base_outputs = host.generate(None, prompts, system=manifest.system, **decoding)
            report["base"] = score_generate([o.text for o in base_outputs], targets)
            report["gain"] = {k: report["metrics"][k] - report["base"][k] for k in report["metrics"]}
            for sample, out in zip(report["samples"], base_outputs, strict=False):
                sample["base_output"] = out.text
    report["seconds"] = round(time.perf_counter() - started, 2)
    return report


def format_report(report: Mapping[str, Any], *, errors: int = 0) -> str:
    """Human-readable lines of an ``evaluate_adapter`` report; ``errors``: show that many mistakes."""
    lines = [f"{report['adapter']} ({report['kind']}) on {report['data']}: {report['examples']} examples, {report['seconds']}s"]
    has_base = "base" in report
    header = f"  {'metric':<28}{'adapter':>10}" + (f"{'base':>10}{'gain':>10}" if has_base else "")
    lines.append(header)
    for key, value in report["metrics"].items():
        row = f"  {key:<28}{value:>10.4f}"
        if has_base:
            row += f"{report['base'][key]:>10.4f}{report['gain'][key]:>+10.4f}"
        lines.append(row)
    if "errors" in report:
        lines.append(f"  {len(report['errors'])} of {report['examples']} examples wrong")
    if report.get("confusions"):
        top = ", ".join(f"{c['label']} -> {c['predicted']} {c['count']}" for c in report["confusions"][:8])
        lines.append(f"  most confused (label -> predicted): {top}")
    for err in report.get("errors", [])[:errors]:
        text = " ".join(str(err["text"]).split())
        text = text if len(text) <= 160 else text[:157] + "..."
        if "label" in err:
            lines.append(f"  {err['where']}: {err['label']} -> {err['predicted']} ({err['score']:.2f}): {text}")
        else:
            missed = "; ".join(f"{x['type']} {x['text']!r}" for x in err["missed"]) or "-"
            spurious = "; ".join(f"{x['type']} {x['text']!r}" for x in err["spurious"]) or "-"
            lines.append(f"  {err['where']}: missed {missed} | spurious {spurious}")
    if "guardrail" in report:
        from loragraph.guardrails.evaluate import GuardrailReport
        from loragraph.guardrails.evaluate import format_report as format_guardrail

        lines += ["", format_guardrail(GuardrailReport.model_validate(report["guardrail"]))]
    return "\n".join(lines)
