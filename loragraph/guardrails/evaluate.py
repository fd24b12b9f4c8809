"""Measure a guardrail adapter: TPR on flagged rows, FPR on safe rows, overall, per language,
per source and per kind of row (``data.row_kind``: plain customer messages, look-alikes, ...).

A row is *positive* when its label is flagged (default: every label but ``safe``); the
guardrail flags it when the flagged probability (``policy.flagged_score``) is at or above
the threshold. ``choose_threshold`` picks the threshold on a validation split (never the
test split): the highest TPR whose FPR stays within ``max_fpr``, with the largest margin
(see there); ``fpr_on`` limits the FPR that counts to some kinds of safe rows. Extra
``thresholds`` add operating points to the report (one scoring pass for all of them).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from loragraph.errors import ConfigError
from loragraph.guardrails.data import ROW_KINDS, GuardrailRow, read_rows, row_kind
from loragraph.guardrails.policy import DEFAULT_THRESHOLD, flagged_score

__all__ = [
    "GroupRates",
    "GuardrailReport",
    "OperatingPoint",
    "choose_threshold",
    "evaluate_guardrail",
    "format_report",
    "rates",
    "score_rows",
]

ClassifyBatch = Callable[[Sequence[str]], Sequence[Any]]


class GroupRates(BaseModel):
    """Detection rates of one group of rows (all rows, one language, one source)."""

    positives: int = Field(description="rows whose label is flagged (attacks, toxic, leaks)")
    negatives: int = Field(description="rows labelled `safe`")
    true_positives: int = Field(description="positives the guardrail flagged")
    false_positives: int = Field(description="safe rows the guardrail flagged")
    tpr: float | None = Field(description="true_positives / positives (None without positives)")
    fpr: float | None = Field(description="false_positives / negatives (None without negatives)")


class OperatingPoint(BaseModel):
    """The rates at one more threshold (``--thresholds``)."""

    threshold: float = Field(description="flagged probability at or above which a row is flagged")
    overall: GroupRates = Field(description="rates over every row")
    per_kind: dict[str, GroupRates] = Field(description="rates per kind of row (`data.row_kind`)")


class GuardrailReport(BaseModel):
    """The evaluation of one guardrail adapter on one data file."""

    adapter: str = Field(description="`name@vN` of the evaluated version")
    data: str = Field(description="the evaluated JSONL file")
    threshold: float = Field(description="flagged probability at or above which a row is flagged")
    threshold_source: str = Field(description="`given`, `stored with name@vN`, `default` or `chosen on <file> (max_fpr=...)`")
    overall: GroupRates = Field(description="rates over every row")
    per_language: dict[str, GroupRates] = Field(description="rates per language of the rows")
    per_source: dict[str, GroupRates] = Field(description="rates per source of the rows")
    per_kind: dict[str, GroupRates] = Field(description="rates per kind of row (`data.row_kind`: customer, look-alike, document, composed, direct, other)")
    operating_points: list[OperatingPoint] = Field(default_factory=list, description="the rates at the extra `thresholds`")
    label_accuracy: float = Field(description="share of rows whose predicted label equals the gold label")
    rows: int = Field(description="rows evaluated")
    seconds: float = Field(description="wall time of the classification")


def score_rows(
    classify_batch: ClassifyBatch, texts: Sequence[str], *, flag_labels: Sequence[str] | None = None, batch_size: int = 16
) -> tuple[list[float], list[str]]:
    """Flagged probability and predicted label of every text (in the order of ``texts``).

    Texts are batched by length (less padding, same results), then put back in order.
    """
    scores: list[float] = [0.0] * len(texts)
    labels: list[str] = [""] * len(texts)
    flags = list(flag_labels) if flag_labels is not None else None
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        for i, c in zip(idx, classify_batch([texts[i] for i in idx]), strict=True):
            scores[i] = flagged_score(c, flags)[1]
            labels[i] = str(c.label)
    return scores, labels


def _positive(label: str, flag_labels: Sequence[str] | None) -> bool:
    return label in flag_labels if flag_labels is not None else label != "safe"


def rates(
    scores: Sequence[float], gold: Sequence[str], threshold: float, *, flag_labels: Sequence[str] | None = None
) -> GroupRates:
    """TPR/FPR of ``scores`` against gold labels at ``threshold``."""
    pos = neg = tp = fp = 0
    for s, g in zip(scores, gold, strict=True):
        flagged = s >= threshold
        if _positive(g, flag_labels):
            pos += 1
            tp += flagged
        else:
            neg += 1
            fp += flagged
    return GroupRates(
        positives=pos, negatives=neg, true_positives=tp, false_positives=fp,
        tpr=tp / pos if pos else None, fpr=fp / neg if neg else None,
    )


def choose_threshold(
    scores: Sequence[float], gold: Sequence[str], *, max_fpr: float = 0.03, flag_labels: Sequence[str] | None = None
) -> float:
    """The threshold with the highest TPR on these rows whose FPR is at most ``max_fpr``.

    ``floor(max_fpr * negatives)`` safe rows may score above it, so it must sit above the
    next-highest safe score (``cut``). Every threshold between ``cut`` and the lowest flagged
    score above ``cut`` gives that same TPR (and no more false positives): the one returned
    is halfway between them, the largest margin on both sides. (The lowest one, just above
    ``cut``, would flag nearly everything when the classes separate cleanly.)
    """
    if not 0.0 <= max_fpr < 1.0:
        raise ConfigError(f"`max_fpr` must be in [0, 1), got {max_fpr}")
    negatives = sorted((s for s, g in zip(scores, gold, strict=True) if not _positive(g, flag_labels)), reverse=True)
    if not negatives:
        raise ConfigError("choosing a threshold needs `safe` rows in the validation data")
    allowed = math.floor(max_fpr * len(negatives) + 1e-9)
    if allowed >= len(negatives):
        return 0.0
    cut = negatives[allowed]
    flagged = [s for s, g in zip(scores, gold, strict=True) if _positive(g, flag_labels) and s > cut]
    if not flagged:
        return float(min(1.0, math.nextafter(cut, math.inf)))
    middle = (cut + min(flagged)) / 2
    return float(min(1.0, middle if middle > cut else math.nextafter(cut, math.inf)))


def _grouped(
    rows: Sequence[GuardrailRow], scores: Sequence[float], threshold: float, key: Callable[[GuardrailRow], str],
    flag_labels: Sequence[str] | None,
) -> dict[str, GroupRates]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        groups[key(r)].append(i)
    return {
        k: rates([scores[i] for i in idx], [rows[i].label for i in idx], threshold, flag_labels=flag_labels)
        for k, idx in sorted(groups.items())
    }


def evaluate_guardrail(
    adapter: str,
    data: str | Path,
    *,
    threshold: float | None = None,
    choose_on: str | Path | None = None,
    max_fpr: float = 0.03,
    fpr_on: Sequence[str] | None = None,
    thresholds: Sequence[float] = (),
    flag_labels: Sequence[str] | None = None,
    host: Any = None,
    registry: Any = None,
) -> GuardrailReport:
    """Evaluate a guardrail adapter version on ``data`` (see the module doc).

    ``threshold`` fixes the threshold; else ``choose_on`` (a validation file) chooses it
    with ``max_fpr`` (counted on the safe rows of the kinds in ``fpr_on``, default all);
    else the version's stored threshold (``Manifest.threshold``, chosen at training), else
    0.5. ``thresholds`` adds operating points. ``host`` reuses a loaded ``AdapterHost``.
    """
    import time

    from loragraph.adapters.registry import Registry

    if threshold is not None and choose_on is not None:
        raise ConfigError("give either `--threshold` or `--choose-on`, not both")
    if fpr_on is not None:
        unknown = sorted(set(fpr_on) - set(ROW_KINDS))
        if unknown or not fpr_on:
            raise ConfigError(f"`--fpr-on` takes kinds of rows among {', '.join(ROW_KINDS)}; got {', '.join(unknown) or 'none'}")
        if choose_on is None:
            raise ConfigError("`--fpr-on` needs `--choose-on`: it says which safe rows count when choosing the threshold")
    for t in thresholds:
        if not 0.0 <= t <= 1.0:
            raise ConfigError(f"`--thresholds` must be between 0 and 1, got {t}")
    registry = registry or Registry()
    version = registry.resolve(adapter)
    if version.manifest.kind != "classify":
        raise ConfigError(f"`{version.ref}` is a `{version.manifest.kind}` adapter; a guardrail is a classify adapter")
    if host is None:
        from loragraph.adapters.base import BaseSpec, load_base
        from loragraph.adapters.host import AdapterHost

        manifest = version.manifest
        host = AdapterHost(load_base(BaseSpec(name=manifest.base_name, quantization=manifest.quantization)), registry)

    def classify_batch(texts: Sequence[str]) -> Sequence[Any]:
        return host.classify(version, list(texts))

    source = "default"
    if threshold is not None:
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"`--threshold` must be between 0 and 1, got {threshold}")
        source = "given"
    elif choose_on is not None:
        val_rows = read_rows(choose_on)
        if fpr_on is not None:  # every flagged row, and the safe rows of these kinds
            val_rows = [r for r in val_rows if _positive(r.label, flag_labels) or row_kind(r) in fpr_on]
        val_scores, _ = score_rows(classify_batch, [r.text for r in val_rows], flag_labels=flag_labels)
        threshold = choose_threshold(val_scores, [r.label for r in val_rows], max_fpr=max_fpr, flag_labels=flag_labels)
        source = f"chosen on {choose_on} (max_fpr={max_fpr}" + (f" on {', '.join(fpr_on)} rows)" if fpr_on is not None else ")")
    elif version.manifest.threshold is not None:
        threshold = version.manifest.threshold
        source = f"stored with {version.ref}"
    else:
        threshold = DEFAULT_THRESHOLD
    rows = read_rows(data)
    started = time.perf_counter()
    scores, predicted = score_rows(classify_batch, [r.text for r in rows], flag_labels=flag_labels)
    seconds = time.perf_counter() - started
    gold = [r.label for r in rows]
    return GuardrailReport(
        adapter=version.ref,
        data=str(data),
        threshold=threshold,
        threshold_source=source,
        overall=rates(scores, gold, threshold, flag_labels=flag_labels),
        per_language=_grouped(rows, scores, threshold, lambda r: r.lang, flag_labels),
        per_source=_grouped(rows, scores, threshold, lambda r: r.source.split("/")[0] if not r.source.startswith("composed") else "composed", flag_labels),
        per_kind=_grouped(rows, scores, threshold, row_kind, flag_labels),
        operating_points=[
            OperatingPoint(threshold=t, overall=rates(scores, gold, t, flag_labels=flag_labels),
                           per_kind=_grouped(rows, scores, t, row_kind, flag_labels))
            for t in sorted(thresholds)
        ],
        label_accuracy=sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(rows) if rows else 0.0,
        rows=len(rows),
        seconds=round(seconds, 2),
    )


def _fmt(x: float | None) -> str:
    return "  -  " if x is None else f"{x:.3f}"


def format_report(report: GuardrailReport) -> str:
    """A plain-text table of a report."""
    lines = [
        f"{report.adapter} on {report.data} ({report.rows} rows, {report.seconds:.1f}s)",
        f"threshold {report.threshold:.4f} ({report.threshold_source}); label accuracy {report.label_accuracy:.3f}",
        f"{'group':<22}{'TPR':>7}{'FPR':>7}{'pos':>6}{'neg':>6}{'TP':>6}{'FP':>6}",
    ]

    def line(name: str, r: GroupRates) -> str:
        return f"{name:<22}{_fmt(r.tpr):>7}{_fmt(r.fpr):>7}{r.positives:>6}{r.negatives:>6}{r.true_positives:>6}{r.false_positives:>6}"

    lines.append(line("overall", report.overall))
    lines += [line(f"lang {k}", v) for k, v in report.per_language.items()]
    lines += [line(f"source {k}", v) for k, v in report.per_source.items()]
    lines += [line(f"kind {k}", v) for k, v in report.per_kind.items()]
    if report.operating_points:
        kinds = list(report.per_kind)
        lines += ["", "other thresholds: TPR of flagged rows, FPR per kind of safe row",
                  f"{'threshold':>10}{'TPR':>7}{'FPR':>7}" + "".join(f"{k:>12}" for k in kinds)]
        for p in report.operating_points:
            fprs = "".join(f"{_fmt(p.per_kind[k].fpr) if k in p.per_kind else '  -  ':>12}" for k in kinds)
            lines.append(f"{p.threshold:>10.4f}{_fmt(p.overall.tpr):>7}{_fmt(p.overall.fpr):>7}{fprs}")
    return "\n".join(lines)
