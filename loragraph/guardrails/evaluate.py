"""Measure a guardrail adapter: TPR on flagged rows, FPR on safe rows, overall, per language,
per source and per kind of row (``data.row_kind``: plain customer messages, look-alikes, ...).

A row is *positive* when its label is flagged (default: every label but ``safe``); the
guardrail flags it when the flagged probability (``policy.flagged_score``) is at or above
the threshold. ``choose_threshold`` picks the threshold on a validation split (never the
test split): the highest TPR whose FPR stays within ``max_fpr``, with the largest margin
(see there); ``fpr_on`` limits the FPR that counts to some kinds of safe rows. Extra
``thresholds`` add operating points to the report (one scoring pass for all of them).
``review_threshold`` reports what a pipeline step with that review band does with each row
(``policy.GuardrailSettings.zone``): its policy applies, a human reads it, or it passes.
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
from loragraph.guardrails.policy import GuardrailSettings, effective_threshold, flagged_score

__all__ = [
    "BandOutcomes",
    "GroupRates",
    "GuardrailReport",
    "OperatingPoint",
    "ReviewBand",
    "choose_threshold",
    "evaluate_guardrail",
    "format_report",
    "rates",
    "report_scores",
    "review_band",
    "score_rows",
    "stored_threshold",
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


class BandOutcomes(BaseModel):
    """What a step with a review band does with one group of rows (counts)."""

    rows: int = Field(description="rows in the group")
    flagged: int = Field(description="scored at or above the threshold: the step's policy applies (the sample's `guard_in` refuses)")
    review: int = Field(description="scored in the review band: the run is escalated to a human, nothing is answered automatically")
    passed: int = Field(description="scored below the review threshold: the run goes on and is answered automatically")


class ReviewBand(BaseModel):
    """The outcomes of a step with ``threshold`` and ``review_threshold`` (``--review-threshold``)."""

    threshold: float = Field(description="at or above it the step's policy applies")
    review_threshold: float = Field(description="from it up to the threshold the run goes to a human")
    positives: BandOutcomes = Field(description="the rows whose label is flagged (attacks)")
    negatives: BandOutcomes = Field(description="the `safe` rows")
    per_kind: dict[str, BandOutcomes] = Field(description="per kind of row (`data.row_kind`) and label, e.g. `composed safe`")


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
    review_band: ReviewBand | None = Field(None, description="the outcomes with a review band (`review_threshold`), else None")
    label_accuracy: float = Field(description="share of rows whose predicted label equals the gold label")
    rows: int = Field(description="rows evaluated")
    seconds: float = Field(description="wall time of the classification")


def score_rows(
    classify_batch: ClassifyBatch, texts: Sequence[str], *, flag_labels: Sequence[str] | None = None, batch_size: int = 16
) -> tuple[list[float], list[str]]:
    """Flagged probability and predicted label of every text (in the order of ``texts``).

    Texts are batched by length (``length_batches``), then put back in order.
    """
    from loragraph.adapters.heads import length_batches

    scores: list[float] = [0.0] * len(texts)
    labels: list[str] = [""] * len(texts)
    flags = list(flag_labels) if flag_labels is not None else None
    for idx in length_batches(texts, batch_size):
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


def _outcomes(zones: Sequence[str]) -> BandOutcomes:
    return BandOutcomes(rows=len(zones), flagged=zones.count("flagged"), review=zones.count("review"), passed=zones.count("passed"))


def _check_review(review_threshold: float, threshold: float, source: str) -> None:
    if not 0.0 <= review_threshold < threshold:
        where = f", {source}" if source else ""
        raise ConfigError(
            f"`--review-threshold` must be at least 0 and below the threshold in use ({threshold:.4f}{where}), "
            f"got {review_threshold}: the band between them would be empty"
        )


def review_band(
    rows: Sequence[GuardrailRow], scores: Sequence[float], threshold: float, review_threshold: float,
    *, flag_labels: Sequence[str] | None = None,
) -> ReviewBand:
    """What a step with this threshold and review band does with each row, counted per group."""
    _check_review(review_threshold, threshold, "")
    settings = GuardrailSettings(threshold=threshold, review_threshold=review_threshold)
    zones = [settings.zone(s) for s in scores]
    kinds: dict[str, list[str]] = defaultdict(list)
    for r, z in zip(rows, zones, strict=True):
        kinds[f"{row_kind(r)} {r.label}"].append(z)
    positive = [_positive(r.label, flag_labels) for r in rows]
    return ReviewBand(
        threshold=threshold,
        review_threshold=review_threshold,
        positives=_outcomes([z for z, p in zip(zones, positive, strict=True) if p]),
        negatives=_outcomes([z for z, p in zip(zones, positive, strict=True) if not p]),
        per_kind={k: _outcomes(v) for k, v in sorted(kinds.items())},
    )


def stored_threshold(version: Any) -> tuple[float, str]:
    """The threshold a guardrail version uses on its own (``policy.effective_threshold``: the one
    stored with it, else the default) and where it comes from: ``stored with name@vN`` or ``default``."""
    stored = version.manifest.threshold is not None
    return effective_threshold(None, version), f"stored with {version.ref}" if stored else "default"


def evaluate_guardrail(
    adapter: str,
    data: str | Path,
    *,
    threshold: float | None = None,
    choose_on: str | Path | None = None,
    max_fpr: float = 0.03,
    fpr_on: Sequence[str] | None = None,
    thresholds: Sequence[float] = (),
    review_threshold: float | None = None,
    flag_labels: Sequence[str] | None = None,
    host: Any = None,
    registry: Any = None,
) -> GuardrailReport:
    """Evaluate a guardrail adapter version on ``data`` (see the module doc).

    ``threshold`` fixes the threshold; else ``choose_on`` (a validation file) chooses it
    with ``max_fpr`` (counted on the safe rows of the kinds in ``fpr_on``, default all);
    else the version's stored threshold (``Manifest.threshold``, chosen at training), else
    0.5. ``thresholds`` adds operating points; ``review_threshold`` (below the threshold in
    use) adds the outcomes of a step with that review band. ``host`` reuses a loaded ``AdapterHost``.
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
    else:
        threshold, source = stored_threshold(version)
    if review_threshold is not None:
        _check_review(review_threshold, threshold, source)
    rows = read_rows(data)
    started = time.perf_counter()
    scores, predicted = score_rows(classify_batch, [r.text for r in rows], flag_labels=flag_labels)
    return report_scores(
        version.ref, data, rows, scores, predicted, threshold=threshold, threshold_source=source,
        thresholds=thresholds, review_threshold=review_threshold, flag_labels=flag_labels,
        seconds=time.perf_counter() - started,
    )


