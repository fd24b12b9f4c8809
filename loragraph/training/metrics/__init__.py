"""Metric modules for ``evaluate``, one folder per metric, loaded from their local path.

Hub metric names (``evaluate.load("rouge")``) fail offline, so loragraph ships its own
metric scripts and loads them by folder: ``load_metric("classification")`` is
``evaluate.load("<this folder>/classification")``.

- ``classification``: accuracy, macro-F1 and per-label F1 (scikit-learn).
- ``entities``: entity-level precision, recall and F1 by seqeval in ``strict`` mode on
  IOB2 tag sequences: an entity counts only when its type and both boundaries match.
- ``rouge``: ROUGE-1, ROUGE-2 and ROUGE-L F-measures (rouge_score, Porter stemming),
  averaged over examples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["METRICS_DIR", "METRIC_NAMES", "load_metric"]

METRICS_DIR = Path(__file__).resolve().parent
METRIC_NAMES: tuple[str, ...] = ("classification", "entities", "rouge")


def load_metric(name: str) -> Any:
    """Load one of loragraph's metric modules with ``evaluate.load`` from its folder."""
    from loragraph.errors import ConfigError

    if name not in METRIC_NAMES:
        raise ConfigError(f"`metric` must be one of {list(METRIC_NAMES)}, got {name!r}")
    import evaluate

    return evaluate.load(str(METRICS_DIR / name))