def report_scores(
    adapter: str,
    data: str | Path,
    rows: Sequence[GuardrailRow],
    scores: Sequence[float],
    predicted: Sequence[str],
    *,
    threshold: float,
    threshold_source: str,
    thresholds: Sequence[float] = (),
    review_threshold: float | None = None,
    flag_labels: Sequence[str] | None = None,
    seconds: float = 0.0,
) -> GuardrailReport:
    """The report of rows already scored (flagged probability and predicted label per row)."""
    gold = [r.label for r in rows]
    return GuardrailReport(
        adapter=adapter,
        data=str(data),
        threshold=threshold,
        threshold_source=threshold_source,
        overall=rates(scores, gold, threshold, flag_labels=flag_labels),
        per_language=_grouped(rows, scores, threshold, lambda r: r.lang, flag_labels),
        per_source=_grouped(rows, scores, threshold, lambda r: r.source.split("/")[0] if not r.source.startswith("composed") else "composed", flag_labels),
        per_kind=_grouped(rows, scores, threshold, row_kind, flag_labels),
        operating_points=[
            OperatingPoint(threshold=t, overall=rates(scores, gold, t, flag_labels=flag_labels),
                           per_kind=_grouped(rows, scores, t, row_kind, flag_labels))
            for t in sorted(thresholds)
        ],
        review_band=(
            review_band(rows, scores, threshold, review_threshold, flag_labels=flag_labels)
            if review_threshold is not None else None
        ),
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
    band = report.review_band
    if band is not None:
        lines += ["", f"with a review band: policy at >= {band.threshold:.4f}, a human at >= {band.review_threshold:.4f}, "
                      "answered automatically below (share of the group's rows, count)",
                  f"{'group':<22}{'rows':>6}{'policy':>14}{'human':>14}{'answered':>14}"]

        def share(n: int, total: int) -> str:
            return f"{n / total:.3f} ({n})" if total else "  -  "

        def band_line(name: str, o: BandOutcomes) -> str:
            return (f"{name:<22}{o.rows:>6}{share(o.flagged, o.rows):>14}{share(o.review, o.rows):>14}"
                    f"{share(o.passed, o.rows):>14}")

        lines.append(band_line("flagged rows", band.positives))
        lines.append(band_line("safe rows", band.negatives))
        lines += [band_line(f"kind {k}", v) for k, v in band.per_kind.items()]
    return "\n".join(lines)
